"""``LegacyKVStore``: the seeds' old cache system, kept as a backend to measure against.

The old world model kept its caches in bare attributes (names kept here so its code reads the
same): per env a dict key → slot, a slot array, a slot → key list and a write pointer; the same for
the recurrent and world-model pools. A write goes to the slot under the pointer, evicting whatever
key that slot held, and the pointer advances modulo the pool size: FIFO by construction.

Invariants: for every table, ``table[key] == slot`` implies ``idx_to_key[slot] == key`` and the
slot holds storage; ``idx_to_key`` may name keys that are no longer live (``clear`` empties the
dicts only, as the seeds did), which is why eviction checks the dict before deleting.
"""

from __future__ import annotations

from collections.abc import Hashable

from zerokv.cache.config import CacheConfig
from zerokv.cache.kv import KeysValues
from zerokv.cache.manager import check_env_num, pool_sizes
from zerokv.cache.pool import EvictionStrategy
from zerokv.cache.stats import CacheStats

__all__ = ["LegacyKVStore"]


def _lookup(table: dict, slots: list, key: Hashable, stats: CacheStats, count: bool) -> KeysValues | None:
    """The stored cache of ``key`` or None; ``count``: record the hit or miss."""
    slot = table.get(key)
    if count:
        if slot is None:
            stats.misses += 1
        else:
            stats.hits += 1
    return None if slot is None else slots[slot]


def _store(
    table: dict, slots: list, idx_to_key: list, pointer: int, key: Hashable, kv: KeysValues,
    stats: CacheStats, count: bool,
) -> tuple[int, int]:
    """Write ``kv`` under ``key``; returns ``(slot, next write pointer)``; ``count``: record evictions."""
    slot = table.get(key)
    if slot is not None:  # update: refresh in place, the pointer does not move
        slots[slot].copy_from(kv)
        return slot, pointer
    slot = pointer
    old_key = idx_to_key[slot]
    # The reference deleted `old_key` whenever it was in the dict. After a clear (which kept
    # idx_to_key) the same key can live again in another slot, and that deleted a live entry.
    # Delete it only if the dict still maps it to *this* slot.
    # (A never-written slot names None, which the dict maps to this slot only if None is its key.)
    if table.get(old_key) == slot:
        del table[old_key]
        if count:
            stats.evictions += 1
    if slots[slot] is None:
        slots[slot] = kv.clone()  # first use of the slot: preallocate
    else:
        slots[slot].copy_from(kv)
    table[key] = slot
    idx_to_key[slot] = key
    stats.size = len(table)
    return slot, (pointer + 1) % len(slots)


