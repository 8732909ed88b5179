"""Content addressing, shared by the backends that find nodes by their latent (the seeds' way)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zerokv.model.context import CacheWork, KeyHash, NodeKey, make_keys


class ContentKeys:
    """Keys from latents: (env, epoch, exact latent bytes); node ids from the search are ignored.

    Costs one device→host copy of the latents per call (counted in ``work.host_syncs``).
    """

    key_hash: KeyHash
    work: CacheWork

    def root_keys(self, env_ids: Sequence[int], latents: torch.Tensor, epoch: int) -> list[NodeKey]:
        return make_keys(latents, env_ids, epoch, self.key_hash, self.work)

    def node_keys(self, env_ids: Sequence[int], latents: torch.Tensor, node_ids, epoch: int) -> list[NodeKey]:
        return make_keys(latents, env_ids, epoch, self.key_hash, self.work)
