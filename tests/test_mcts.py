"""Tests of the batched MuZero search on hand-sized problems with exact answers."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zerokv.search import (
    ROOT_INDEX,
    Expansion,
    RecurrentFnOutput,
    RootFnOutput,
    SearchConfig,
    SearchOutput,
    muzero_search,
    plan,
)

# ---------------------------------------------------------------------------------------------
# Tiny models


def make_root(batch: int, num_actions: int, logits=None, value=None, latent=None) -> RootFnOutput:
    logits = np.zeros((batch, num_actions), np.float32) if logits is None else logits
    value = np.zeros(batch, np.float32) if value is None else value
    latent = torch.zeros(batch, 1) if latent is None else latent
    return RootFnOutput(
        value=np.asarray(value, np.float32),
        policy_logits=np.asarray(logits, np.float32),
        latent=latent,
    )


def bandit_fn(rewards: np.ndarray):
    """Depth-1 bandit: action a at the root pays rewards[b, a] in tree b; everything else pays
    0, values 0. rewards: [B, A]. Uses parent_id to know whether the parent is the root."""

    def fn(request: Expansion):
        rows, num_actions = request.action.shape[0], rewards.shape[1]
        at_root = request.parent_id == ROOT_INDEX
        reward = np.where(at_root, rewards[request.tree_index, request.action], 0.0)
        return RecurrentFnOutput(
            reward=reward.astype(np.float32),
            value=np.zeros(rows, np.float32),
            policy_logits=np.zeros((rows, num_actions), np.float32),
            latent=request.parent_latent.clone(),
        )

    return fn


# 3-state deterministic MDP, 2 actions. State 0 = start, 1 = absorbing sink, 2 = detour.
# From 0: action 0 pays 1 and falls into the sink (the lure); action 1 pays 0 and goes to the
# detour, from which any action pays 10 and goes to the sink. The sink pays 0 forever.
MDP_NEXT = np.array([[1, 2], [1, 1], [1, 1]])  # [state, action] -> next state
MDP_REWARD = np.array([[1.0, 0.0], [0.0, 0.0], [10.0, 10.0]])  # [state, action] -> reward


def mdp_fn(request: Expansion):
    """Latent [R, 1] holds the state id; values 0, the prior prefers action 0 everywhere."""
    state = request.parent_latent[:, 0].long().numpy()
    rows = state.shape[0]
    return RecurrentFnOutput(
        reward=MDP_REWARD[state, request.action].astype(np.float32),
        value=np.zeros(rows, np.float32),
        policy_logits=np.tile(np.array([2.0, 0.0], np.float32), (rows, 1)),
        latent=torch.from_numpy(MDP_NEXT[state, request.action]).float()[:, None],
    )


def hashed_fn(num_actions: int, calls: list | None = None):
    """Deterministic pseudo-random model of (tree, parent, action); the child latent is its node
    id, so the test can check that parent latents are gathered from the right slot. Optionally
    records every request."""

    def fn(request: Expansion):
        if calls is not None:
            calls.append(request)
        seed = (request.parent_id * 1000003 + request.action * 7919 + request.tree_index * 104729) % 2**32
        gens = [np.random.default_rng(int(s)) for s in seed]
        return RecurrentFnOutput(
            reward=np.array([g.normal() for g in gens], np.float32),
            value=np.array([g.normal() for g in gens], np.float32),
            policy_logits=np.stack([g.normal(size=num_actions) for g in gens]).astype(np.float32),
            latent=torch.from_numpy(request.child_id.astype(np.float32))[:, None],
        )

    return fn


CONFIG_FIELDS = {f.name for f in dataclasses.fields(SearchConfig)}


def run(root, fn, sims, **kwargs) -> SearchOutput:
    """``muzero_search`` with ``sims`` simulations; keyword arguments that name a SearchConfig
    field go to the config, the rest to the call."""
    kwargs.setdefault("rng", np.random.default_rng(0))
    knobs = {k: kwargs.pop(k) for k in list(kwargs) if k in CONFIG_FIELDS}
    return muzero_search(root, fn, SearchConfig(num_simulations=sims, **knobs), **kwargs)


# ---------------------------------------------------------------------------------------------
# Exact answers


def test_bandit_three_simulations_exact():
    """Hand-computed: uniform prior, rewards [0.1, 0.9, 0.5].

    sim 1: all children unexpanded, equal prior scores -> action 0 (lowest index); Q0 = 0.1.
    sim 2: stats min == max, so Q0 stays raw 0.1; 0.1 + p*sqrt(2)/2*c < p*sqrt(2)*c -> action 1.
    sim 3: Q normalised to [0, 1]: action 1 scores 1 + p*sqrt(3)/2*c > action 2 p*sqrt(3)*c,
           so the search goes below action 1 and expands its child (reward 0, value 0).
    Root value = mean(root value 0, returns 0.1, 0.9, 0.9 + 0.997 * 0) = 0.475.
    (Unexpanded children score Q_norm = 0 here: unvisited_q="zero".)
    """
    rewards = np.array([[0.1, 0.9, 0.5]])
    out = run(
        make_root(1, 3),
        bandit_fn(rewards),
        3,
        add_noise=False,
        temperature=0.0,
        unvisited_q="zero",
    )
    np.testing.assert_array_equal(out.visit_counts, [[1, 2, 0]])
    np.testing.assert_allclose(out.search_policy, [[1 / 3, 2 / 3, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(out.root_value, [0.475], rtol=1e-6)
    assert out.action.tolist() == [1]
    assert out.max_depth == 2
    assert out.action.dtype == np.int64 and out.visit_counts.dtype == np.int64
    assert out.root_value.dtype == np.float32 and out.search_policy.dtype == np.float32


def test_bandit_best_action_wins():
    rewards = np.array([[0.2, 0.5, 1.0, 0.1]])
    out = run(make_root(1, 4), bandit_fn(rewards), 60, add_noise=False, temperature=0.0)
    assert out.action.tolist() == [2]
    assert out.visit_counts[0].argmax() == 2
    assert out.visit_counts[0, 2] > out.visit_counts[0].sum() / 2


@pytest.mark.parametrize("leaves", [2, 4, 64])
def test_multi_leaf_expands_every_node_once_from_evaluated_parents(leaves):
    calls: list = []
    batch, num_actions, sims = 3, 3, 20
    out = run(make_root(batch, num_actions), hashed_fn(num_actions, calls), sims, leaves_per_call=leaves)
    assert out.model_calls == len(calls) and math.ceil(sims / leaves) <= len(calls) < sims
    evaluated = [{ROOT_INDEX} for _ in range(batch)]  # per tree: nodes the model has returned
    edges: list[set] = [set() for _ in range(batch)]
    for request in calls:
        latent, action, parent, child, tree = (request.parent_latent, request.action, request.parent_id,
                                               request.child_id, request.tree_index)
        assert len(tree) <= batch * leaves and np.bincount(tree, minlength=batch).max() <= leaves
        for b, p, a, c in zip(tree.tolist(), parent.tolist(), action.tolist(), child.tolist(), strict=True):
            assert p in evaluated[b], "a leaf's parent was evaluated by an earlier call"
            assert c not in evaluated[b] and (p, a) not in edges[b]
            edges[b].add((p, a))
        np.testing.assert_array_equal(latent[:, 0].numpy(), parent.astype(np.float32))
        for b, c in zip(tree.tolist(), child.tolist(), strict=True):
            evaluated[b].add(c)
    assert all(nodes == set(range(sims + 1)) for nodes in evaluated)  # ids 1..sims, each once
    np.testing.assert_array_equal(out.visit_counts.sum(axis=1), np.full(batch, sims))


def test_multi_leaf_bandit_still_finds_the_best_action():
    rewards = np.array([[0.2, 0.5, 1.0, 0.1], [1.0, 0.0, 0.0, 0.3]])
    bandit = bandit_fn(rewards)
    out = run(make_root(2, 4), bandit, 60, add_noise=False, temperature=0.0, leaves_per_call=4)
    assert out.action.tolist() == [2, 0] and out.model_calls < 60
    one_leaf = run(make_root(2, 4), bandit, 60, add_noise=False, temperature=0.0)
    assert one_leaf.action.tolist() == [2, 0] and one_leaf.model_calls == 60


def test_unvisited_q_parent_mean_three_simulations_exact():
    """Hand-computed: uniform prior p = 1/3, rewards [0.1, 0.9, 0.5], pb_c_init = 2, so
    c = 2 + log((N + 19653) / 19652) = 2.0002 (to 4 places) for N <= 3.

    sim 1: no child visited, every child scores the root's own value 0 -> prior tie -> action 0.
    sim 2: stats min == max (0.1), raw Q. Action 0: 0.1 + p*sqrt(2)*c/2 = 0.5715; unvisited
           actions get the parent mean Q = 0.1: 0.1 + p*sqrt(2)*c = 1.0429 -> action 1.
    sim 3: stats [0.1, 0.9]. Action 0: 0 + p*sqrt(3)*c/2 = 0.5774; action 1: 1 + 0.5774;
           action 2 (unvisited): parent mean Q (0.1 + 0.9) / 2 = 0.5 -> normalised 0.5, plus
           p*sqrt(3)*c = 1.1548, total 1.6548 > 1.5774 -> action 2.
    With "zero" action 2 would score 0 + 1.1548 and the search would revisit action 1; with the
    root's mean value (0 + 0.1 + 0.9) / 3 (normalised 0.2917) instead of the children's mean
    it would also lose (1.4465), so only the mean over visited children picks action 2.
    Root value = mean(0, 0.1, 0.9, 0.5) = 0.375; temperature 0 ties -> action 0.
    """
    rewards = np.array([[0.1, 0.9, 0.5]])
    kwargs = dict(add_noise=False, temperature=0.0, pb_c_init=2.0)
    out = run(make_root(1, 3), bandit_fn(rewards), 3, unvisited_q="parent", **kwargs)
    np.testing.assert_array_equal(out.visit_counts, [[1, 1, 1]])
    np.testing.assert_allclose(out.root_value, [0.375], rtol=1e-6)
    assert out.action.tolist() == [0]
    assert out.max_depth == 1
    zero = run(make_root(1, 3), bandit_fn(rewards), 3, unvisited_q="zero", **kwargs)
    np.testing.assert_array_equal(zero.visit_counts, [[1, 2, 0]])
    np.testing.assert_allclose(zero.root_value, [0.475], rtol=1e-6)
    assert zero.max_depth == 2


def test_unvisited_q_parent_overcomes_misleading_prior():
    """The prior strongly favours arm 3, the worst arm; arm 0 pays the most.

    With Q_norm = 0 for untried arms ("zero"), arm 3's Q (the only one seen, normalised to 1)
    beats every untried arm forever. With the parent-mean Q, untried arms look as good as the
    tried ones, so the search tries them, finds arm 0 and concentrates on it.
    """
    rewards = np.array([[1.0, 0.6, 0.4, 0.3]])
    root = make_root(1, 4, logits=np.array([[0.0, 0.0, -1.0, 2.0]]))
    kwargs = dict(add_noise=False, temperature=0.0)
    out = run(root, bandit_fn(rewards), 60, unvisited_q="parent", **kwargs)
    assert out.visit_counts[0].argmax() == 0
    assert out.visit_counts[0, 0] > out.visit_counts[0].sum() / 2
    assert out.action.tolist() == [0]
    assert run(root, bandit_fn(rewards), 60, **kwargs).action.tolist() == [0]  # the default
    greedy = run(root, bandit_fn(rewards), 60, unvisited_q="zero", **kwargs)
    np.testing.assert_array_equal(greedy.visit_counts, [[0, 0, 0, 60]])


def test_mdp_needs_lookahead():
    root = make_root(1, 2, logits=np.array([[0.3, 0.0]]))  # latent 0 = start state
    # One simulation sees only the immediate reward and the prior: it takes the lure.
    greedy = run(root, mdp_fn, 1, add_noise=False, temperature=0.0)
    assert greedy.action.tolist() == [0]
    np.testing.assert_array_equal(greedy.visit_counts, [[1, 0]])
    # With lookahead the detour's 10 shows up: action 1 is worth 0 + 0.997 * 10 > 1.
    out = run(root, mdp_fn, 60, add_noise=False, temperature=0.0)
    assert out.action.tolist() == [1]
    assert out.visit_counts[0, 1] > out.visit_counts[0, 0]
    assert out.max_depth >= 2
    assert 1.0 < out.root_value[0] < 0.997 * 10


def test_ties_break_to_lowest_index():
    # All rewards equal and the prior uniform: two sims visit actions 0 and 1 once each.
    out = run(make_root(1, 3), bandit_fn(np.zeros((1, 3))), 2, add_noise=False, temperature=0.0)
    np.testing.assert_array_equal(out.visit_counts, [[1, 1, 0]])
    assert out.action.tolist() == [0]


# ---------------------------------------------------------------------------------------------
# Batch independence and invariants


def test_rows_are_independent():
    rewards = np.array([[0.1, 0.9, 0.5, 0.3], [0.1, 0.9, 0.5, 0.3], [1.0, 0.0, 0.2, 0.4]])
    legal = np.array(
        [
            [True, True, True, True],
            [True, False, True, True],  # best arm illegal -> next best (2)
            [False, True, True, True],
        ]
    )  # best arm illegal -> next best (3)
    logits = np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.1, 0.0], [0.0, 0.0, 0.0, 0.1]])
    kwargs = dict(add_noise=False, temperature=0.0)
    batched = run(
        make_root(3, 4, logits=logits), bandit_fn(rewards), 40, legal_actions_mask=legal, **kwargs
    )
    assert batched.action.tolist() == [1, 2, 3]
    assert (batched.visit_counts[~legal] == 0).all()
    assert (batched.search_policy[~legal] == 0).all()
    for b in range(3):
        alone = run(
            make_root(1, 4, logits=logits[b : b + 1]),
            bandit_fn(rewards[b : b + 1]),
            40,
            legal_actions_mask=legal[b : b + 1],
            **kwargs,
        )
        np.testing.assert_array_equal(batched.visit_counts[b], alone.visit_counts[0])
        np.testing.assert_array_equal(batched.search_policy[b], alone.search_policy[0])
        np.testing.assert_array_equal(batched.root_value[b], alone.root_value[0])
        assert batched.action[b] == alone.action[0]


def test_illegal_actions_never_visited_with_noise():
    legal = np.array([[False, True, False, True, True], [True, False, False, False, False]])
    for seed in range(5):
        out = run(
            make_root(2, 5),
            hashed_fn(5),
            25,
            legal_actions_mask=legal,
            rng=np.random.default_rng(seed),
            add_noise=True,
            temperature=1.0,
        )
        assert (out.visit_counts[~legal] == 0).all()
        assert legal[np.arange(2), out.action].all()
        np.testing.assert_array_equal(out.visit_counts[1], [25, 0, 0, 0, 0])


def test_node_ids_and_latent_gather():
    calls: list = []
    batch, num_actions, sims = 4, 3, 30
    out = run(make_root(batch, num_actions), hashed_fn(num_actions, calls), sims)
    assert len(calls) == sims
    for k, request in enumerate(calls, start=1):
        assert isinstance(request, Expansion)
        latent, action, parent_id, child_id = (request.parent_latent, request.action, request.parent_id,
                                               request.child_id)
        for ids in (action, parent_id, child_id, request.tree_index):
            assert ids.dtype == np.int64 and ids.shape == (batch,)
        # The standard search: row b is tree b, and call k creates node k in every tree.
        np.testing.assert_array_equal(request.tree_index, np.arange(batch))
        np.testing.assert_array_equal(child_id, np.full(batch, k))
        assert ((parent_id >= ROOT_INDEX) & (parent_id < k)).all()  # an existing node
        assert ((action >= 0) & (action < num_actions)).all()
        # The model wrote latent = node id, so the gathered parent latent must be parent_id.
        np.testing.assert_array_equal(latent[:, 0].numpy(), parent_id.astype(np.float32))
    # Each (parent, action) edge is expanded at most once per tree.
    for b in range(batch):
        edges = [(int(c.parent_id[b]), int(c.action[b])) for c in calls]
        assert len(set(edges)) == len(edges)
    np.testing.assert_array_equal(out.visit_counts.sum(axis=1), np.full(batch, sims))
    np.testing.assert_allclose(out.search_policy.sum(axis=1), 1.0, rtol=1e-6)
    assert out.model_seconds >= 0 and out.bookkeeping_seconds >= 0
    assert 1 <= out.max_depth <= sims


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 4),
    num_actions=st.integers(1, 5),
    sims=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    temperature=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    unvisited_q=st.sampled_from(["parent", "zero"]),
    leaves=st.sampled_from([1, 1, 3]),
)
def test_invariants_property(batch, num_actions, sims, seed, temperature, unvisited_q, leaves):
    rng = np.random.default_rng(seed)
    legal = rng.random((batch, num_actions)) < 0.6
    legal[np.arange(batch), rng.integers(0, num_actions, batch)] = True
    out = run(
        make_root(batch, num_actions, logits=rng.normal(size=(batch, num_actions))),
        hashed_fn(num_actions),
        sims,
        rng=rng,
        legal_actions_mask=legal,
        temperature=temperature,
        unvisited_q=unvisited_q,
        leaves_per_call=leaves,
    )
    assert out.visit_counts.shape == out.search_policy.shape == (batch, num_actions)
    assert out.model_calls <= sims and (leaves > 1 or out.model_calls == sims)
    np.testing.assert_array_equal(out.visit_counts.sum(axis=1), np.full(batch, sims))
    np.testing.assert_allclose(out.search_policy.sum(axis=1), 1.0, rtol=1e-6)
    assert (out.visit_counts[~legal] == 0).all()
    assert (out.visit_counts[np.arange(batch), out.action] > 0).all()
    assert np.isfinite(out.root_value).all()


# ---------------------------------------------------------------------------------------------
# Determinism and sampling


def test_deterministic_for_seed_and_seeds_differ():
    root = make_root(8, 6)

    def search(seed):
        return run(
            root, hashed_fn(6), 20, rng=np.random.default_rng(seed), add_noise=True, temperature=1.0
        )

    first, second = search(123), search(123)
    for name in ("action", "visit_counts", "root_value", "search_policy"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert first.max_depth == second.max_depth
    others = [search(seed) for seed in (1, 2, 3)]
    assert any(not np.array_equal(o.visit_counts, first.visit_counts) for o in others)
    assert any(not np.array_equal(o.action, first.action) for o in others)


@pytest.mark.slow
def test_temperature_sampling_follows_counts():
    # A small temperature behaves like argmax without overflowing.
    rewards = np.array([[0.2, 0.5, 1.0, 0.1]])
    out = run(make_root(1, 4), bandit_fn(rewards), 40, add_noise=False, temperature=1e-3)
    assert out.action.tolist() == [2]
    # At temperature 1 the empirical action frequency tracks the visit distribution.
    root = make_root(1, 4)
    rng = np.random.default_rng(7)
    draws = [
        run(root, bandit_fn(rewards), 8, add_noise=False, rng=rng).action[0] for _ in range(400)
    ]
    expected = run(root, bandit_fn(rewards), 8, add_noise=False).search_policy[0]
    freq = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(freq, expected, atol=0.08)
    assert (freq[expected == 0] == 0).all()


def test_latent_storage_keeps_dtype():
    root = make_root(2, 2, latent=torch.zeros(2, 1, dtype=torch.float64))
    seen = []

    def fn(request):
        seen.append(request.parent_latent.dtype)
        return mdp_fn(request)

    run(root, fn, 3)
    assert seen == [torch.float64] * 3


# ---------------------------------------------------------------------------------------------
# Bad inputs


@pytest.mark.parametrize(
    ("knobs", "match"),
    [
        (dict(num_simulations=0), "SearchConfig: num_simulations=0; must be a positive int"),
        (dict(num_simulations=-3), "num_simulations=-3; must be a positive int"),
        (dict(num_simulations=2.5), "num_simulations=2.5; must be a positive int"),
        (dict(num_simulations=True), "num_simulations=True; must be a positive int"),
        (dict(leaves_per_call=0), "leaves_per_call=0; must be a positive int"),
        (dict(discount=1.5), r"discount=1.5; must be a finite number >= 0 and <= 1"),
        (dict(discount=math.nan), "discount=nan"),
        (dict(pb_c_base=0.0), "pb_c_base=0.0; must be a finite number > 0"),
        (dict(pb_c_base=math.inf), "pb_c_base=inf"),
        (dict(pb_c_init=0.0), "pb_c_init=0.0; must be a finite number > 0"),
        (dict(pb_c_init=-1.25), "pb_c_init=-1.25"),
        (dict(dirichlet_alpha=0.0), "dirichlet_alpha=0.0; must be a finite number > 0"),
        (dict(dirichlet_alpha=math.inf), "dirichlet_alpha=inf"),
        (dict(exploration_fraction=2.0), "exploration_fraction=2.0; must be a finite number >= 0 and <= 1"),
        (dict(exploration_fraction=-0.1), "exploration_fraction=-0.1"),
        (dict(unvisited_q="mean"), "unvisited_q='mean'; allowed: parent, zero"),
        (dict(unvisited_q=None), "unvisited_q=None; allowed: parent, zero"),
    ],
)
def test_bad_search_config_is_refused_when_built(knobs, match):
    """Every knob is checked once, when the config is built: before any search starts, and
    whether or not the failing knob would be used (e.g. noise knobs of a noise-free search)."""
    with pytest.raises(ValueError, match=match):
        SearchConfig(**knobs)


def test_search_config_is_frozen_and_replace_checks_again():
    config = SearchConfig(num_simulations=np.int64(8))
    assert type(config.num_simulations) is int and config.num_simulations == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_simulations = 0
    with pytest.raises(ValueError, match="leaves_per_call=0"):
        dataclasses.replace(config, leaves_per_call=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(temperature=-0.5), "temperature=-0.5; must be a finite number >= 0"),
        (dict(temperature=math.nan), "temperature=nan"),
        (dict(temperature=math.inf), "temperature=inf"),
        (dict(add_noise=1), "add_noise=1; must be True or False"),
        (dict(legal_actions_mask=np.ones((2, 2), bool)), r"shape .*\(2, 3\), got \(2, 2\)"),
        (
            dict(legal_actions_mask=np.array([[True, False, True], [False, False, False]])),
            r"rows \[1\] have none",
        ),
        (dict(legal_actions_mask=np.ones((2, 3), np.int64)), "dtype bool, got int64"),
        (dict(rng=0), "rng must be a numpy.random.Generator, got int"),
    ],
)
def test_bad_call_arguments(kwargs, match):
    args = dict(rng=np.random.default_rng(0)) | kwargs
    with pytest.raises(ValueError, match=match):
        muzero_search(make_root(2, 3), hashed_fn(3), SearchConfig(num_simulations=4), **args)


def test_a_config_must_be_a_search_config():
    with pytest.raises(TypeError, match="config is a dict; expected a zerokv.search.SearchConfig"):
        muzero_search(make_root(2, 3), hashed_fn(3), {"num_simulations": 4}, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    ("root", "match"),
    [
        (
            RootFnOutput(np.zeros(3, np.float32), np.zeros((2, 3), np.float32), torch.zeros(2, 1)),
            r"root.value must have shape \[B\] = \(2,\), got \(3,\)",
        ),
        (
            RootFnOutput(np.zeros(2, np.float32), np.zeros(3, np.float32), torch.zeros(2, 1)),
            r"policy_logits must have shape \[B, A\].*got shape \(3,\)",
        ),
        (
            RootFnOutput(np.zeros(2, np.float32), np.zeros((2, 3), np.float32), torch.zeros(5, 1)),
            r"root.latent .* B = 2, got \(5, 1\)",
        ),
    ],
)
def test_bad_root(root, match):
    with pytest.raises(ValueError, match=match):
        muzero_search(root, hashed_fn(3), SearchConfig(num_simulations=2), rng=np.random.default_rng(0))


def test_bad_recurrent_output():
    def wrong_logits(request):
        out = hashed_fn(3)(request)
        return RecurrentFnOutput(out.reward, out.value, out.policy_logits[:, :2], out.latent)

    with pytest.raises(ValueError, match=r"call 1: policy_logits .* \(2, 3\), got \(2, 2\)"):
        run(make_root(2, 3), wrong_logits, 2)


class FakeWorldModel:
    """Two actions, all values 0, child latent = parent latent + 1; records every call's rows."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], np.ndarray]] = []

    def initial_inference(self, obs, env_ids=None, last_actions=None):
        b = len(obs)
        return SimpleNamespace(value=torch.zeros(b), policy_logits=torch.zeros(b, 2), latent_state=torch.zeros(b, 1))

    def recurrent_inference(self, latent, action, env_ids=None, *, parent_ids=None, child_ids=None):
        self.calls.append((list(env_ids), np.array(child_ids)))
        r = latent.shape[0]
        return SimpleNamespace(reward=torch.zeros(r), value=torch.zeros(r), policy_logits=torch.zeros(r, 2),
                               latent_state=latent + 1)


@pytest.mark.parametrize("leaves", [1, 3])
def test_plan_sends_each_row_to_its_trees_env(leaves):
    """Trees are the envs named by env_ids, in order: every row of every call goes to its tree's
    env, and each env's nodes 1..num_simulations are created exactly once."""
    model, env_ids = FakeWorldModel(), [5, 2]
    plan(model, np.zeros((2, 1), np.float32), config=SearchConfig(num_simulations=6, leaves_per_call=leaves),
         rng=np.random.default_rng(0), env_ids=env_ids)
    created: dict[int, list[int]] = {5: [], 2: []}
    for envs, child in model.calls:
        assert leaves > 1 or envs == env_ids
        for env, node in zip(envs, child.tolist(), strict=True):
            created[env].append(node)
    assert {env: sorted(nodes) for env, nodes in created.items()} == {5: [1, 2, 3, 4, 5, 6], 2: [1, 2, 3, 4, 5, 6]}
    assert (len(model.calls) == 6) == (leaves == 1)
