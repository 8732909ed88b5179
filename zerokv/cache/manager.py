"""``KVCacheManager``: the per-env init pools, the shared recurrent pool and the world-model pool."""

from __future__ import annotations

import logging
from collections.abc import Hashable

from zerokv.cache.config import CacheConfig
from zerokv.cache.kv import KeysValues
from zerokv.cache.pool import KVCachePool
from zerokv.cache.stats import CacheStats
from zerokv.checks import check_positive_int

__all__ = ["KVCacheManager", "pool_sizes"]

logger = logging.getLogger(__name__)


def check_env_num(owner: str, env_num: object) -> int:
    """``env_num`` if it is a positive int, else ValueError naming it."""
    return check_positive_int("env_num", env_num, owner=owner)


def pool_sizes(config: CacheConfig, env_num: int, owner: str = "KVCacheManager") -> tuple[int, int]:
    """``(init pool size per env, recurrent pool size)`` for ``config`` and ``env_num``.

    One search stores at most one root per env in its init pool and at most ``num_simulations``
    children per env in the recurrent pool, so:

    - init pool      = ``init_pool_size``  if given else
      ``min(max_cache_size, max(num_simulations + 1, game_segment_length))``;
    - recurrent pool = ``recur_pool_size`` if given else
      ``min(max_cache_size, env_num * (num_simulations + 1))``.

    Below the safe minimum (``num_simulations + 1`` per init pool, ``env_num * (num_simulations + 1)``
    for the recurrent pool) a search may evict an entry it still needs: that is logged as ONE
    warning per call, naming every undersized pool. Shared by the manager and the legacy store so
    both always have the same capacities.
    """
    sims = config.num_simulations + 1
    init = config.init_pool_size
    if init is None:
        init = min(config.max_cache_size, max(sims, config.game_segment_length))
    recur = config.recur_pool_size
    if recur is None:
        recur = min(config.max_cache_size, env_num * sims)
    short = []
    if init < sims:
        short.append(f"init pools hold {init} < num_simulations + 1 = {sims}")
    if recur < env_num * sims:
        short.append(f"recurrent pool holds {recur} < env_num * (num_simulations + 1) = {env_num * sims}")
    if short:
        logger.warning("%s: %s; evictions inside a search are possible", owner, "; ".join(short))
    return init, recur


class KVCacheManager:
    """The cache pools of one world model (see ``pool_sizes`` for their capacities).

    - ``init_pools[env_id]`` (name ``init_env{i}``): the root caches of env ``env_id``;
    - ``recur_pool`` (name ``recurrent``): the caches of nodes inside the search, shared by all envs;
    - ``wm_pool`` (name ``world_model``, ``env_num`` slots): batch caches of the world model.

    All pools use ``config.eviction_strategy``. Stats are counted when both ``enable_stats`` and
    ``config.enable_stats`` are true. Every pool stores private copies and returns its own
    objects from ``get``: treat them as read-only. ``keys_values_wm_list`` and
    ``keys_values_wm_size_list`` are plain lists the world model fills per batch; ``clear_all``
    empties them.
    """

    def __init__(self, config: CacheConfig, env_num: int, enable_stats: bool = True) -> None:
        if not isinstance(config, CacheConfig):
            raise TypeError(f"KVCacheManager: config is a {type(config).__name__}; expected CacheConfig")
        self.config = config
        self.env_num = check_env_num("KVCacheManager", env_num)
        self.enable_stats = bool(enable_stats) and config.enable_stats
        init_size, recur_size = pool_sizes(config, env_num, "KVCacheManager")
        strategy = config.eviction_strategy
        self.init_pools: list[KVCachePool] = [
            KVCachePool(init_size, strategy, self.enable_stats, f"init_env{i}") for i in range(env_num)
        ]
        self.recur_pool = KVCachePool(recur_size, strategy, self.enable_stats, "recurrent")
        self.wm_pool = KVCachePool(env_num, strategy, self.enable_stats, "world_model")
        self.keys_values_wm_list: list = []
        self.keys_values_wm_size_list: list = []
        logger.info(
            "KVCacheManager: %d envs, init pools %d x %d, recurrent pool %d, wm pool %d, strategy=%s, "
            "stats=%s", env_num, env_num, init_size, recur_size, env_num, strategy.value, self.enable_stats,
        )

    def _init_pool(self, env_id: int) -> KVCachePool:
        if isinstance(env_id, bool) or not 0 <= env_id < self.env_num:
            raise ValueError(f"env_id={env_id!r} outside the allowed range [0, {self.env_num})")
        return self.init_pools[env_id]

    # -- get / set -----------------------------------------------------------------------------

    def get_init_cache(self, env_id: int, cache_key: Hashable) -> KeysValues | None:
        return self._init_pool(env_id).get(cache_key)

    def set_init_cache(
        self, env_id: int, cache_key: Hashable, kv_cache: KeysValues, priority: float | None = None
    ) -> int:
        return self._init_pool(env_id).set(cache_key, kv_cache, priority)

    def get_recur_cache(self, cache_key: Hashable) -> KeysValues | None:
        return self.recur_pool.get(cache_key)

    def set_recur_cache(self, cache_key: Hashable, kv_cache: KeysValues, priority: float | None = None) -> int:
        return self.recur_pool.set(cache_key, kv_cache, priority)

    def get_wm_cache(self, cache_key: Hashable) -> KeysValues | None:
        return self.wm_pool.get(cache_key)

    def set_wm_cache(self, cache_key: Hashable, kv_cache: KeysValues) -> int:
        return self.wm_pool.set(cache_key, kv_cache)

    def hierarchical_get(self, env_id: int, cache_key: Hashable) -> KeysValues | None:
        """The env's init pool first, then the recurrent pool (a recurrent hit also counts an init miss)."""
        kv = self._init_pool(env_id).get(cache_key)
        return kv if kv is not None else self.recur_pool.get(cache_key)

    # -- housekeeping --------------------------------------------------------------------------

    def _pools(self) -> list[KVCachePool]:
        return [*self.init_pools, self.recur_pool, self.wm_pool]

    def clear_all(self) -> None:
        """Empty every pool (storage kept for reuse) and the per-batch wm lists."""
        for pool in self._pools():
            pool.clear()
        self.keys_values_wm_list.clear()
        self.keys_values_wm_size_list.clear()

    def clear_init_caches(self) -> None:
        for pool in self.init_pools:
            pool.clear()

    def clear_recur_cache(self) -> None:
        self.recur_pool.clear()

    def reset_stats(self) -> None:
        """Zero every pool's counters (sizes are kept)."""
        for pool in self._pools():
            pool.stats.reset()

    def get_stats_summary(self) -> dict:
        """``{"stats_enabled": True, "init_pools": {"env_0": str, ...}, "recur_pool": str, "wm_pool": str}``."""
        if not self.enable_stats:
            return {"stats_enabled": False}
        return {
            "stats_enabled": True,
            "init_pools": {f"env_{i}": str(p.stats) for i, p in enumerate(self.init_pools)},
            "recur_pool": str(self.recur_pool.stats),
            "wm_pool": str(self.wm_pool.stats),
        }

    def totals(self) -> CacheStats:
        """Field-wise sum of every pool's stats (a new object)."""
        return CacheStats.total(p.stats for p in self._pools())

    @property
    def nbytes(self) -> int:
        """Bytes allocated by all pools' slots."""
        return sum(p.nbytes for p in self._pools())
