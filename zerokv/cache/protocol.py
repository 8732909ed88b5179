"""``KVStore``: what the world model needs from a cache backend (chosen once, at construction)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol, runtime_checkable

from zerokv.cache.kv import KeysValues
from zerokv.cache.stats import CacheStats

__all__ = ["KVStore"]


@runtime_checkable
class KVStore(Protocol):
    """A store of root (init) caches per env and of search-node (recurrent) caches.

    Contract shared by every backend: ``set_*`` stores a private copy; ``get_*`` returns the
    store's own object (read-only for the caller) or None; ``hierarchical_get`` looks in the env's
    init caches first, then in the recurrent ones. ``isinstance(x, KVStore)`` checks only that the
    members exist (runtime protocols cannot check signatures).
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

    def reset_stats(self) -> None: ...

    def get_stats_summary(self) -> dict: ...

    def totals(self) -> CacheStats: ...

    @property
    def nbytes(self) -> int: ...
