"""The "paged" backend: a thin adapter over :class:`~zerokv.cache.PagedArena`, nodes addressed by id.

Nodes are named by the search's node ids (:class:`NodeRef`), so no latent is hashed inside a
search (no host synchronisation per simulation); the roots keep a content key, verified on the
next real step. Assembly is the arena's one gather into a head-major buffer (every layer and head
at once, the new tokens' slots included); attention reads each layer's keys and values there in
place, so the past is never copied a second time; storing a child writes its two tokens and one
table row. The arena does every write; this module only translates batches to its operations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from zerokv.cache.paged import ROOT_NODE, Gathered, PagedArena
from zerokv.cache.protocol import RootRows
from zerokv.model.backends.keys import EMPTY_REF, NodeIdKeys, NodeRef
from zerokv.model.config import WorldModelConfig
from zerokv.model.context import CacheWork, NodeKey
from zerokv.model.transformer import BatchContext, TokenRunner, Transformer, attention, window_mask


class PagedContext(TokenRunner):
    """A batch over a gathered head-major buffer ``(L, 2, H, B, W + T, hd)``: per row, W past
    slots, then T new.

    Head-major because attention then reads each layer's keys and values as a ``(H·B, S, hd)``
    batch of contiguous matrices — no copy before its two matmuls (the slot-major buffer this
    replaced made ``matmul`` clone every layer's keys and values first; docs/benchmarks.md
    gives the timings) — and the arena fills the whole buffer with one ``index_select``.
    """

    def __init__(self, transformer: Transformer, gathered: Gathered, pasts: np.ndarray, window: int) -> None:
        self.transformer = transformer
        self.kv = gathered.kv  # (L, 2, H, B, W + T, hd)
        self.positions, self.valid = gathered.positions, gathered.valid  # (B, W + T)
        self.past_last, self.past_lengths = gathered.last, gathered.lengths  # (B,) host
        self.pasts = pasts  # (B, 2) host: each row's past (env, node); env -1: none
        self.past_slots = window - 1  # W
        self.window = window  # attention window (context_length)
        self.fill = 0
        self._mask = None

    def next_positions(self) -> torch.Tensor:
        return self.positions[:, self.past_slots - 1] + 1 + self.fill

    def begin(self, positions: torch.Tensor) -> None:
        s0, t = self.past_slots + self.fill, positions.shape[1]
        self.positions[:, s0 : s0 + t] = positions
        self.valid[:, s0 : s0 + t] = True
        mask = window_mask(positions, self.positions[:, : s0 + t], self.valid[:, : s0 + t], self.window)
        self._mask = mask.transpose(0, 1)  # (1, B, t, S): broadcast over heads, like the buffer

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        s0, t = self.past_slots + self.fill, k.shape[2]
        kb, vb = self.kv[layer]  # each (H, B, S, hd)
        kb[:, :, s0 : s0 + t] = k.transpose(0, 1)  # (B, H, t, hd) → (H, B, t, hd)
        vb[:, :, s0 : s0 + t] = v.transpose(0, 1)
        out = attention(q.transpose(0, 1), kb[:, :, : s0 + t], vb[:, :, : s0 + t], self._mask)
        return out.transpose(0, 1)  # (B, H, t, hd)

    def end(self, t: int) -> None:
        self.fill += t
        self._mask = None


class PagedBackend:
    """Pasts are :class:`NodeRef` into the arena; roots keyed by content, search nodes by id."""

    name = "paged"

    def __init__(self, cfg: WorldModelConfig, transformer: Transformer, work: CacheWork, key_hash) -> None:
        self.cfg, self.transformer, self.work = cfg, transformer, work
        self.keys = NodeIdKeys(key_hash, work)
        self.window = cfg.context_length - 1
        self.store = PagedArena(cfg.env_num, cfg.num_simulations, self.window, cfg.num_layers,
                                cfg.num_heads, cfg.head_dim, cfg.device, cfg.torch_dtype, cfg.kv_storage)
        self.token_bytes = 2 * cfg.num_layers * cfg.embed_dim * cfg.torch_dtype.itemsize

    # ---------------------------------------------------------------------- lookup
    def lookup_roots(self, env_ids: Sequence[int], keys: Sequence[NodeKey | None]) -> list[NodeRef | None]:
        return [None if k is None or not self.store.has_root(e, k) else NodeRef(e, ROOT_NODE)
                for e, k in zip(env_ids, keys, strict=True)]

    def lookup_nodes(self, env_ids: Sequence[int], keys: Sequence[NodeRef]) -> list[NodeRef | None]:
        refs = np.array(keys, np.int64).reshape(len(keys), 2)  # one vectorised check
        live = self.store.live_mask(refs[:, 0], refs[:, 1])
        return [k if ok else None for k, ok in zip(keys, live.tolist(), strict=True)]

    def sizes(self, pasts: Sequence[NodeRef]) -> list[int]:
        refs = np.array(pasts, np.int64).reshape(len(pasts), 2)
        return self.store.lengths(refs[:, 0], refs[:, 1]).tolist()

    def generate(self, latents: torch.Tensor, env_ids, keys: Sequence[NodeRef]) -> list[NodeRef]:
        """A context-free one-token past from each latent, written into the missing node's own slot."""
        ctx = BatchContext.empty(self.transformer, latents.shape[0], 1)
        ctx.forward(latents.unsqueeze(1))
        kv = torch.stack([torch.stack(ctx.k), torch.stack(ctx.v)], 1)[:, :, :, :, 0]  # (L, 2, B, H, hd)
        refs = np.array(keys, np.int64).reshape(len(keys), 2)
        self.store.write_fallbacks(refs[:, 0], refs[:, 1], kv.transpose(2, 3))  # (L, 2, H, B, hd)
        return list(keys)

    # -------------------------------------------------------------------- assembly
    def assemble(self, pasts: Sequence[NodeRef | None], new_tokens: int) -> PagedContext:
        """The arena's one gather for all layers and heads: each row's visible past."""
        pasts = [EMPTY_REF if p is None else p for p in pasts]
        refs = np.array(pasts, np.int64).reshape(len(pasts), 2)  # env, node; EMPTY_REF = (-1, -1)
        gathered = self.store.gather(refs[:, 0], refs[:, 1], new_tokens)
        self.work.bytes_copied += self.token_bytes * len(pasts) * (self.window + new_tokens)
        return PagedContext(self.transformer, gathered, refs, self.cfg.context_length)

    # ---------------------------------------------------------------------- store
    def store_roots(self, batch: PagedContext, env_ids: Sequence[int], keys: Sequence[NodeKey]) -> None:
        """Each env's root window: the last W slots of (gathered past, new tokens), written once.

        ``work.bytes_copied`` counts bytes of *existing* K/V moved; a new token's single write
        into its own storage is not a copy (every backend must write it once).
        """
        w, t = self.window, batch.fill
        window = batch.kv[:, :, :, :, t : w + t]  # (L, 2, H, B, W, hd)
        self.store.write_roots(np.asarray(env_ids, np.int64), list(keys), window,
                               np.minimum(w, batch.past_lengths + t), batch.past_last + t)
        self.work.bytes_copied += self.token_bytes * (w - t) * len(env_ids)

    def store_nodes(self, batch: PagedContext, env_ids: Sequence[int], keys: Sequence[NodeRef]) -> None:
        """Each child's two new tokens and its table row (its parent's rows, then its own two)."""
        if batch.fill != 2:
            raise ValueError(f"a search node adds exactly 2 tokens, got {batch.fill}")
        w = self.window
        children = np.array([n for _, n in keys], np.int64)
        parents = batch.pasts
        if (parents[:, 0] != np.asarray(env_ids)).any():
            raise ValueError("store_nodes: a child's env differs from its parent's")
        self.store.write_children(parents[:, 0].copy(), children, parents[:, 1].copy(),
                                  batch.kv[:, :, :, :, w : w + 2], batch.past_last + 2)

    def clear(self) -> None:
        self.store.clear()

    # ------------------------------------------------------------------- snapshots
    def export_roots(self, env_ids: np.ndarray) -> RootRows:
        return self.store.export_roots(env_ids)

    def import_roots(self, roots: RootRows) -> None:
        self.store.import_roots(roots)
