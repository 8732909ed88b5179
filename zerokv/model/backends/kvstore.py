"""The "legacy" and "manager" backends: each node's keys/values in a :class:`~zerokv.cache.KVStore`.

Exact because attention is a sliding window with rotary positions (see
:class:`~zerokv.model.config.WorldModelConfig`): a node keeps the keys/values of its last
``context_length - 1`` tokens, which never change once computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zerokv.cache import KeysValues, KVStore
from zerokv.model.backends.keys import ContentKeys
from zerokv.model.config import WorldModelConfig
from zerokv.model.context import CacheWork, NodeKey
from zerokv.model.transformer import BatchContext, Transformer


class KVStoreBackend:
    """Keeps each node's keys/values of its last ``context_length - 1`` tokens in a KV store.

    Batch assembly and storage copy per row, as the seeds do (clone from pool → pad into the
    batch → copy into a scratch cache → copy into a pool slot); the paged backend removes them.
    """

    def __init__(
        self, cfg: WorldModelConfig, transformer: Transformer, store: KVStore, name: str, work: CacheWork,
        key_hash,
    ) -> None:
        self.cfg, self.transformer, self.store, self.name, self.work = cfg, transformer, store, name, work
        self.keys = ContentKeys(key_hash, work)  # the seeds' way: nodes by their latents
        # Bytes of one token's keys and values over all layers.
        self.token_bytes = 2 * cfg.num_layers * cfg.embed_dim * cfg.torch_dtype.itemsize
        self.window = cfg.context_length - 1  # past tokens a new token can see
        # The seeds' `keys_values_wm_single_env`: the scratch cache a row is written into before
        # the store copies it into a slot.
        self.keys_values_wm_single_env = self._new_kv()

    def _new_kv(self) -> KeysValues:
        c = self.cfg
        return KeysValues(1, c.num_heads, c.max_tokens, c.embed_dim, c.num_layers, c.device, c.torch_dtype)

    def lookup_roots(self, env_ids: Sequence[int], keys: Sequence[NodeKey | None]) -> list[KeysValues | None]:
        return [None if k is None else self.store.hierarchical_get(e, k) for e, k in zip(env_ids, keys, strict=True)]

    def lookup_nodes(self, env_ids: Sequence[int], keys: Sequence[NodeKey]) -> list[KeysValues | None]:
        """The seeds' ``retrieve_or_generate_kvcache`` lookup: the env's init pool, then the recurrent pool."""
        return [self.store.hierarchical_get(e, k) for e, k in zip(env_ids, keys, strict=True)]

    def generate(self, latents: torch.Tensor, env_ids, keys) -> list[KeysValues]:
        """Context-free one-token caches: each latent run alone at position 0 (the seeds' miss path)."""
        ctx = BatchContext.empty(self.transformer, latents.shape[0], 1)
        ctx.forward(latents.unsqueeze(1))
        out = []
        for row in range(latents.shape[0]):
            kv = self._new_kv()
            for layer, (k, v) in enumerate(zip(ctx.k, ctx.v, strict=True)):
                kv[layer].update(k[row : row + 1], v[row : row + 1])
            out.append(kv)
        return out

    def sizes(self, pasts) -> list[int]:
        return [p.size for p in pasts]

    def assemble(self, pasts: Sequence[KeysValues | None], new_tokens: int) -> BatchContext:
        """``trim_and_pad_kv_cache``: right-align each row's past in a fresh batch context."""
        pasts = [self._new_kv() if kv is None else kv for kv in pasts]
        p = max((kv.size for kv in pasts), default=0)
        self.work.bytes_copied += self.token_bytes * sum(kv.size for kv in pasts)
        ctx = BatchContext.empty(self.transformer, len(pasts), p + new_tokens)
        for row, kv in enumerate(pasts):
            n = kv.size
            lo = p - n
            for layer in range(self.cfg.num_layers):
                k, v = kv[layer].get()  # (1, H, n, hd)
                ctx.k[layer][row, :, lo:p] = k[0]
                ctx.v[layer][row, :, lo:p] = v[0]
            ctx.positions[row, lo:p] = torch.arange(kv.start_position, kv.start_position + n)
            ctx.valid[row, lo:p] = True
        ctx.fill = ctx.start_fill = p
        return ctx

    def store_roots(self, batch: BatchContext, env_ids: Sequence[int], keys: Sequence[NodeKey]) -> None:
        self._store(batch, env_ids, keys, root=True)

    def store_nodes(self, batch: BatchContext, env_ids: Sequence[int], keys: Sequence[NodeKey]) -> None:
        self._store(batch, env_ids, keys, root=False)

    def _store(self, ctx: BatchContext, env_ids: Sequence[int], keys: Sequence[NodeKey], root: bool) -> None:
        """``update_cache_context``: keep each row's last ``window`` tokens under its key."""
        scratch = self.keys_values_wm_single_env
        real = ctx.valid[:, : ctx.fill].sum(dim=1).tolist()
        new = ctx.new_tokens
        self.work.host_syncs += 1
        for row, (env_id, key) in enumerate(zip(env_ids, keys, strict=True)):
            n = min(real[row], self.window)
            lo = ctx.fill - n
            scratch.reset()
            for layer in range(self.cfg.num_layers):
                scratch[layer].update(ctx.k[layer][row : row + 1, :, lo : ctx.fill], ctx.v[layer][row : row + 1, :, lo : ctx.fill])
            scratch.start_position = int(ctx.positions[row, lo])
            # Into the scratch, then into a slot; the new tokens' first write is not a copy.
            self.work.bytes_copied += self.token_bytes * (2 * n - min(new, n))
            if root:
                self.store.set_init_cache(env_id, key, scratch)
            else:
                self.store.set_recur_cache(key, scratch)

    def clear(self) -> None:
        self.store.clear_all()


