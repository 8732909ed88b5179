"""The search's typed boundary with its model and its caller (in the spirit of mctx's records).

B is the number of trees (one per env), A the number of actions, E... the latent's shape, and R
the rows of one model call: one per tree in the standard search, up to B·leaves_per_call in
multi-leaf mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Expansion", "RecurrentFn", "RecurrentFnOutput", "RootFnOutput", "SearchOutput"]


@dataclass(frozen=True, slots=True)
class RootFnOutput:
    """Model output at the roots of the B trees.

    Attributes:
        value: [B] float32, scalar value prediction at the root.
        policy_logits: [B, A] float32.
        latent: [B, E...] root latent states, kept on the model's device.
    """

    value: np.ndarray
    policy_logits: np.ndarray
    latent: torch.Tensor


@dataclass(frozen=True, slots=True)
class Expansion:
    """One batched model call of a search: R new nodes, each one action below an evaluated node.

    Node ids are per tree: the root is ``ROOT_INDEX = 0`` and a tree's nodes are numbered
    1, 2, … in creation order, each created once, so ``(tree_index, child_id)`` names a node for
    the whole search and ``parent_id`` always names a node an earlier call returned. In the
    standard search (``leaves_per_call = 1``) row r is tree r (``tree_index = arange(B)``) and
    call k creates node k in every tree; in multi-leaf mode a tree can have several rows.

    Attributes:
        parent_latent: [R, E...] latent state of each row's parent node (the model's device).
        action: [R] int64, the action taken from the parent ([R, D] float32 vectors in a continuous
            search's requests to the model, see ``zerokv.search.sampled``).
        parent_id: [R] int64, the parent's node id in its tree.
        child_id: [R] int64, the new node's id in its tree.
        tree_index: [R] int64, the tree (root row of ``RootFnOutput``) each row belongs to.
    """

    parent_latent: torch.Tensor
    action: np.ndarray
    parent_id: np.ndarray
    child_id: np.ndarray
    tree_index: np.ndarray


@dataclass(frozen=True, slots=True)
class RecurrentFnOutput:
    """Model output for the R new nodes of one ``Expansion``, row for row.

    Attributes:
        reward: [R] float32, predicted reward of the transition parent --action--> child.
        value: [R] float32, value prediction at the child.
        policy_logits: [R, A] float32, the child's policy logits.
        latent: [R, E...] child latent states.
    """

    reward: np.ndarray
    value: np.ndarray
    policy_logits: np.ndarray
    latent: torch.Tensor


RecurrentFn = Callable[[Expansion], RecurrentFnOutput]
"""The search's model interface: ``recurrent_fn(request: Expansion) -> RecurrentFnOutput``."""


@dataclass(frozen=True, slots=True)
class SearchOutput:
    """Result of ``muzero_search`` for B envs and A actions.

    Attributes:
        action: [B] int64, chosen action per env.
        visit_counts: [B, A] int64, root children visit counts (each row sums to
            num_simulations).
        root_value: [B] float32, search value of the root: mean of the root's own value
            prediction and the num_simulations backed-up returns.
        search_policy: [B, A] float32, visit distribution (training policy target), zero on
            illegal actions.
        model_seconds: wall time spent inside ``recurrent_fn``.
        bookkeeping_seconds: wall time of everything else (selection, backup, noise, ...).
        max_depth: depth of the deepest node created (root children have depth 1).
        model_calls: ``recurrent_fn`` calls made (num_simulations with one leaf per call).
    """

    action: np.ndarray
    visit_counts: np.ndarray
    root_value: np.ndarray
    search_policy: np.ndarray
    model_seconds: float
    bookkeeping_seconds: float
    max_depth: int
    model_calls: int
