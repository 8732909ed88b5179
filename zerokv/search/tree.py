"""Numpy bookkeeping for B independent search trees (one per env), used by `mcts.muzero_search`.

All trees share one set of flat arrays with a leading batch axis, so selection and backup are
vectorised across envs. Node `k` of every tree is created by simulation `k` (the root is node
`ROOT_INDEX = 0`), which makes node ids line up across the batch and lets the model's cache
address a node by `(env, node id)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROOT_INDEX = 0
"""Node id of the root in every tree."""
UNVISITED = -1
"""`Tree.children` entry for an edge whose child node has not been created yet."""
NO_PARENT = -1
"""`Tree.parents` entry of the root."""


@dataclass(slots=True)
class Tree:
    """Flat arrays for B trees with capacity N = num_simulations + 1 nodes and A actions.

    Mutable on purpose: the search fills it in place, one node per tree per simulation.

    Attributes:
        parents: [B, N] int64, parent node id, `NO_PARENT` for the root (and for unused slots).
        action_from_parent: [B, N] int64, action on the edge parent -> node (0 for the root).
        depth: [B, N] int64, root depth is 0.
        children: [B, N, A] int64, child node id per action, `UNVISITED` if not expanded.
        prior: [B, N, A] float64, prior over the node's actions (root: masked and noised).
        reward: [B, N] float64, predicted reward on the edge parent -> node (0 for the root).
        visit_count: [B, N] int64, a node is visited once by its own expansion, then once per
            simulation whose path passes through it.
        value_sum: [B, N] float64, sum of the returns backed up into the node; the mean is the
            node's value.
        pending: [B, N] bool, linked into its tree by a multi-leaf selection but not yet
            evaluated by the model (see `muzero_search(leaves_per_call=...)`); always False
            between simulations.
    """

    parents: np.ndarray
    action_from_parent: np.ndarray
    depth: np.ndarray
    children: np.ndarray
    prior: np.ndarray
    reward: np.ndarray
    visit_count: np.ndarray
    value_sum: np.ndarray
    pending: np.ndarray

    @classmethod
    def allocate(cls, batch: int, num_nodes: int, num_actions: int) -> Tree:
        """Empty trees of `num_nodes` slots each; only the root must be set before searching."""
        b, n, a = batch, num_nodes, num_actions
        return cls(
            parents=np.full((b, n), NO_PARENT, dtype=np.int64),
            action_from_parent=np.zeros((b, n), dtype=np.int64),
            depth=np.zeros((b, n), dtype=np.int64),
            children=np.full((b, n, a), UNVISITED, dtype=np.int64),
            prior=np.zeros((b, n, a), dtype=np.float64),
            reward=np.zeros((b, n), dtype=np.float64),
            visit_count=np.zeros((b, n), dtype=np.int64),
            value_sum=np.zeros((b, n), dtype=np.float64),
            pending=np.zeros((b, n), dtype=bool),
        )

    def set_root(self, prior: np.ndarray, value: np.ndarray) -> None:
        """Root prior [B, A] and value [B]. As in mctx, the root starts with one visit carrying
        its own value prediction, so N_parent > 0 (prior term non-zero) from the first simulation
        and the search value mixes the root's own value with the backed-up returns."""
        self.prior[:, ROOT_INDEX] = prior
        self.visit_count[:, ROOT_INDEX] = 1
        self.value_sum[:, ROOT_INDEX] = value

    def link(self, rows: np.ndarray, node: np.ndarray, parent: np.ndarray, action: np.ndarray) -> None:
        """Make `node` [R] child `action` [R] of `parent` [R] in trees `rows` [R] (distinct)."""
        self.children[rows, parent, action] = node
        self.parents[rows, node] = parent
        self.action_from_parent[rows, node] = action
        self.depth[rows, node] = self.depth[rows, parent] + 1

    def add_child(
        self,
        node: int | np.ndarray,
        parent: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        prior: np.ndarray,
        rows: np.ndarray | None = None,
    ) -> None:
        """Create `node` (one id, or [R] ids) as child `action` [R] of `parent` [R] in trees
        `rows` [R] (default: every tree, R = B).

        `reward` [R] is the edge reward, `prior` [R, A] the new node's prior. The node starts
        unvisited; `backup` gives it its first visit with its predicted value.
        """
        rows = np.arange(parent.shape[0]) if rows is None else rows
        node = np.broadcast_to(np.asarray(node, dtype=np.int64), rows.shape)
        self.link(rows, node, parent, action)
        self.reward[rows, node] = reward
        self.prior[rows, node] = prior
        self.pending[rows, node] = False

    def root_child_visits(self) -> np.ndarray:
        """[B, A] int64 visit counts of the root's children (0 where not expanded)."""
        children = self.children[:, ROOT_INDEX]  # [B, A]
        visited = children != UNVISITED
        rows = np.arange(children.shape[0])[:, None]
        counts = self.visit_count[rows, np.where(visited, children, ROOT_INDEX)]
        return np.where(visited, counts, 0)