class LegacyKVStore:
    """The old system behind the manager's interface (FIFO only; same pool sizes as the manager).

    ``priority`` arguments are accepted for interface compatibility and ignored. Like the manager,
    it counts hits, misses and evictions only when both ``enable_stats`` and
    ``config.enable_stats`` are true; ``stats.size`` is always kept.
    """

    def __init__(self, config: CacheConfig, env_num: int, enable_stats: bool = True) -> None:
        if not isinstance(config, CacheConfig):
            raise TypeError(f"LegacyKVStore: config is a {type(config).__name__}; expected CacheConfig")
        if config.eviction_strategy is not EvictionStrategy.FIFO:
            raise ValueError(
                f"LegacyKVStore: eviction_strategy={config.eviction_strategy.value!r}; the legacy "
                "store supports only 'fifo'"
            )
        self.config = config
        self.env_num = check_env_num("LegacyKVStore", env_num)
        self.enable_stats = bool(enable_stats) and config.enable_stats
        self.shared_pool_size_init, self.shared_pool_size_recur = pool_sizes(config, env_num, "LegacyKVStore")
        n_init, n_recur = self.shared_pool_size_init, self.shared_pool_size_recur

        self.past_kv_cache_init_infer_envs: list[dict] = [{} for _ in range(env_num)]
        self.shared_pool_init_infer: list[list[KeysValues | None]] = [[None] * n_init for _ in range(env_num)]
        self.shared_pool_index_init_envs: list[int] = [0] * env_num
        self.pool_idx_to_key_map_init_envs: list[list] = [[None] * n_init for _ in range(env_num)]

        self.past_kv_cache_recurrent_infer: dict = {}
        self.shared_pool_recur_infer: list[KeysValues | None] = [None] * n_recur
        self.shared_pool_index_recur = 0
        self.pool_idx_to_key_map_recur_infer: list = [None] * n_recur

        self.past_kv_cache_wm: dict = {}
        self.shared_pool_wm: list[KeysValues | None] = [None] * env_num
        self.shared_pool_index_wm = 0
        self.pool_idx_to_key_map_wm: list = [None] * env_num

        self.keys_values_wm_list: list = []
        self.keys_values_wm_size_list: list = []
        self._init_stats = [CacheStats() for _ in range(env_num)]
        self._recur_stats = CacheStats()
        self._wm_stats = CacheStats()

    def _check_env(self, env_id: int) -> None:
        if isinstance(env_id, bool) or not 0 <= env_id < self.env_num:
            raise ValueError(f"env_id={env_id!r} outside the allowed range [0, {self.env_num})")

    # -- get / set -----------------------------------------------------------------------------

    def get_init_cache(self, env_id: int, cache_key: Hashable) -> KeysValues | None:
        self._check_env(env_id)
        return _lookup(self.past_kv_cache_init_infer_envs[env_id], self.shared_pool_init_infer[env_id],
                       cache_key, self._init_stats[env_id], self.enable_stats)

    def set_init_cache(
        self, env_id: int, cache_key: Hashable, kv_cache: KeysValues, priority: float | None = None
    ) -> int:
        self._check_env(env_id)
        slot, self.shared_pool_index_init_envs[env_id] = _store(
            self.past_kv_cache_init_infer_envs[env_id], self.shared_pool_init_infer[env_id],
            self.pool_idx_to_key_map_init_envs[env_id], self.shared_pool_index_init_envs[env_id],
            cache_key, kv_cache, self._init_stats[env_id], self.enable_stats,
        )
        return slot

    def get_recur_cache(self, cache_key: Hashable) -> KeysValues | None:
        return _lookup(self.past_kv_cache_recurrent_infer, self.shared_pool_recur_infer, cache_key,
                       self._recur_stats, self.enable_stats)

    def set_recur_cache(self, cache_key: Hashable, kv_cache: KeysValues, priority: float | None = None) -> int:
        slot, self.shared_pool_index_recur = _store(
            self.past_kv_cache_recurrent_infer, self.shared_pool_recur_infer,
            self.pool_idx_to_key_map_recur_infer, self.shared_pool_index_recur, cache_key, kv_cache,
            self._recur_stats, self.enable_stats,
        )
        return slot

    def get_wm_cache(self, cache_key: Hashable) -> KeysValues | None:
        return _lookup(self.past_kv_cache_wm, self.shared_pool_wm, cache_key, self._wm_stats, self.enable_stats)

    def set_wm_cache(self, cache_key: Hashable, kv_cache: KeysValues) -> int:
        slot, self.shared_pool_index_wm = _store(
            self.past_kv_cache_wm, self.shared_pool_wm, self.pool_idx_to_key_map_wm,
            self.shared_pool_index_wm, cache_key, kv_cache, self._wm_stats, self.enable_stats,
        )
        return slot

    def hierarchical_get(self, env_id: int, cache_key: Hashable) -> KeysValues | None:
        """The env's init pool first, then the recurrent pool (as the old ``retrieve_or_generate_kvcache``)."""
        kv = self.get_init_cache(env_id, cache_key)
        return kv if kv is not None else self.get_recur_cache(cache_key)

    # -- housekeeping --------------------------------------------------------------------------

    def _all_stats(self) -> list[CacheStats]:
        return [*self._init_stats, self._recur_stats, self._wm_stats]

    def clear_init_caches(self) -> None:
        # Only the dicts, as the seeds did: slots keep storage, pointers and idx_to_key stay.
        for table, stats in zip(self.past_kv_cache_init_infer_envs, self._init_stats, strict=True):
            table.clear()
            stats.size = 0

    def clear_recur_cache(self) -> None:
        self.past_kv_cache_recurrent_infer.clear()
        self._recur_stats.size = 0

    def clear_all(self) -> None:
        self.clear_init_caches()
        self.clear_recur_cache()
        self.past_kv_cache_wm.clear()
        self._wm_stats.size = 0
        self.keys_values_wm_list.clear()
        self.keys_values_wm_size_list.clear()

    def reset_stats(self) -> None:
        for stats in self._all_stats():
            stats.reset()

    def get_stats_summary(self) -> dict:
        """Same shape as ``KVCacheManager.get_stats_summary``."""
        if not self.enable_stats:
            return {"stats_enabled": False}
        return {
            "stats_enabled": True,
            "init_pools": {f"env_{i}": str(s) for i, s in enumerate(self._init_stats)},
            "recur_pool": str(self._recur_stats),
            "wm_pool": str(self._wm_stats),
        }

    def totals(self) -> CacheStats:
        return CacheStats.total(self._all_stats())

    @property
    def nbytes(self) -> int:
        """Bytes allocated by all slots."""
        pools = [*self.shared_pool_init_infer, self.shared_pool_recur_infer, self.shared_pool_wm]
        return sum(kv.nbytes for pool in pools for kv in pool if kv is not None)
