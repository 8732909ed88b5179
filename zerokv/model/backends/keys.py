"""Key making, one strategy per backend: how roots and search nodes are named in its store.

* :class:`ContentKeys` (``none``, ``legacy``, ``manager``): roots and search nodes by
  :class:`~zerokv.model.context.NodeKey` (env, epoch, the latent's exact bytes), the seeds' way;
* :class:`NodeIdKeys` (``paged``): roots by ``NodeKey`` (verified on the next real step), search
  nodes by :class:`NodeRef` (env, the search's node id);
* :class:`PairedKeys` (``cache_validation_mode``): pairs of two strategies' keys, so each backend
  keeps its own addressing.

Content keys cost one device→host copy of the latents per call (counted in ``work.host_syncs``);
node ids cost nothing, but need the search's ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch

from zerokv.model.context import CacheWork, KeyHash, NodeKey, make_keys

__all__ = ["EMPTY_REF", "ContentKeys", "KeyMaker", "NodeIdKeys", "NodeRef", "PairedKeys"]


class NodeRef(NamedTuple):
    """A node addressed by id: node ``node`` of env ``env`` (``EMPTY_REF``: no node)."""

    env: int
    node: int


EMPTY_REF = NodeRef(-1, -1)  # the past of an env starting an episode


class KeyMaker(Protocol):
    """A backend's key strategy (its ``keys`` attribute); ``epoch`` separates searches."""

    def roots(self, env_ids: Sequence[int], latents: torch.Tensor, epoch: int) -> list:
        """Keys of new roots, from their latents ``(B, E)``."""
        ...

    def nodes(self, env_ids: Sequence[int], latents: torch.Tensor, node_ids: np.ndarray | None,
              epoch: int) -> list:
        """Keys of search nodes, from their latents ``(B, E)`` or the search's node ids ``[B]``."""
        ...


@dataclass(frozen=True, slots=True)
class ContentKeys:
    """Roots and nodes by content: (env, epoch, exact latent bytes); node ids are ignored."""

    key_hash: KeyHash
    work: CacheWork

    def roots(self, env_ids: Sequence[int], latents: torch.Tensor, epoch: int) -> list[NodeKey]:
        return make_keys(latents, env_ids, epoch, self.key_hash, self.work)

    def nodes(self, env_ids: Sequence[int], latents: torch.Tensor, node_ids, epoch: int) -> list[NodeKey]:
        return make_keys(latents, env_ids, epoch, self.key_hash, self.work)


@dataclass(frozen=True, slots=True)
class NodeIdKeys:
    """Roots by content (once per search; the store verifies it on the next real step), search
    nodes by the search's ids: no latent is hashed inside a search."""

    key_hash: KeyHash
    work: CacheWork

    def roots(self, env_ids: Sequence[int], latents: torch.Tensor, epoch: int) -> list[NodeKey]:
        return make_keys(latents, env_ids, epoch, self.key_hash, self.work)

    def nodes(self, env_ids: Sequence[int], latents: torch.Tensor, node_ids, epoch: int) -> list[NodeRef]:
        if node_ids is None:
            raise ValueError("the paged backend addresses nodes by id: pass node ids from the search "
                             "(recurrent_inference(..., parent_ids=, child_ids=), as zerokv.plan does)")
        return [NodeRef(e, n) for e, n in zip(env_ids, np.asarray(node_ids).tolist(), strict=True)]


@dataclass(frozen=True, slots=True)
class PairedKeys:
    """Both strategies' keys, as ``(primary, reference)`` pairs."""

    primary: KeyMaker
    reference: KeyMaker

    def roots(self, env_ids: Sequence[int], latents: torch.Tensor, epoch: int) -> list[tuple]:
        return list(zip(self.primary.roots(env_ids, latents, epoch),
                        self.reference.roots(env_ids, latents, epoch), strict=True))

    def nodes(self, env_ids: Sequence[int], latents: torch.Tensor, node_ids, epoch: int) -> list[tuple]:
        return list(zip(self.primary.nodes(env_ids, latents, node_ids, epoch),
                        self.reference.nodes(env_ids, latents, node_ids, epoch), strict=True))
