"""What every context backend shares: node keys and the cost counters.

Keys are :class:`NodeKey`: (env, search epoch, the latent's exact bytes). A lookup only hits an
entry whose key is *equal* — the hash just picks a bucket — so a colliding hash function can slow
a lookup down but never return another node's past.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

KeyHash = Callable[[int, int, bytes], int]


@dataclass(slots=True)
class CacheWork:
    """What the cache costs, accumulated by the backends and the world model (bench reads it)."""

    bytes_copied: int = 0
    """Bytes of existing keys/values (or tokens) moved while assembling batches and storing
    nodes; a new token's single write into its storage is not counted (every backend does it)."""
    host_syncs: int = 0
    """Device→host transfers (latent keys, row sizes) made for cache bookkeeping."""
    cache_seconds: float = 0.0
    """Wall time of recurrent calls in lookup, batch assembly, key making and storing."""
    forward_seconds: float = 0.0
    """Wall time of recurrent calls in the transformer forward of the new tokens and their heads."""

    def reset(self) -> None:
        self.bytes_copied = self.host_syncs = 0
        self.cache_seconds = self.forward_seconds = 0.0


def default_key_hash(env_id: int, epoch: int, payload: bytes) -> int:
    return hash((env_id, epoch, payload))


@dataclass(frozen=True, slots=True, eq=False)
class NodeKey:
    """A search node's address: env, search epoch and the exact bytes of its latent state."""

    env_id: int
    epoch: int
    payload: bytes
    hash_value: int = field(repr=False)

    def __hash__(self) -> int:
        return self.hash_value

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, NodeKey)
            and self.env_id == other.env_id
            and self.epoch == other.epoch
            and self.payload == other.payload
        )


def make_keys(
    latents: torch.Tensor, env_ids: Sequence[int], epoch: int, key_hash: KeyHash, work: CacheWork
) -> list[NodeKey]:
    """One key per row of ``latents (B, E)``: one device→host copy for the whole batch."""
    work.host_syncs += 1
    rows = latents.detach().to("cpu", torch.float32).contiguous().numpy()
    keys = []
    for env_id, row in zip(env_ids, rows, strict=True):
        payload = row.tobytes()
        keys.append(NodeKey(int(env_id), epoch, payload, key_hash(int(env_id), epoch, payload)))
    return keys


