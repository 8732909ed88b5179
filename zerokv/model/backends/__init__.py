"""How a node gets its past: the context backends, chosen once when the world model is built.

Every backend implements :class:`~zerokv.model.backends.protocol.ContextBackend` (lookups of
roots and of search nodes, context-free fallbacks, batch assembly, storing), each with its own
``Past`` and ``Batch`` types and a key strategy (:mod:`zerokv.model.backends.keys`):

* ``none``    :class:`RecomputeBackend`, the reference: recompute from input tokens.
* ``legacy``  :class:`KVStoreBackend` over :class:`~zerokv.cache.LegacyKVStore` (the seeds' old system).
* ``manager`` :class:`KVStoreBackend` over :class:`~zerokv.cache.KVCacheManager`.
* ``paged``   :class:`PagedBackend` over :class:`~zerokv.cache.PagedArena`: nodes keep only their own tokens.
* ``cache_validation_mode`` wraps any of them in :class:`ValidatingBackend`.
"""

from __future__ import annotations

from zerokv.cache import CacheConfig, KVCacheManager, LegacyKVStore
from zerokv.model.backends.keys import (
    EMPTY_REF,
    ContentKeys,
    KeyMaker,
    NodeIdKeys,
    NodeRef,
    PairedKeys,
)
from zerokv.model.backends.kvstore import KVStoreBackend
from zerokv.model.backends.paged import PagedBackend
from zerokv.model.backends.protocol import ContextBackend, ContextBatch, PastPair
from zerokv.model.backends.recompute import (
    RecomputeBackend,
    RecomputeBatch,
    TokenHistory,
    TokenStore,
)
from zerokv.model.backends.validating import ValidatingBackend, ValidatingBatch
from zerokv.model.config import WorldModelConfig
from zerokv.model.context import CacheWork, KeyHash
from zerokv.model.transformer import Transformer

__all__ = ["EMPTY_REF", "ContentKeys", "ContextBackend", "ContextBatch", "KVStoreBackend", "KeyMaker", "NodeIdKeys",
           "NodeRef", "PagedBackend", "PairedKeys", "PastPair", "RecomputeBackend", "RecomputeBatch", "TokenHistory",
           "TokenStore", "ValidatingBackend", "ValidatingBatch", "make_backend"]


def make_backend(cfg: WorldModelConfig, transformer: Transformer, work: CacheWork, key_hash: KeyHash) -> ContextBackend:
    """Build the context backend named by the config — the only place the choice is made."""
    if cfg.cache_backend == "none":
        return RecomputeBackend(cfg, transformer, work, key_hash)
    if cfg.cache_backend == "paged":
        backend = PagedBackend(cfg, transformer, work, key_hash)
    else:
        cache_cfg = CacheConfig(
            num_simulations=cfg.num_simulations, max_cache_size=cfg.max_cache_size,
            eviction_strategy=cfg.eviction_strategy, init_pool_size=cfg.init_pool_size,
            recur_pool_size=cfg.recur_pool_size,
        )
        store_cls = KVCacheManager if cfg.cache_backend == "manager" else LegacyKVStore
        backend = KVStoreBackend(cfg, transformer, store_cls(cache_cfg, cfg.env_num), cfg.cache_backend,
                                 work, key_hash)
    if cfg.cache_validation_mode:
        return ValidatingBackend(backend, RecomputeBackend(cfg, transformer, CacheWork(), key_hash),
                                 cfg.validation_atol)
    return backend
