"""The stores' protocols and records: the statistics every store reports, the seeds' KV store
interface, and the neutral record of copied-out root contexts (:class:`RootRows`)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from zerokv.cache.kv import KeysValues
from zerokv.cache.stats import CacheStats
from zerokv.cache.storage import Quantized

__all__ = ["KVStore", "RootRows", "StatsSource"]


@runtime_checkable
class StatsSource(Protocol):
    """What every store reports about itself (KVCacheManager, LegacyKVStore, PagedArena, and the
    reference's TokenStore); the world model's ``cache_stats()`` reads only this.

    ``totals()`` sums the store's own counters (per-pool probes where it has pools; a store whose
    lookups are made for it, like the paged arena, counts none) and its live entries (``size``).
    """

    def totals(self) -> CacheStats: ...

    def reset_stats(self) -> None: ...

    def get_stats_summary(self) -> dict: ...

    @property
    def nbytes(self) -> int: ...


@runtime_checkable
class KVStore(StatsSource, Protocol):
    """The seeds' store of root (init) caches per env and of search-node (recurrent) caches: what
    the ``legacy`` and ``manager`` backends (``KVStoreBackend``) use.

    Contract: ``set_*`` stores a private copy; ``get_*`` returns the store's own object (read-only
    for the caller) or None; ``hierarchical_get`` looks in the env's init caches first, then in the
    recurrent ones. ``isinstance(x, KVStore)`` checks only that the members exist (runtime
    protocols cannot check signatures).
    """

    keys_values_wm_list: list
    keys_values_wm_size_list: list

    def get_init_cache(self, env_id: int, cache_key: Hashable) -> KeysValues | None: ...

    def set_init_cache(
        self, env_id: int, cache_key: Hashable, kv_cache: KeysValues, priority: float | None = None
    ) -> int: ...

    def get_recur_cache(self, cache_key: Hashable) -> KeysValues | None: ...

    def set_recur_cache(
        self, cache_key: Hashable, kv_cache: KeysValues, priority: float | None = None
    ) -> int: ...

    def hierarchical_get(self, env_id: int, cache_key: Hashable) -> KeysValues | None: ...

    def clear_all(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RootRows:
    """Root contexts of n envs copied out of a store, in its stored form (what
    :meth:`~zerokv.cache.PagedArena.export_roots` gives and ``import_roots`` takes back).

    envs:    ``(n,)`` int64 env ids
    keys:    n root keys (what the store compares on lookup)
    lengths: ``(n,)`` int64 real tokens in each window (≤ W, right-aligned)
    last:    ``(n,)`` int64 absolute position of each window's newest token
    stored:  payload ``(L, 2, H, n·W, hd)`` in the storage dtype (env i's window is rows
             ``i·W … i·W + W − 1``, oldest first), scale ``(L, 2, H, n·W)`` or None
    """

    envs: np.ndarray
    keys: list
    lengths: np.ndarray
    last: np.ndarray
    stored: Quantized
