"""KV cache storage: per-layer key/value tensors, pools with eviction, the seeds' two stores and the paged arena."""

from zerokv.cache.config import CacheConfig
from zerokv.cache.kv import KeysValues, KVCache
from zerokv.cache.legacy import LegacyKVStore
from zerokv.cache.manager import KVCacheManager
from zerokv.cache.paged import PagedArena
from zerokv.cache.pool import EvictionStrategy, KVCachePool
from zerokv.cache.protocol import KVStore, StatsSource
from zerokv.cache.stats import CacheStats

__all__ = [
    "CacheConfig",
    "CacheStats",
    "EvictionStrategy",
    "KVCache",
    "KVCacheManager",
    "KVCachePool",
    "KVStore",
    "KeysValues",
    "LegacyKVStore",
    "PagedArena",
    "StatsSource",
]
