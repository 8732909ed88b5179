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

Multi-leaf mode (`leaves_per_call=k > 1`, opt-in): each batched `recurrent_fn` call expands up
to k leaves per tree, so a call carries up to B·k rows (a CPU matmul at 32–64 rows costs little
more than at 8). The k leaves of a tree are chosen one after another with *virtual visits*: each
chosen leaf is linked into the tree as a pending node, and every node on its path gets one extra
visit that keeps its mean value (so Q is unchanged and only the exploration term shrinks,
steering the next choice elsewhere). A descent that reaches a pending node is a collision and
yields no leaf for that slot. The virtual visits are removed before the real backups. Every tree
still makes exactly `num_simulations` expansions, but a leaf is chosen without the results of the
others in its call: the search policy differs from the one-leaf search (measured by
`zerokv bench --multi-leaf`). With k = 1 the search is the standard one, bit for bit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from zerokv.search.checks import check_recurrent_output, validate_call
from zerokv.search.config import SearchConfig
from zerokv.search.records import (
    Expansion,
    RecurrentFn,
    RecurrentFnOutput,
    RootFnOutput,
    SearchOutput,
)
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
    "Expansion",
    "RecurrentFn",
    "RecurrentFnOutput",
    "RootFnOutput",
    "SearchOutput",
    "muzero_search",
]


def muzero_search(
    root: RootFnOutput,
    recurrent_fn: RecurrentFn,
    config: SearchConfig,
    *,
    rng: np.random.Generator,
    legal_actions_mask: np.ndarray | None = None,
    add_noise: bool = True,
    temperature: float = 1.0,
) -> SearchOutput:
    """Run ``config.num_simulations`` MuZero simulations in each of the B trees and pick an action.

    The knobs are ``config`` (checked when it was built); what changes per call is an argument.
    ``recurrent_fn`` gets one :class:`Expansion` per batched call and returns the new nodes'
    :class:`RecurrentFnOutput` row for row. ``legal_actions_mask`` [B, A] bool restricts the root
    only (None = all legal). ``rng`` is used for the Dirichlet noise (when ``add_noise``) and for
    sampling the action when ``temperature`` > 0 (0: the most visited action), so a fixed seed
    gives identical outputs. Runs under ``torch.no_grad()``: the search never needs gradients.
    Raises ValueError on invalid arguments or model outputs.
    """
    start = time.perf_counter()
    legal = validate_call(root, config, rng, legal_actions_mask, add_noise, temperature)
    batch, num_actions = legal.shape
    sims = config.num_simulations

    root_prior = softmax(root.policy_logits, legal)  # [B, A], 0 on illegal actions
    if add_noise:
        noise = legal_dirichlet(rng, config.dirichlet_alpha, legal)  # [B, A], 0 on illegal actions
        frac = config.exploration_fraction
        root_prior = (1.0 - frac) * root_prior + frac * noise
    tree = Tree.allocate(batch, sims + 1, num_actions)
    tree.set_root(root_prior, np.asarray(root.value, dtype=np.float64))
    stats = MinMaxStats.empty(batch)

    model_seconds, calls = 0.0, 0
    with torch.no_grad():
        # [B, N, E...] node latents, row b / slot k = node k of tree b; one slot per expansion.
        latents = root.latent.new_empty((batch, sims + 1, *root.latent.shape[1:]))
        latents[:, ROOT_INDEX] = root.latent
        created = np.zeros(batch, dtype=np.int64)  # [B] nodes created so far = newest node id
        while created.min() < sims:
            leaves = _select_leaves(tree, stats, legal, config, created)
            tree_t = torch.from_numpy(leaves.rows).to(latents.device)
            node_t = torch.from_numpy(leaves.node).to(latents.device)
            # One gather for all rows: parent latents [R, E...]. The index arrays are copied so
            # that a model keeping them cannot see the search's own arrays change.
            request = Expansion(
                parent_latent=latents[tree_t, torch.from_numpy(leaves.parent).to(latents.device)],
                action=leaves.action, parent_id=leaves.parent.copy(), child_id=leaves.node.copy(),
                tree_index=leaves.rows.copy(),
            )
            model_start = time.perf_counter()
            out = recurrent_fn(request)
            model_seconds += time.perf_counter() - model_start
            calls += 1
            reward, value, logits = check_recurrent_output(out, root.latent, num_actions, calls, len(leaves.rows))
            latents[tree_t, node_t] = out.latent.to(latents.dtype)
            tree.add_child(leaves.node, leaves.parent, leaves.action, reward, softmax(logits), rows=leaves.rows)
            for part in leaves.slots:  # each slot holds distinct trees
                _backup(tree, stats, leaves.rows[part], leaves.node[part], value[part], config.discount)

    visit_counts = tree.root_child_visits()  # [B, A]
    search_policy = (visit_counts / sims).astype(np.float32)
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
        model_calls=calls,
    )


@dataclass(frozen=True, slots=True)
class _Leaves:
    """The leaves one `recurrent_fn` call expands: R rows, grouped in slots of distinct trees."""

    rows: np.ndarray  # [R] tree of each leaf
    parent: np.ndarray  # [R] node the leaf is expanded from
    action: np.ndarray  # [R] action on the edge parent -> leaf
    node: np.ndarray  # [R] the leaf's new node id
    slots: list[slice]  # row ranges, one per selection slot; a tree appears once per slot


