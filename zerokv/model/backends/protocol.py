"""The seam between the world model and its caches: what every context backend provides.

A backend keeps each node's *past* — what a new token of that node must attend to — in its own
form (its ``Past`` type) under its own keys (its ``Key`` type):

==============  =========================================  ===============================
backend         Past                                       Key (roots / search nodes)
==============  =========================================  ===============================
``none``        :class:`TokenHistory` (input tokens)       NodeKey / NodeKey
``legacy``      :class:`~zerokv.cache.KeysValues`          NodeKey / NodeKey
``manager``     :class:`~zerokv.cache.KeysValues`          NodeKey / NodeKey
``paged``       ``NodeRef`` (env, node) in the arena       NodeKey / NodeRef
validation      :class:`PastPair` (primary, reference)     pairs of both backends' keys
==============  =========================================  ===============================

Keys are made by the backend's key strategy (``keys``, :mod:`zerokv.model.backends.keys`). The
world model never sees a Past's inside: it hands pasts back to the backend that made them
(``assemble``) and runs tokens on the batch it gets — each backend's own batch type (its ``Batch``,
a :class:`ContextBatch`), which only that backend's ``store_*`` reads back. Counting — node hits,
misses, context-free fallbacks — is the cache layer's (:class:`~zerokv.model.context_cache.ContextCache`),
done once for every backend; a backend's ``store`` reports only its own storage
(:class:`~zerokv.cache.protocol.StatsSource`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch

from zerokv.cache.protocol import RootRows, StatsSource
from zerokv.model.backends.keys import KeyMaker

__all__ = ["ContextBackend", "ContextBatch", "PastPair", "RootSnapshots"]

Past = TypeVar("Past")
Key = TypeVar("Key")


class PastPair(NamedTuple):
    """A validation-mode past: the primary backend's and the recompute reference's."""

    primary: object
    reference: object


@runtime_checkable
class ContextBatch(Protocol):
    """The pasts of one forward's B rows (the seeds' "WM cache"), and how to run new tokens on them."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens (B, t, E)`` → hidden states ``(B, t, E)``; the tokens join the rows' context."""
        ...


Batch = TypeVar("Batch", bound=ContextBatch)


@runtime_checkable
class ContextBackend(Protocol[Key, Past, Batch]):
    """How a node gets its past; chosen once, by :func:`~zerokv.model.backends.make_backend`.

    Lookups and ``generate`` return one entry per row, in order. A fifth backend implements
    these members and nothing else; only :class:`~zerokv.model.context_cache.ContextCache` calls them.
    """

    name: str
    """Backend name in ``cache_stats()`` ("paged", "manager+validation", …)."""
    store: StatsSource
    """The storage (what ``WorldModel.kv_cache_manager`` returns): live size, bytes, summary."""
    keys: KeyMaker
    """How roots and search nodes are named (content keys or node ids)."""

    def lookup_roots(self, env_ids: Sequence[int], keys: Sequence[Key | None]) -> list[Past | None]:
        """The stored past of each env's previous root (None: not found, or a None key)."""
        ...

    def lookup_nodes(self, env_ids: Sequence[int], keys: Sequence[Key]) -> list[Past | None]:
        """The stored past of each search node (None: not found)."""
        ...

    def generate(self, latents: torch.Tensor, env_ids: Sequence[int], keys: Sequence[Key]) -> list[Past]:
        """Context-free one-token pasts from latents ``(n, E)``, for nodes whose past is lost."""
        ...

    def sizes(self, pasts: Sequence[Past]) -> list[int]:
        """Tokens in each past (the seeds' ``keys_values_wm_size_list``)."""
        ...

    def assemble(self, pasts: Sequence[Past | None], new_tokens: int) -> Batch:
        """One batch of the pasts (None: an env starting an episode, no past), with room for
        ``new_tokens`` per row."""
        ...

    def store_roots(self, batch: Batch, env_ids: Sequence[int], keys: Sequence[Key]) -> None:
        """Keep each row's context (past + new tokens) as its env's root, under ``keys``."""
        ...

    def store_nodes(self, batch: Batch, env_ids: Sequence[int], keys: Sequence[Key]) -> None:
        """Keep each row's context as a search node's past, under ``keys``."""
        ...

    def clear(self) -> None:
        """Drop every stored past."""
        ...


@runtime_checkable
class RootSnapshots(Protocol):
    """A backend whose root contexts can be copied out and written back exactly (cache snapshots,
    :mod:`zerokv.model.snapshot`); only "paged" provides it."""

    def export_roots(self, env_ids: np.ndarray) -> RootRows:
        """Copies of the stored root contexts of ``env_ids`` (each must have one)."""
        ...

    def import_roots(self, roots: RootRows) -> None:
        """Store exported roots again, bit for bit (each starts a new search for its env)."""
        ...
