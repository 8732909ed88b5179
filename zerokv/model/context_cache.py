"""``ContextCache``: the world model's one door to its context backend, and the only counter of lookups.

It owns the backend (chosen once, by ``config.cache_backend``), the search epoch of the content
keys, each env's latest root key, and the node counters reported by ``WorldModel.cache_stats()``:
a hit or a miss is one node's lookup — a root's previous context, or a parent inside a search —
counted here once, whatever the backend (a store's own per-pool probes are its ``summary``). A
miss for a node whose history exists is a *fallback*: the node continues from a context-free past
generated from its latent, never silently.

Recurrent calls are timed here too (:class:`~zerokv.model.context.CacheWork`, read by the
benchmark): the time spent inside this layer is ``cache_seconds``; the time between handing a
search batch out (:meth:`expand`) and storing its children (:meth:`store_children`) — the
transformer forward and the heads — is ``forward_seconds``. Root calls are not timed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from zerokv.cache.protocol import KVStore, RootRows, StatsSource
from zerokv.model.backends import make_backend
from zerokv.model.backends.protocol import ContextBackend, ContextBatch, RootSnapshots
from zerokv.model.config import WorldModelConfig
from zerokv.model.context import CacheWork, KeyHash
from zerokv.model.inputs import NO_ACTION
from zerokv.model.transformer import Transformer


@dataclass(frozen=True, slots=True)
class CacheReport:
    """What ``WorldModel.cache_stats()`` returns: one record, counted since the last reset.

    backend:   the backend's name ("paged", "manager", "manager+validation", …)
    hits:      node lookups that found the node's past (roots' previous contexts and search parents)
    misses:    node lookups that did not
    hit_rate:  hits / (hits + misses), 0.0 before the first lookup
    evictions: live entries the store dropped to make room (0 for paged and none)
    fallbacks: misses of a node whose history existed: continued from a context-free past
    rebuilds:  roots whose context was rebuilt from real history (``initial_inference_from_history``)
    size:      live entries in the store now
    nbytes:    bytes the store has allocated
    summary:   the store's own report, a dict (the seeds' ``get_stats_summary()``)
    """

    backend: str
    hits: int
    misses: int
    hit_rate: float
    evictions: int
    fallbacks: int
    rebuilds: int
    size: int
    nbytes: int
    summary: dict


@dataclass(frozen=True, slots=True)
class RootState:
    """What the next root call of a world model needs of its cache (a snapshot's content).

    keys:  ``env_num`` entries: each env's latest root key (None: no history; an env with a key but
           no stored context continues as a counted fallback, as it would have)
    roots: the stored root contexts of the envs whose key finds one (:class:`RootRows`)
    epoch: the search epoch of the content keys (restored so that no later key repeats one)
    """

    keys: list
    roots: RootRows
    epoch: int


class ContextCache:
    """The backend plus the state every backend shares (epoch, root keys, counters, work)."""

    def __init__(self, cfg: WorldModelConfig, transformer: Transformer, key_hash: KeyHash) -> None:
        self.cfg, self.key_hash = cfg, key_hash
        self.work = CacheWork()
        self._backend: ContextBackend = make_backend(cfg, transformer, self.work, key_hash)
        self.epoch = 0  # one per root call: content keys of different searches never meet
        self.root_keys: list = [None] * cfg.env_num  # each env's latest root key
        self.hits = self.misses = self.fallbacks = self.rebuilds = 0
        self._handed_out = 0.0  # perf_counter when expand() returned its batch
        # The seeds' per-batch lists (pasts found last, their sizes): the seeds' stores' own
        # (KVCacheManager, LegacyKVStore), new lists for the others (paged, none).
        store = self._backend.store
        self.keys_values_wm_list: list = store.keys_values_wm_list if isinstance(store, KVStore) else []
        self.keys_values_wm_size_list: list[int] = store.keys_values_wm_size_list if isinstance(store, KVStore) else []

    @property
    def store(self) -> StatsSource:
        """The backend's store (the seeds' ``kv_cache_manager``)."""
        return self._backend.store

    def sizes(self, pasts: Sequence) -> list[int]:
        """Tokens in each past (as :meth:`parents` returns them)."""
        return self._backend.sizes(pasts)

    def start_search(self) -> None:
        """A new search: content keys get a new epoch, so no key of an earlier search matches."""
        self.epoch += 1

    # ----------------------------------------------------------------------- roots
    def previous_roots(self, env_ids: Sequence[int], actions: Sequence[int]) -> list:
        """Starts a search; the past of each env's previous root (None: the episode starts, or lost).

        An env with a last action whose previous root is gone is a counted fallback.
        """
        self.start_search()
        keys = [self.root_keys[e] if a != NO_ACTION else None for e, a in zip(env_ids, actions, strict=True)]
        pasts = self._backend.lookup_roots(env_ids, keys)
        found = sum(p is not None for p in pasts)
        lost = sum(k is not None and p is None for k, p in zip(keys, pasts, strict=True))
        self.hits += found
        self.misses += lost
        self.fallbacks += lost
        return pasts

    def root_keys_of(self, env_ids: Sequence[int], latents: torch.Tensor) -> list:
        """Keys of new roots (one device→host copy for the whole batch on content-keyed backends)."""
        return self._backend.keys.roots(env_ids, latents, self.epoch)

    def store_roots(self, batch: ContextBatch, env_ids: Sequence[int], keys: Sequence, *, rebuilt: bool) -> None:
        self._backend.store_roots(batch, env_ids, keys)
        for e, k in zip(env_ids, keys, strict=True):
            self.root_keys[e] = k
        if rebuilt:
            self.rebuilds += len(keys)

    # ---------------------------------------------------------------------- search
    def parents(self, latents: torch.Tensor, env_ids: Sequence[int], parent_ids: np.ndarray | None) -> list:
        """The past of each parent (``latents (B, E)``, node ids or None); a lost one is generated
        from its latent alone: a counted fallback."""
        keys = self._backend.keys.nodes(env_ids, latents, parent_ids, self.epoch)
        pasts = self._backend.lookup_nodes(env_ids, keys)
        missing = [i for i, p in enumerate(pasts) if p is None]
        self.hits += len(pasts) - len(missing)
        self.misses += len(missing)
        self.fallbacks += len(missing)
        if missing:
            generated = self._backend.generate(latents[missing], [env_ids[i] for i in missing],
                                              [keys[i] for i in missing])
            for i, past in zip(missing, generated, strict=True):
                pasts[i] = past
        return pasts

    def expand(self, latents: torch.Tensor, env_ids: Sequence[int], parent_ids: np.ndarray | None) -> ContextBatch:
        """The batch of one search expansion: every parent's past, with room for 2 new tokens."""
        t0 = time.perf_counter()
        batch = self._backend.assemble(self.parents(latents, env_ids, parent_ids), 2)
        self._handed_out = time.perf_counter()
        self.work.cache_seconds += self._handed_out - t0
        return batch

    def store_children(self, batch: ContextBatch, env_ids: Sequence[int], latents: torch.Tensor,
                       child_ids: np.ndarray | None) -> None:
        """Keep each child's past (its parent's plus the batch's 2 new tokens)."""
        t0 = time.perf_counter()
        self.work.forward_seconds += t0 - self._handed_out
        self.store_nodes(batch, env_ids, latents, child_ids)
        self.work.cache_seconds += time.perf_counter() - t0

    def store_nodes(self, batch: ContextBatch, env_ids: Sequence[int], latents: torch.Tensor,
                    node_ids: np.ndarray | None) -> None:
        self._backend.store_nodes(batch, env_ids, self._backend.keys.nodes(env_ids, latents, node_ids, self.epoch))

    # ---------------------------------------------------------------------- shared
    def assemble(self, pasts: Sequence, new_tokens: int) -> ContextBatch:
        """One batch of ``pasts`` (None: a row without a past), with room for ``new_tokens`` per row."""
        return self._backend.assemble(pasts, new_tokens)

    def clear(self) -> None:
        self._backend.clear()
        self.keys_values_wm_list.clear()
        self.keys_values_wm_size_list.clear()

    # ------------------------------------------------------------------- snapshots
    def export_state(self) -> RootState:
        """Each env's root key and every root context the next root call would find."""
        backend = self._snapshots("save")
        envs = list(range(self.cfg.env_num))
        found = backend.lookup_roots(envs, self.root_keys)
        with_context = np.array([e for e in envs if found[e] is not None], np.int64)
        return RootState(list(self.root_keys), backend.export_roots(with_context), self.epoch)

    def import_state(self, state: RootState) -> None:
        """Drop every stored past, then restore ``state``'s roots and keys (a new search follows)."""
        backend = self._snapshots("load")
        if len(state.keys) != self.cfg.env_num:
            raise ValueError(f"{len(state.keys)} root keys for env_num={self.cfg.env_num}")
        self.clear()
        backend.import_roots(state.roots)
        self.root_keys = list(state.keys)
        self.epoch = max(self.epoch, state.epoch)

    def _snapshots(self, verb: str) -> RootSnapshots:
        if not isinstance(self._backend, RootSnapshots):
            raise ValueError(f"cannot {verb} cache snapshots with cache_backend={self._backend.name!r}: only "
                             "cache_backend='paged' (without cache_validation_mode) can copy its root contexts out "
                             "and back exactly")
        return self._backend

    def report(self) -> CacheReport:
        store = self._backend.store
        totals = store.totals()
        queries = self.hits + self.misses
        return CacheReport(
            backend=self._backend.name, hits=self.hits, misses=self.misses,
            hit_rate=self.hits / queries if queries else 0.0, evictions=totals.evictions,
            fallbacks=self.fallbacks, rebuilds=self.rebuilds, size=totals.size, nbytes=store.nbytes,
            summary=store.get_stats_summary(),
        )

    def reset_stats(self) -> None:
        self._backend.store.reset_stats()
        self.hits = self.misses = self.fallbacks = self.rebuilds = 0
