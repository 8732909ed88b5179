"""How a node gets its past: the context backends, chosen once when the world model is built.

Every backend offers the same steps, named after the seeds' world-model methods:

``root_keys`` / ``node_keys``  address roots and search nodes
``lookup``    find each row's past (``retrieve_or_generate_kvcache``'s lookup half)
``generate``  a context-free one-token past from a latent, for a miss (its generate half)
``assemble``  batch the pasts for one transformer forward (``trim_and_pad_kv_cache``)
``store_batch``  keep each row's new past under its key (``update_cache_context``)

* ``none``    :class:`RecomputeBackend`, the reference: recompute from input tokens.
* ``legacy``  :class:`KVStoreBackend` over :class:`~zerokv.cache.LegacyKVStore` (the seeds' old system).
* ``manager`` :class:`KVStoreBackend` over :class:`~zerokv.cache.KVCacheManager`.
* ``paged``   :class:`PagedBackend` over :class:`~zerokv.cache.PagedArena`: nodes keep only their own tokens.
* ``cache_validation_mode`` wraps any of them in :class:`ValidatingBackend`.
"""

from __future__ import annotations

from zerokv.cache import CacheConfig, KVCacheManager, LegacyKVStore
from zerokv.model.backends.kvstore import KVStoreBackend
from zerokv.model.backends.paged import PagedBackend
from zerokv.model.backends.recompute import RecomputeBackend, TokenHistory, TokenStore
from zerokv.model.backends.validating import ValidatingBackend
from zerokv.model.config import WorldModelConfig
from zerokv.model.context import CacheWork, KeyHash
from zerokv.model.transformer import Transformer

__all__ = ["KVStoreBackend", "PagedBackend", "RecomputeBackend", "TokenHistory", "TokenStore",
           "ValidatingBackend", "make_backend"]


def make_backend(cfg: WorldModelConfig, transformer: Transformer, work: CacheWork, key_hash: KeyHash):
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
