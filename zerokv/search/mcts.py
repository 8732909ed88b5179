"""Batched MuZero MCTS over B independent trees, in the spirit of DeepMind mctx's `muzero_policy`.

Tree bookkeeping is numpy (see `tree.py`); the model is a callable. Every simulation descends
all B trees at once (a loop over depth, vectorised over envs), then makes exactly one batched
`recurrent_fn` call that expands one new leaf per env, then backs the leaf values up.

Conventions (MuZero pseudocode unless noted):
- Root prior: softmax of the root logits restricted to the legal actions, mixed with
  Dirichlet(alpha) noise over the legal actions when `add_noise`. Inside the tree every action
  is legal and the prior is the plain softmax.
- pUCT: Q_norm + prior * sqrt(N_parent) / (1 + N_child) * (c_init + log((N_parent + c_base + 1)
  / c_base)), with Q = reward + discount * mean value of the child, min-max normalised per tree.
- Q of an unexpanded child (`unvisited_q`; every expanded child has been visited):
  - "parent" (default; LightZero / EfficientZero ctree): the parent's mean Q over its visited
    children, (sum over visited children c of reward_c + discount * mean value_c) / (number of
    visited children), min-max normalised like any other Q. While a node has no visited child
    it uses the node's own value estimate instead (its mean value, i.e. its value prediction,
    as mctx's `qtransform_by_parent_and_siblings` does); all its children then share that
    score, so the prior alone decides. Unlike LightZero, the parent's own Q is not mixed into
    the mean below the root. An untried action thus looks as good as an average tried one, so
    a prior favouring a poor action cannot soak up all the visits at low simulation counts.
  - "zero" (MuZero pseudocode): a normalised Q of 0, so exploration of new actions is driven
    by the prior term only (very greedy when the prior is wrong).
- The min-max stats are updated during backup with the Q of every edge on the path
  (reward + discount * child value, as in EfficientZero / LightZero; the pseudocode's
  `node.value()` would mix values and Q values in one range).
- As in mctx, the root starts with one visit carrying its own value prediction: N_parent is
  1 + (sum of the root children's visits), so the very first simulation already follows the
  prior instead of tie-breaking on all-zero scores, and `root_value` is the mean of the root's
  value and the `num_simulations` backed-up returns.
- Ties in the selection and in the temperature-0 action are broken by the lowest action index.
- Single-player values (no sign flip between plies).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from zerokv.search.tree import (
    NO_PARENT,
    ROOT_INDEX,
    UNVISITED,
    MinMaxStats,
    Tree,
    legal_dirichlet,
    softmax,
)

__all__ = [
    "NO_PARENT",
    "ROOT_INDEX",
    "UNVISITED",
    "RecurrentFn",
    "RecurrentFnOutput",
    "RootFnOutput",
    "SearchOutput",
    "muzero_search",
]


@dataclass(frozen=True, slots=True)
class RootFnOutput:
    """Model output at the roots of the B trees.

    Attributes:
        value: [B] float32, scalar value prediction at the root.
        policy_logits: [B, A] float32.
        latent: [B, E] root latent states, kept on the model's device.
    """

    value: np.ndarray
    policy_logits: np.ndarray
    latent: torch.Tensor


@dataclass(frozen=True, slots=True)
class RecurrentFnOutput:
    """Model output for one new child per tree.

    Attributes:
        reward: [B] float32, predicted reward of the transition parent --action--> child.
        value: [B] float32, value prediction at the child.
        policy_logits: [B, A] float32, the child's policy logits.
        latent: [B, E] child latent states.
    """

    reward: np.ndarray
    value: np.ndarray
    policy_logits: np.ndarray
    latent: torch.Tensor


RecurrentFn = Callable[[torch.Tensor, np.ndarray, np.ndarray, np.ndarray], RecurrentFnOutput]
"""`recurrent_fn(parent_latent [B, E], action [B] int64, parent_id [B] int64, child_id [B]
int64) -> RecurrentFnOutput`. Node ids are per-tree: the root is `ROOT_INDEX = 0` and
simulation k (1-based) creates node k in every tree, so `child_id` is k for all rows and
`parent_id` always names a node created earlier."""


@dataclass(frozen=True, slots=True)
class SearchOutput:
    """Result of `muzero_search` for B envs and A actions.

    Attributes:
        action: [B] int64, chosen action per env.
        visit_counts: [B, A] int64, root children visit counts (each row sums to
            num_simulations).
        root_value: [B] float32, search value of the root: mean of the root's own value
            prediction and the num_simulations backed-up returns.
        search_policy: [B, A] float32, visit distribution (training policy target), zero on
            illegal actions.
        model_seconds: wall time spent inside `recurrent_fn`.
        bookkeeping_seconds: wall time of everything else (selection, backup, noise, ...).
        max_depth: depth of the deepest node created (root children have depth 1).
    """

    action: np.ndarray
    visit_counts: np.ndarray
    root_value: np.ndarray
    search_policy: np.ndarray
    model_seconds: float
    bookkeeping_seconds: float
    max_depth: int


UNVISITED_Q_MODES = ("parent", "zero")
"""Allowed values of `muzero_search(unvisited_q=...)`."""


@dataclass(frozen=True, slots=True)
class _PuctConstants:
    discount: float
    pb_c_base: float
    pb_c_init: float
    unvisited_q: str


def muzero_search(
    root: RootFnOutput,
    recurrent_fn: RecurrentFn,
    *,
    num_simulations: int,
    rng: np.random.Generator,
    legal_actions_mask: np.ndarray | None = None,
    discount: float = 0.997,
    pb_c_base: float = 19652.0,
    pb_c_init: float = 1.25,
    dirichlet_alpha: float = 0.3,
    exploration_fraction: float = 0.25,
    add_noise: bool = True,
    temperature: float = 1.0,
    unvisited_q: str = "parent",
) -> SearchOutput:
    """Run `num_simulations` MuZero simulations in each of the B trees and pick an action.

    `legal_actions_mask` [B, A] bool restricts the root only (None = all legal). `rng` is used
    for the Dirichlet noise and for sampling the action when temperature > 0, so a fixed seed
    gives identical outputs. `unvisited_q` ("parent" or "zero") sets the Q an unexpanded child
    scores in pUCT (see the module docstring). Runs under `torch.no_grad()`: the search never
    needs gradients. Raises ValueError on invalid arguments.
    """
    start = time.perf_counter()
    legal = _validate(
        root,
        num_simulations,
        rng,
        legal_actions_mask,
        discount,
        pb_c_base,
        pb_c_init,
        dirichlet_alpha,
        exploration_fraction,
        add_noise,
        temperature,
        unvisited_q,
    )
    batch, num_actions = legal.shape
    consts = _PuctConstants(float(discount), float(pb_c_base), float(pb_c_init), unvisited_q)

    root_prior = softmax(root.policy_logits, legal)  # [B, A], 0 on illegal actions
    if add_noise:
        noise = legal_dirichlet(rng, dirichlet_alpha, legal)  # [B, A], 0 on illegal actions
        root_prior = (1.0 - exploration_fraction) * root_prior + exploration_fraction * noise
    tree = Tree.allocate(batch, num_simulations + 1, num_actions)
    tree.set_root(root_prior, np.asarray(root.value, dtype=np.float64))
    stats = MinMaxStats.empty(batch)

    model_seconds = 0.0
    with torch.no_grad():
        # [B, N, E...] node latents, row b / slot k = node k of tree b; filled one slot per sim.
        latents = root.latent.new_empty((batch, num_simulations + 1, *root.latent.shape[1:]))
        latents[:, ROOT_INDEX] = root.latent
        env_index = torch.arange(batch, device=latents.device)  # [B]
        for sim in range(1, num_simulations + 1):
            parent, action = _descend(tree, stats, legal, consts)  # [B], [B]
            # One gather for all envs: parent latents [B, E...].
            parent_latent = latents[env_index, torch.from_numpy(parent).to(latents.device)]
            child_id = np.full(batch, sim, dtype=np.int64)
            model_start = time.perf_counter()
            out = recurrent_fn(parent_latent, action, parent.copy(), child_id)
            model_seconds += time.perf_counter() - model_start
            reward, value, logits = _check_recurrent_output(out, root.latent, num_actions, sim)
            latents[:, sim] = out.latent
            tree.add_child(sim, parent, action, reward, softmax(logits))
            _backup(tree, stats, sim, value, consts.discount)

    visit_counts = tree.root_child_visits()  # [B, A]
    search_policy = (visit_counts / num_simulations).astype(np.float32)
    root_value = tree.value_sum[:, ROOT_INDEX] / tree.visit_count[:, ROOT_INDEX]
    chosen = _choose_action(visit_counts, temperature, rng)
    total_seconds = time.perf_counter() - start
    return SearchOutput(
        action=chosen,
        visit_counts=visit_counts,
        root_value=root_value.astype(np.float32),
        search_policy=search_policy,
        model_seconds=model_seconds,
        bookkeeping_seconds=max(total_seconds - model_seconds, 0.0),
        max_depth=int(tree.depth.max()),
    )


def _descend(
    tree: Tree, stats: MinMaxStats, legal: np.ndarray, consts: _PuctConstants
) -> tuple[np.ndarray, np.ndarray]:
    """Walk every tree from the root by pUCT until an unexpanded edge.

    Returns (parent [B] int64, action [B] int64): the node to expand from and the action to
    take. Loops over depth; each step handles all still-descending trees at once.
    """
    batch = legal.shape[0]
    parent = np.full(batch, ROOT_INDEX, dtype=np.int64)
    action = np.zeros(batch, dtype=np.int64)
    rows = np.arange(batch)  # [R] trees still descending
    node = np.full(batch, ROOT_INDEX, dtype=np.int64)  # [R] their current node
    while rows.size:
        chosen = _select_actions(tree, stats, legal, rows, node, consts)  # [R]
        child = tree.children[rows, node, chosen]  # [R]
        at_leaf = child == UNVISITED
        parent[rows[at_leaf]] = node[at_leaf]
        action[rows[at_leaf]] = chosen[at_leaf]
        rows, node = rows[~at_leaf], child[~at_leaf]
    return parent, action


def _select_actions(
    tree: Tree,
    stats: MinMaxStats,
    legal: np.ndarray,
    rows: np.ndarray,
    node: np.ndarray,
    consts: _PuctConstants,
) -> np.ndarray:
    """pUCT action [R] at node `node` [R] of trees `rows` [R]."""
    children = tree.children[rows, node]  # [R, A]
    expanded = children != UNVISITED
    row_col = rows[:, None]  # [R, 1] broadcasts against children
    safe_children = np.where(expanded, children, ROOT_INDEX)  # any valid index; masked below
    child_visits = np.where(expanded, tree.visit_count[row_col, safe_children], 0)  # [R, A]
    child_value = tree.value_sum[row_col, safe_children] / np.maximum(child_visits, 1)
    q = tree.reward[row_col, safe_children] + consts.discount * child_value  # [R, A]
    if consts.unvisited_q == "zero":
        # Unexpanded children score Q_norm = 0 (MuZero pseudocode).
        value_score = np.where(expanded, stats.normalize(rows, q), 0.0)
    else:
        # Unexpanded children get the parent's mean Q over its visited (= expanded) children,
        # or the parent's own mean value while it has none; then normalised like any Q.
        num_visited = expanded.sum(axis=1)  # [R]
        mean_q = np.where(expanded, q, 0.0).sum(axis=1) / np.maximum(num_visited, 1)  # [R]
        parent_value = tree.value_sum[rows, node] / tree.visit_count[rows, node]  # [R]
        fill_q = np.where(num_visited > 0, mean_q, parent_value)  # [R]
        value_score = stats.normalize(rows, np.where(expanded, q, fill_q[:, None]))

    parent_visits = tree.visit_count[rows, node].astype(np.float64)  # [R]
    pb_c = consts.pb_c_init + np.log((parent_visits + consts.pb_c_base + 1.0) / consts.pb_c_base)
    prior_scale = (np.sqrt(parent_visits) * pb_c)[:, None]  # [R, 1]
    prior_score = tree.prior[rows, node] * prior_scale / (1.0 + child_visits)  # [R, A]

    score = value_score + prior_score
    # Illegal actions are only constrained at the root (all actions are legal inside the tree).
    illegal = (node == ROOT_INDEX)[:, None] & ~legal[rows]
    score = np.where(illegal, -np.inf, score)
    return np.argmax(score, axis=1)  # argmax breaks ties by the lowest action index


def _backup(
    tree: Tree, stats: MinMaxStats, leaf: int, leaf_value: np.ndarray, discount: float
) -> None:
    """Back `leaf_value` [B] up from node `leaf` of every tree to its root.

    G starts at the leaf's predicted value; each node on the path adds G to its value sum and
    one visit, then G = reward(edge into node) + discount * G for its parent.
    """
    rows = np.arange(leaf_value.shape[0])  # [R] trees whose walk has not reached the root
    node = np.full(rows.shape, leaf, dtype=np.int64)  # [R]
    ret = leaf_value.astype(np.float64)  # [R] return seen from `node`
    while rows.size:
        tree.value_sum[rows, node] += ret  # rows are distinct, so fancy += is safe
        tree.visit_count[rows, node] += 1
        reward = tree.reward[rows, node]
        parent = tree.parents[rows, node]
        has_parent = parent != NO_PARENT
        q = reward + discount * tree.value_sum[rows, node] / tree.visit_count[rows, node]
        stats.update(rows[has_parent], q[has_parent])  # the root has no incoming edge / Q
        ret = reward + discount * ret
        rows, node, ret = rows[has_parent], parent[has_parent], ret[has_parent]


def _choose_action(
    visit_counts: np.ndarray, temperature: float, rng: np.random.Generator
) -> np.ndarray:
    """[B] int64 action: argmax of counts at temperature 0, else a sample ~ counts**(1/T)."""
    if temperature == 0.0:
        return np.argmax(visit_counts, axis=1).astype(np.int64)
    # counts**(1/T) in log space so small temperatures cannot overflow; 0 visits -> weight 0.
    # (log c - log c_max) / T is <= 0 before dividing, so even a tiny T gives no inf - inf.
    log_counts = np.log(np.maximum(visit_counts, 1))  # [B, A]
    log_w = (log_counts - log_counts.max(axis=1, keepdims=True)) / temperature
    weights = np.where(visit_counts > 0, np.exp(log_w), 0.0)  # [B, A], max weight 1
    cdf = np.cumsum(weights, axis=1)  # [B, A]
    threshold = rng.random(visit_counts.shape[0])[:, None] * cdf[:, -1:]  # [B, 1] in [0, total)
    # First index whose cdf exceeds the threshold; it always has a positive weight.
    return np.argmax(cdf > threshold, axis=1).astype(np.int64)


def _validate(
    root: RootFnOutput,
    num_simulations: int,
    rng: np.random.Generator,
    legal_actions_mask: np.ndarray | None,
    discount: float,
    pb_c_base: float,
    pb_c_init: float,
    dirichlet_alpha: float,
    exploration_fraction: float,
    add_noise: bool,
    temperature: float,
    unvisited_q: str,
) -> np.ndarray:
    """Check the arguments of `muzero_search`; return the legal mask [B, A] bool."""
    if not (isinstance(unvisited_q, str) and unvisited_q in UNVISITED_Q_MODES):
        raise ValueError(f"unvisited_q must be one of {UNVISITED_Q_MODES}, got {unvisited_q!r}")
    if isinstance(num_simulations, bool) or not isinstance(num_simulations, (int, np.integer)):
        raise ValueError(f"num_simulations must be an int >= 1, got {num_simulations!r}")
    if num_simulations < 1:
        raise ValueError(f"num_simulations must be >= 1, got {num_simulations}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    logits = np.asarray(root.policy_logits)
    if logits.ndim != 2 or logits.shape[0] < 1 or logits.shape[1] < 1:
        raise ValueError(
            f"root.policy_logits must have shape [B, A] with B, A >= 1, got shape {logits.shape}"
        )
    batch, num_actions = logits.shape
    value_shape = np.shape(root.value)
    if value_shape != (batch,):
        raise ValueError(f"root.value must have shape [B] = ({batch},), got {value_shape}")
    if not isinstance(root.latent, torch.Tensor):
        raise ValueError(f"root.latent must be a torch.Tensor, got {type(root.latent).__name__}")
    if root.latent.ndim < 2 or root.latent.shape[0] != batch:
        raise ValueError(
            f"root.latent must have shape [B, E] with B = {batch}, got {tuple(root.latent.shape)}"
        )
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if not 0.0 <= discount <= 1.0:
        raise ValueError(f"discount must be in [0, 1], got {discount}")
    if not pb_c_base > 0:
        raise ValueError(f"pb_c_base must be > 0, got {pb_c_base}")
    if not (math.isfinite(pb_c_init) and pb_c_init >= 0):
        raise ValueError(f"pb_c_init must be a finite number >= 0, got {pb_c_init}")
    if add_noise:
        if not (math.isfinite(dirichlet_alpha) and dirichlet_alpha > 0):
            raise ValueError(f"dirichlet_alpha must be a finite number > 0, got {dirichlet_alpha}")
        if not 0.0 <= exploration_fraction <= 1.0:
            raise ValueError(f"exploration_fraction must be in [0, 1], got {exploration_fraction}")

    if legal_actions_mask is None:
        return np.ones((batch, num_actions), dtype=bool)
    legal = np.asarray(legal_actions_mask)
    if legal.shape != (batch, num_actions):
        raise ValueError(
            f"legal_actions_mask must have shape [B, A] = ({batch}, {num_actions}), "
            f"got {legal.shape}"
        )
    if legal.dtype != np.bool_:
        raise ValueError(f"legal_actions_mask must have dtype bool, got {legal.dtype}")
    no_legal = np.flatnonzero(~legal.any(axis=1))
    if no_legal.size:
        raise ValueError(
            f"every row of legal_actions_mask needs at least one legal action; "
            f"rows {no_legal.tolist()} have none"
        )
    return legal


def _check_recurrent_output(
    out: RecurrentFnOutput, root_latent: torch.Tensor, num_actions: int, sim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shape/finiteness checks of one `recurrent_fn` result; returns (reward [B], value [B],
    policy_logits [B, A]) as float64 arrays."""
    batch = root_latent.shape[0]
    reward = np.asarray(out.reward, dtype=np.float64)
    value = np.asarray(out.value, dtype=np.float64)
    logits = np.asarray(out.policy_logits, dtype=np.float64)
    where = f"recurrent_fn output at simulation {sim}"
    if reward.shape != (batch,) or value.shape != (batch,):
        raise ValueError(
            f"{where}: reward and value must have shape ({batch},), "
            f"got {reward.shape} and {value.shape}"
        )
    if logits.shape != (batch, num_actions):
        raise ValueError(
            f"{where}: policy_logits must have shape ({batch}, {num_actions}), got {logits.shape}"
        )
    if tuple(out.latent.shape) != tuple(root_latent.shape):
        raise ValueError(
            f"{where}: latent must have the root latent's shape "
            f"{tuple(root_latent.shape)}, got {tuple(out.latent.shape)}"
        )
    if not (np.isfinite(reward).all() and np.isfinite(value).all()):
        raise ValueError(
            f"{where}: reward and value must be finite, got reward={reward}, value={value}"
        )
    return reward, value, logits
