"""The "paged" backend: a :class:`~zerokv.cache.PagedArena` addressed by (env, node id).

Nodes are named by the search's node ids, so no latent is hashed inside a search (no host
synchronisation per simulation); the roots keep a content key, verified on the next real step.
Assembly is one index gather per layer through the node table into a contiguous buffer; the new
tokens attend to that gathered past and to themselves (two segments, one softmax), so the past is
never copied a second time; storing a child writes its two tokens and one table row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from zerokv.cache.paged import NO_TOKEN, ROOT_NODE, PagedArena
from zerokv.model.config import WorldModelConfig
from zerokv.model.context import CacheWork, ContextBatch, NodeKey, make_keys
from zerokv.model.transformer import BatchContext, Transformer, window_mask

EMPTY = (-1, -1)  # the past of an env starting an episode


class PagedContext:
    """A gathered past ``(B, W, H, hd)`` per layer plus dense buffers for the new tokens."""

    def __init__(self, past_k, past_v, past_pos, past_valid, handles, cfg: WorldModelConfig, new_tokens: int) -> None:
        b, device = past_pos.shape[0], past_pos.device
        self.past_k, self.past_v, self.past_pos, self.past_valid = past_k, past_v, past_pos, past_valid
        self.handles = handles
        self.window = cfg.context_length
        shape = (b, cfg.num_heads, new_tokens, cfg.head_dim)
        self.new_k = [torch.empty(shape, device=device) for _ in range(cfg.num_layers)]
        self.new_v = [torch.empty(shape, device=device) for _ in range(cfg.num_layers)]
        self.new_pos = torch.zeros(b, new_tokens, dtype=torch.long, device=device)
        self.fill = 0
        self.scale = cfg.head_dim ** -0.5
        self._mask = None

    def next_positions(self) -> torch.Tensor:
        return self.past_pos[:, -1] + 1 + self.fill

    def begin(self, positions: torch.Tensor) -> None:
        f, t = self.fill, positions.shape[1]
        self.new_pos[:, f : f + t] = positions
        new_valid = torch.ones_like(self.new_pos[:, : f + t], dtype=torch.bool)
        self._mask = torch.cat([
            window_mask(positions, self.past_pos, self.past_valid, self.window),
            window_mask(positions, self.new_pos[:, : f + t], new_valid, self.window),
        ], dim=-1)  # (B, 1, t, W + f + t)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        f, t = self.fill, k.shape[2]
        self.new_k[layer][:, :, f : f + t] = k
        self.new_v[layer][:, :, f : f + t] = v
        kp, vp = self.past_k[layer].transpose(1, 2), self.past_v[layer].transpose(1, 2)  # (B, H, W, hd) views
        kn, vn = self.new_k[layer][:, :, : f + t], self.new_v[layer][:, :, : f + t]
        scores = torch.cat([q @ kp.transpose(-1, -2), q @ kn.transpose(-1, -2)], dim=-1) * self.scale
        probs = torch.softmax(scores.masked_fill(~self._mask, float("-inf")), dim=-1)
        w = kp.shape[2]
        return probs[..., :w] @ vp + probs[..., w:] @ vn

    def end(self, t: int) -> None:
        self.fill += t
        self._mask = None


class PagedBackend:
    name = "paged"

    def __init__(self, cfg: WorldModelConfig, transformer: Transformer, work: CacheWork, key_hash) -> None:
        self.cfg, self.transformer, self.work, self.key_hash = cfg, transformer, work, key_hash
        self.window = cfg.context_length - 1
        self.store = PagedArena(cfg.env_num, cfg.num_simulations, self.window, cfg.num_layers,
                                cfg.num_heads, cfg.head_dim, cfg.device)
        self.token_bytes = 2 * cfg.num_layers * cfg.embed_dim * 4
        self._offsets = torch.arange(self.window, device=cfg.device)
        self._gather_k: list[torch.Tensor] = []
        self._gather_v: list[torch.Tensor] = []

    # ------------------------------------------------------------------------ keys
    def root_keys(self, env_ids: Sequence[int], latents: torch.Tensor, epoch: int) -> list[NodeKey]:
        return make_keys(latents, env_ids, epoch, self.key_hash, self.work)  # once per search

    def node_keys(self, env_ids: Sequence[int], latents: torch.Tensor, node_ids, epoch: int) -> list[tuple[int, int]]:
        if node_ids is None:
            raise ValueError("the paged backend addresses nodes by id: pass node ids from the search "
                             "(recurrent_inference(..., parent_ids=, child_ids=), as zerokv.plan does)")
        return [(int(e), int(n)) for e, n in zip(env_ids, np.asarray(node_ids).tolist(), strict=True)]

    # ---------------------------------------------------------------------- lookup
    def lookup(self, env_ids: Sequence[int], keys) -> list[tuple[int, int] | None]:
        arena, out = self.store, []
        for e, key in zip(env_ids, keys, strict=True):
            if key is None:
                out.append(None)
                continue
            if isinstance(key, NodeKey):  # a previous root: verified by content
                found = arena.root_keys[e] == key and arena.is_live(e, ROOT_NODE)
                handle = (e, ROOT_NODE)
            else:
                handle = key
                found = arena.is_live(*key)
            (arena.stats.record_hit if found else arena.stats.record_miss)()
            out.append(handle if found else None)
        return out

    def empty(self) -> tuple[int, int]:
        return EMPTY

    def sizes(self, pasts) -> list[int]:
        return [0 if p == EMPTY else int(self.store.length[p]) for p in pasts]

    def generate(self, latents: torch.Tensor, env_ids, keys) -> list[tuple[int, int]]:
        """A context-free one-token past from each latent, written into the missing node's own slot."""
        ctx = BatchContext.empty(self.cfg, latents.shape[0], 1, latents.device)
        ContextBatch(self.transformer, ctx).forward(latents.unsqueeze(1))
        arena, handles = self.store, []
        for row, (e, node) in enumerate(keys):
            r = arena.root_row_range(e)[-1] if node == ROOT_NODE else arena.node_row(e, node)
            for layer in range(self.cfg.num_layers):
                arena.k[layer][r] = ctx.k[layer][row, :, 0]
                arena.v[layer][r] = ctx.v[layer][row, :, 0]
            arena.table[e, node] = NO_TOKEN
            arena.table[e, node, -1] = r
            arena.last_position[e, node] = 0
            if node == ROOT_NODE:
                arena.start_root(e, arena.root_keys[e], 1)
            else:
                arena.add_node(e, node, 1)
            handles.append((e, node))
        return handles

    # -------------------------------------------------------------------- assembly
    def assemble(self, pasts: list[tuple[int, int]], new_tokens: int) -> ContextBatch:
        """One gather per layer: each row's visible past through the node table."""
        arena, b, w = self.store, len(pasts), self.window
        envs = torch.as_tensor([max(e, 0) for e, _ in pasts], device=self._offsets.device)
        nodes = torch.as_tensor([max(n, 0) for _, n in pasts], device=self._offsets.device)
        empty = torch.as_tensor([p == EMPTY for p in pasts], device=self._offsets.device)
        idx = arena.table[envs, nodes].masked_fill(empty.unsqueeze(1), NO_TOKEN)  # (B, W)
        last = arena.last_position[envs, nodes].masked_fill(empty, -1)
        positions = last.unsqueeze(1) - (w - 1) + self._offsets  # contiguous: the window is a path suffix
        valid = idx != NO_TOKEN
        flat = idx.clamp(min=0).flatten()
        if not self._gather_k or self._gather_k[0].shape[0] < b * w:
            shape = (b * w, *arena.k[0].shape[1:])
            self._gather_k = [torch.empty(shape, device=flat.device) for _ in arena.k]
            self._gather_v = [torch.empty(shape, device=flat.device) for _ in arena.v]
        past_k, past_v = [], []
        for layer in range(self.cfg.num_layers):
            gk, gv = self._gather_k[layer][: b * w], self._gather_v[layer][: b * w]
            torch.index_select(arena.k[layer], 0, flat, out=gk)
            torch.index_select(arena.v[layer], 0, flat, out=gv)
            past_k.append(gk.view(b, w, *gk.shape[1:]))
            past_v.append(gv.view(b, w, *gv.shape[1:]))
        self.work.bytes_copied += self.token_bytes * b * w
        ctx = PagedContext(past_k, past_v, positions, valid, list(pasts), self.cfg, new_tokens)
        return ContextBatch(self.transformer, ctx)

    # ---------------------------------------------------------------------- store
    def store_batch(self, batch: ContextBatch, env_ids: Sequence[int], keys, root: bool) -> None:
        ctx: PagedContext = batch.context
        arena, w, t = self.store, self.window, ctx.fill
        dev = self._offsets.device
        env_t = torch.as_tensor(list(env_ids), device=dev)
        last_pos = ctx.new_pos[:, t - 1]
        if root:
            # The root window: the last W tokens of (gathered past, new tokens), written once.
            valid = torch.cat([ctx.past_valid, torch.ones_like(ctx.new_pos[:, :t], dtype=torch.bool)], 1)[:, -w:]
            rows = env_t.unsqueeze(1) * w + self._offsets  # (B, W)
            for layer in range(self.cfg.num_layers):
                for src, dst, new in ((ctx.past_k, arena.k, ctx.new_k), (ctx.past_v, arena.v, ctx.new_v)):
                    window = torch.cat([src[layer], new[layer][:, :, :t].transpose(1, 2)], 1)[:, -w:]
                    dst[layer].index_copy_(0, rows.flatten(), window.flatten(0, 1))
            arena.table[env_t, ROOT_NODE] = rows.masked_fill(~valid, NO_TOKEN)
            arena.last_position[env_t, ROOT_NODE] = last_pos
            self.work.bytes_copied += self.token_bytes * w * len(env_ids)
            for env_id, past, key in zip(env_ids, ctx.handles, keys, strict=True):
                known = 0 if past == EMPTY else int(arena.length[past])
                arena.start_root(int(env_id), key, min(w, known + t))
            return
        if t != 2:
            raise ValueError(f"a search node adds exactly 2 tokens, got {t}")
        for _, node in keys:
            arena.check_node(node)
        child = torch.as_tensor([arena.node_row(e, n) for e, n in keys], device=dev)
        rows2 = torch.stack([child, child + 1], 1)  # (B, 2): action and latent token rows
        for layer in range(self.cfg.num_layers):
            arena.k[layer].index_copy_(0, rows2.flatten(), ctx.new_k[layer].transpose(1, 2).flatten(0, 1))
            arena.v[layer].index_copy_(0, rows2.flatten(), ctx.new_v[layer].transpose(1, 2).flatten(0, 1))
        p_env = torch.as_tensor([e for e, _ in ctx.handles], device=dev)
        p_node = torch.as_tensor([n for _, n in ctx.handles], device=dev)
        c_node = torch.as_tensor([n for _, n in keys], device=dev)
        arena.table[env_t, c_node] = torch.cat([arena.table[p_env, p_node], rows2], 1)[:, -w:]
        arena.last_position[env_t, c_node] = last_pos
        self.work.bytes_copied += self.token_bytes * 2 * len(keys)
        for (pe, pn), (e, n) in zip(ctx.handles, keys, strict=True):
            arena.add_node(e, n, min(w, int(arena.length[pe, pn]) + 2))

    def clear(self) -> None:
        self.store.clear()
