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
import torch.nn.functional as F

from zerokv.cache.paged import NO_TOKEN, ROOT_NODE, PagedArena
from zerokv.model.config import WorldModelConfig
from zerokv.model.context import CacheWork, ContextBatch, NodeKey, make_keys
from zerokv.model.transformer import BatchContext, Transformer, window_mask

EMPTY = (-1, -1)  # the past of an env starting an episode


class PagedContext:
    """A slot-major buffer ``(W + T, B, L, 2, H, hd)``: W gathered past slots, then T new ones.

    Slot-major because then the past ``[:W]`` is one contiguous block that ``index_select``
    fills in place (``out=``) — the past is read once and copied nowhere else — and attention
    reads the buffer through a ``(B, H, S, hd)`` view at no extra cost.
    """

    def __init__(self, kv, positions, valid, handles, past_slots: int, window: int) -> None:
        self.kv = kv  # (W + T, B, L, 2, H, hd)
        self.positions, self.valid = positions, valid  # (B, W + T)
        self.handles = handles
        self.past_slots = past_slots  # W
        self.window = window  # attention window (context_length)
        self.fill = 0
        self._mask = None

    def next_positions(self) -> torch.Tensor:
        return self.positions[:, self.past_slots - 1] + 1 + self.fill

    def begin(self, positions: torch.Tensor) -> None:
        s0, t = self.past_slots + self.fill, positions.shape[1]
        self.positions[:, s0 : s0 + t] = positions
        self.valid[:, s0 : s0 + t] = True
        self._mask = window_mask(positions, self.positions[:, : s0 + t], self.valid[:, : s0 + t], self.window)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        s0, t = self.past_slots + self.fill, k.shape[2]
        kb, vb = self.kv[:, :, layer, 0], self.kv[:, :, layer, 1]  # (S, B, H, hd) views
        kb[s0 : s0 + t] = k.permute(2, 0, 1, 3)  # (B, H, t, hd) → (t, B, H, hd)
        vb[s0 : s0 + t] = v.permute(2, 0, 1, 3)
        keys, values = kb[: s0 + t].permute(1, 2, 0, 3), vb[: s0 + t].permute(1, 2, 0, 3)  # (B, H, S, hd) views
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=self._mask)

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
        self._bufs: dict[tuple[int, int], torch.Tensor] = {}

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
        arena = self.store
        if keys and all(isinstance(k, tuple) for k in keys):  # search nodes: one vectorised check
            pairs = np.array(keys, np.int64)
            live = arena.node_generation[pairs[:, 0], pairs[:, 1]] == arena.generation[pairs[:, 0]]
            hits = int(live.sum())
            arena.stats.hits += hits
            arena.stats.misses += len(keys) - hits
            return [k if ok else None for k, ok in zip(keys, live.tolist(), strict=True)]
        out = []
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
                arena.kv[r, layer, 0] = ctx.k[layer][row, :, 0]
                arena.kv[r, layer, 1] = ctx.v[layer][row, :, 0]
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
        """One gather per layer: each row's visible past through the node table, in place."""
        arena, b, w = self.store, len(pasts), self.window
        dev = self._offsets.device
        handles = torch.as_tensor(pasts, device=dev)  # (B, 2): env, node; EMPTY = (-1, -1)
        envs, nodes = handles[:, 0].clamp(min=0), handles[:, 1].clamp(min=0)
        idx = arena.table[envs, nodes]  # (B, W)
        last = arena.last_position[envs, nodes]
        if EMPTY in pasts:
            empty = handles[:, 0] < 0
            idx = idx.masked_fill(empty.unsqueeze(1), NO_TOKEN)
            last = last.masked_fill(empty, -1)
        positions = torch.zeros(b, w + new_tokens, dtype=torch.long, device=dev)
        positions[:, :w] = last.unsqueeze(1) - (w - 1) + self._offsets  # the window is a path suffix
        valid = torch.zeros(b, w + new_tokens, dtype=torch.bool, device=dev)
        valid[:, :w] = idx != NO_TOKEN
        flat = idx.t().clamp(min=0).flatten()  # slot-major: slot j of every row, then slot j+1
        buf = self._buffer(b, new_tokens)
        torch.index_select(arena.kv, 0, flat, out=buf[:w].view(w * b, *arena.kv.shape[1:]))  # every layer at once
        self.work.bytes_copied += self.token_bytes * b * w
        ctx = PagedContext(buf, positions, valid, list(pasts), w, self.cfg.context_length)
        return ContextBatch(self.transformer, ctx)

    def _buffer(self, b: int, new_tokens: int) -> torch.Tensor:
        """A preallocated slot-major buffer per (batch, new tokens) shape, reused across calls."""
        key = (b, new_tokens)
        if key not in self._bufs:
            c = self.cfg
            shape = (self.window + new_tokens, b, c.num_layers, 2, c.num_heads, c.head_dim)
            self._bufs[key] = torch.zeros(shape, device=c.device)
        return self._bufs[key]

    # ---------------------------------------------------------------------- store
    def store_batch(self, batch: ContextBatch, env_ids: Sequence[int], keys, root: bool) -> None:
        """Roots: rewrite the env's root window. Children: write the two new tokens and a table row.

        ``work.bytes_copied`` counts bytes of *existing* K/V moved; a new token's single write
        into its own storage is not a copy (every backend must write it once).
        """
        ctx: PagedContext = batch.context
        arena, w, t = self.store, self.window, ctx.fill
        dev = self._offsets.device
        env_t = torch.as_tensor(list(env_ids), device=dev)
        last_pos = ctx.positions[:, w + t - 1]
        if root:
            # The root window: the last W slots of (gathered past, new tokens), written once.
            rows = env_t.unsqueeze(1) * w + self._offsets  # (B, W)
            slots = rows.t().flatten()  # slot-major, like the buffers
            arena.kv.index_copy_(0, slots, ctx.kv[t : w + t].flatten(0, 1))
            arena.table[env_t, ROOT_NODE] = rows.masked_fill(~ctx.valid[:, t : w + t], NO_TOKEN)
            arena.last_position[env_t, ROOT_NODE] = last_pos
            self.work.bytes_copied += self.token_bytes * (w - t) * len(env_ids)
            for env_id, past, key in zip(env_ids, ctx.handles, keys, strict=True):
                known = 0 if past == EMPTY else int(arena.length[past])
                arena.start_root(int(env_id), key, min(w, known + t))
            return
        if t != 2:
            raise ValueError(f"a search node adds exactly 2 tokens, got {t}")
        e_np = np.fromiter((e for e, _ in keys), np.int64, len(keys))
        c_np = np.fromiter((n for _, n in keys), np.int64, len(keys))
        if (c_np < 1).any() or (c_np > arena.num_simulations).any():
            bad = int(c_np[(c_np < 1) | (c_np > arena.num_simulations)][0])
            arena.check_node(bad)
        first = torch.as_tensor(arena.root_rows + 2 * (e_np * arena.num_simulations + c_np - 1), device=dev)
        rows2 = torch.stack([first, first + 1])  # (2, B): action rows, then latent rows (slot-major)
        arena.kv.index_copy_(0, rows2.flatten(), ctx.kv[w : w + 2].flatten(0, 1))
        p_np = np.array(ctx.handles, np.int64).reshape(-1, 2)
        c_t = torch.as_tensor(c_np, device=dev)
        parent_rows = arena.table[torch.as_tensor(p_np[:, 0], device=dev), torch.as_tensor(p_np[:, 1], device=dev)]
        arena.table[env_t, c_t] = torch.cat([parent_rows, rows2.t()], 1)[:, -w:]
        arena.last_position[env_t, c_t] = last_pos
        arena.add_nodes(e_np, c_np, np.minimum(w, arena.length[p_np[:, 0], p_np[:, 1]] + 2))

    def clear(self) -> None:
        self.store.clear()