def _select_leaves(
    tree: Tree, stats: MinMaxStats, legal: np.ndarray, config: SearchConfig, created: np.ndarray,
) -> _Leaves:
    """Choose up to `config.leaves_per_call` leaves per tree that has budget left, link them into the
    tree as pending nodes and advance `created` [B] in place.

    Slot j descends every tree with budget left, seeing the leaves of slots < j as pending nodes
    and their paths' virtual visits; a descent that reaches a pending node yields nothing. The
    virtual visits are removed before returning (the pending marks stay until `add_child`).
    """
    saved = None
    num_simulations, leaves_per_call = config.num_simulations, config.leaves_per_call
    if leaves_per_call > 1:
        saved = tree.visit_count.copy(), tree.value_sum.copy()
    parts: list[tuple[np.ndarray, ...]] = []
    for _ in range(leaves_per_call):
        rows = np.flatnonzero(created < num_simulations)
        if rows.size == 0:
            break
        parent, action, ok = _descend(tree, stats, legal, config, rows)
        rows, parent, action = rows[ok], parent[ok], action[ok]
        if rows.size == 0:
            continue
        created[rows] += 1
        node = created[rows].copy()
        tree.link(rows, node, parent, action)
        if saved is not None:
            tree.pending[rows, node] = True
            _virtual_visit(tree, rows, node)
        parts.append((rows, parent, action, node))
    if saved is not None:
        tree.visit_count[...], tree.value_sum[...] = saved
    ends = np.cumsum([len(p[0]) for p in parts])
    slots = [slice(int(e - len(p[0])), int(e)) for e, p in zip(ends, parts, strict=True)]
    rows, parent, action, node = (np.concatenate(column) for column in zip(*parts, strict=True))
    return _Leaves(rows, parent, action, node, slots)


def _virtual_visit(tree: Tree, rows: np.ndarray, leaf: np.ndarray) -> None:
    """One mean-preserving visit on every node of the paths leaf [R] -> root of trees rows [R]
    (distinct). The pending leaf itself gets a visit with no value (it has none yet)."""
    tree.visit_count[rows, leaf] += 1
    node = tree.parents[rows, leaf]
    while rows.size:
        n = tree.visit_count[rows, node]
        tree.value_sum[rows, node] += tree.value_sum[rows, node] / n  # mean unchanged
        tree.visit_count[rows, node] = n + 1
        up = tree.parents[rows, node]
        keep = up != NO_PARENT
        rows, node = rows[keep], up[keep]


def _descend(
    tree: Tree, stats: MinMaxStats, legal: np.ndarray, config: SearchConfig, trees: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Walk trees `trees` [T] from the root by pUCT until an unexpanded edge.

    Returns (parent [T] int64, action [T] int64, ok [T] bool): the node to expand from and the
    action to take; ok is False where the walk reached a pending node (multi-leaf collision).
    Loops over depth; each step handles all still-descending trees at once.
    """
    count = trees.shape[0]
    parent = np.full(count, ROOT_INDEX, dtype=np.int64)
    action = np.zeros(count, dtype=np.int64)
    ok = np.ones(count, dtype=bool)
    walk = np.arange(count)  # [R] positions in `trees` still descending
    node = np.full(count, ROOT_INDEX, dtype=np.int64)  # [R] their current node
    while walk.size:
        rows = trees[walk]
        chosen = _select_actions(tree, stats, legal, rows, node, config)  # [R]
        child = tree.children[rows, node, chosen]  # [R]
        at_leaf = child == UNVISITED
        parent[walk[at_leaf]] = node[at_leaf]
        action[walk[at_leaf]] = chosen[at_leaf]
        on = ~at_leaf
        collided = on & tree.pending[rows, np.where(on, child, ROOT_INDEX)]
        ok[walk[collided]] = False
        on &= ~collided
        walk, node = walk[on], child[on]
    return parent, action, ok


def _select_actions(
    tree: Tree,
    stats: MinMaxStats,
    legal: np.ndarray,
    rows: np.ndarray,
    node: np.ndarray,
    config: SearchConfig,
) -> np.ndarray:
    """pUCT action [R] at node `node` [R] of trees `rows` [R]."""
    children = tree.children[rows, node]  # [R, A]
    linked = children != UNVISITED
    row_col = rows[:, None]  # [R, 1] broadcasts against children
    safe_children = np.where(linked, children, ROOT_INDEX)  # any valid index; masked below
    # A pending child (multi-leaf) has a virtual visit but no value yet: it counts in the
    # exploration term and scores Q like an unexpanded child.
    expanded = linked & ~tree.pending[row_col, safe_children]
    child_visits = np.where(linked, tree.visit_count[row_col, safe_children], 0)  # [R, A]
    child_value = tree.value_sum[row_col, safe_children] / np.maximum(child_visits, 1)
    q = tree.reward[row_col, safe_children] + config.discount * child_value  # [R, A]
    if config.unvisited_q == "zero":
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
    pb_c = config.pb_c_init + np.log((parent_visits + config.pb_c_base + 1.0) / config.pb_c_base)
    prior_scale = (np.sqrt(parent_visits) * pb_c)[:, None]  # [R, 1]
    prior_score = tree.prior[rows, node] * prior_scale / (1.0 + child_visits)  # [R, A]

    score = value_score + prior_score
    # Illegal actions are only constrained at the root (all actions are legal inside the tree).
    illegal = (node == ROOT_INDEX)[:, None] & ~legal[rows]
    score = np.where(illegal, -np.inf, score)
    return np.argmax(score, axis=1)  # argmax breaks ties by the lowest action index


def _backup(
    tree: Tree, stats: MinMaxStats, rows: np.ndarray, leaf: np.ndarray, leaf_value: np.ndarray,
    discount: float,
) -> None:
    """Back `leaf_value` [R] up from nodes `leaf` [R] of trees `rows` [R] (distinct) to the roots.

    G starts at the leaf's predicted value; each node on the path adds G to its value sum and
    one visit, then G = reward(edge into node) + discount * G for its parent.
    """
    node = leaf.astype(np.int64)  # [R]; rows: trees whose walk has not reached the root
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
