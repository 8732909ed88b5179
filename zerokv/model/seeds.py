"""The seeds' world-model names (docs/design.md, "The seeds' API"), as a thin adapter over the context cache.

It uses only the public methods of the model's cache layer (``model.context_cache``, a
:class:`~zerokv.model.context_cache.ContextCache`), never a backend or a store directly.

The entry points (``initial_inference``, ``recurrent_inference``) do not go through these names:
they call the cache layer directly. These are for code written against the seeds' API, e.g. one
search expansion by hand::

    sizes = wm.retrieve_or_generate_kvcache(latent, env_ids, node_ids=parent_ids)  # fills keys_values_wm_list
    batch = wm.trim_and_pad_kv_cache(new_tokens=2)
    h = batch.forward(tokens)                                                # (B, 2, E): action, latent
    wm.update_cache_context(batch, env_ids, next_latent, node_ids=child_ids, is_init_infer=False)

which is exactly what ``recurrent_inference`` computes (tested). Node ids are those of
``recurrent_inference`` (required by the paged backend, ignored by the content-keyed ones).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from zerokv.model import inputs
from zerokv.model.backends.protocol import ContextBatch

logger = logging.getLogger("zerokv.model.world_model")


class SeedsNames:
    """Mixin of :class:`~zerokv.model.world_model.WorldModel`: ``kv_cache_manager``,
    ``keys_values_wm_list``, ``keys_values_wm_size_list``, ``retrieve_or_generate_kvcache``,
    ``trim_and_pad_kv_cache``, ``update_cache_context`` and ``clear_caches``."""

    @property
    def kv_cache_manager(self):
        """The backend's store: a KVCacheManager, a LegacyKVStore, a PagedArena, or the reference's TokenStore."""
        return self.context_cache.store

    @property
    def keys_values_wm_list(self) -> list:
        """The pasts of the batch ``retrieve_or_generate_kvcache`` found last (the store's own list
        on the seeds' stores)."""
        return self.context_cache.keys_values_wm_list

    @property
    def keys_values_wm_size_list(self) -> list[int]:
        """Their sizes in tokens."""
        return self.context_cache.keys_values_wm_size_list

    def retrieve_or_generate_kvcache(self, latent_state: torch.Tensor, env_ids: Sequence[int],
                                     node_ids=None) -> list[int]:
        """Find each row's past (init pool, then recurrent pool; the paged arena by node id) into
        ``keys_values_wm_list``; returns their sizes in tokens.

        A miss rebuilds the node's past from its latent alone — a context-free guess the reference
        made silently; here it is counted in ``cache_stats().fallbacks``.
        """
        self._owner.claim("retrieve_or_generate_kvcache")
        env_ids = inputs.env_ids(env_ids, len(env_ids), self.config.env_num, unique=False)
        latent = inputs.latent(latent_state, env_ids, self.config.embed_dim)
        ids = None if node_ids is None else self._node_range(node_ids, len(env_ids), low=0)
        pasts = self.context_cache.parents(latent.to(self.config.device, self.config.torch_dtype), env_ids, ids)
        self.keys_values_wm_list[:] = pasts
        self.keys_values_wm_size_list[:] = self.context_cache.sizes(pasts)
        return list(self.keys_values_wm_size_list)

    def trim_and_pad_kv_cache(self, new_tokens: int = 2) -> ContextBatch:
        """Assemble ``keys_values_wm_list`` into one batch with room for ``new_tokens`` per row."""
        self._owner.claim("trim_and_pad_kv_cache")
        return self.context_cache.assemble(list(self.keys_values_wm_list), new_tokens)

    def update_cache_context(self, batch: ContextBatch, env_ids: Sequence[int], latent_state: torch.Tensor,
                             node_ids=None, *, is_init_infer: bool) -> None:
        """Store each row's new past: roots (``is_init_infer``) start a new search, as
        ``initial_inference`` does, keyed by their latents; other nodes are the search's children
        ``node_ids``, keyed by id (paged) or by ``latent_state`` (content-keyed backends)."""
        self._owner.claim("update_cache_context")
        env_ids = inputs.env_ids(env_ids, len(env_ids), self.config.env_num, unique=is_init_infer)
        latent = inputs.latent(latent_state, env_ids, self.config.embed_dim).to(self.config.torch_dtype)
        if is_init_infer:
            self.context_cache.start_search()
            self.context_cache.store_roots(batch, env_ids, self.context_cache.root_keys_of(env_ids, latent), rebuilt=False)
            self._nodes.start(env_ids)
            return
        ids = None if node_ids is None else self._node_range(node_ids, len(env_ids), low=1)
        self.context_cache.store_nodes(batch, env_ids, latent, ids)
        if ids is not None:
            self._nodes.add(env_ids, ids)

    def clear_caches(self) -> None:
        """Empty every pool (e.g. after a weight update: stale caches would mix old and new weights).

        A search in progress keeps its node ids: its next expansions are counted fallbacks.
        """
        self._owner.check("clear_caches")
        if self.config.enable_cache_logging:
            logger.info("cache stats before clear: %s", self.cache_stats())
        self.context_cache.clear()

    def _node_range(self, node_ids, batch: int, *, low: int) -> np.ndarray:
        ids = inputs.integers(node_ids, "node_ids")
        sims = self.config.num_simulations
        if ids.size != batch or (ids.size and (ids.min() < low or ids.max() > sims)):
            raise ValueError(f"node_ids {ids.tolist()}: need {batch} ids in [{low}, {sims}]")
        return ids