@dataclass(slots=True)
class MinMaxStats:
    """Running min / max of the Q values seen in each tree, for normalising Q to [0, 1].

    Attributes:
        minimum: [B] float64, +inf until the first update.
        maximum: [B] float64, -inf until the first update.
    """

    minimum: np.ndarray
    maximum: np.ndarray

    @classmethod
    def empty(cls, batch: int) -> MinMaxStats:
        return cls(
            minimum=np.full(batch, np.inf, dtype=np.float64),
            maximum=np.full(batch, -np.inf, dtype=np.float64),
        )

    def update(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Fold `values` [R] into the stats of trees `rows` [R] (rows must be distinct)."""
        self.minimum[rows] = np.minimum(self.minimum[rows], values)
        self.maximum[rows] = np.maximum(self.maximum[rows], values)

    def normalize(self, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Normalise `values` [R, A] with the stats of trees `rows` [R].

        As in the MuZero pseudocode, values pass through unchanged until a tree has seen two
        different Q values (max > min); there is nothing to scale by before that.
        """
        lo = self.minimum[rows][:, None]  # [R, 1]
        hi = self.maximum[rows][:, None]
        spread = hi > lo
        return np.where(spread, (values - lo) / np.where(spread, hi - lo, 1.0), values)


def softmax(logits: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Softmax over the last axis in float64; with `mask` (same shape, bool) masked entries get
    probability 0 and the rest is renormalised. A row whose unmasked logits are all -inf gets a
    uniform distribution over its unmasked entries rather than NaNs."""
    logits = np.asarray(logits, dtype=np.float64)
    allowed = np.ones(logits.shape, dtype=bool) if mask is None else mask
    masked = np.where(allowed, logits, -np.inf)
    top = masked.max(axis=-1, keepdims=True)
    weights = np.exp(masked - np.where(np.isfinite(top), top, 0.0))
    weights = np.where(np.isnan(weights), 0.0, weights)  # -inf - -inf rows
    total = weights.sum(axis=-1, keepdims=True)
    uniform = allowed / allowed.sum(axis=-1, keepdims=True)
    return np.where(total > 0, weights / np.where(total > 0, total, 1.0), uniform)


def legal_dirichlet(rng: np.random.Generator, alpha: float, legal: np.ndarray) -> np.ndarray:
    """Dirichlet(alpha) noise [B, A] over each row's legal actions, 0 on illegal ones.

    Drawn as normalised Gamma(alpha) variates so rows with different numbers of legal actions
    need no per-row loop; this is exactly Dirichlet over each row's legal subset.
    """
    gammas = rng.gamma(alpha, 1.0, size=legal.shape) * legal
    total = gammas.sum(axis=-1, keepdims=True)
    # With a tiny alpha every gamma draw of a row can underflow to 0: fall back to uniform.
    uniform = legal / legal.sum(axis=-1, keepdims=True)
    return np.where(total > 0, gammas / np.where(total > 0, total, 1.0), uniform)
