"""Reanalysis: replayed positions searched in wide batches give the collector's answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_world_model import ATOL, build

from zerokv.model.config import CACHE_BACKENDS
from zerokv.rl.replay import GameSegment, ReplayBuffer, n_step_value_targets
from zerokv.search import Reanalyzer, SearchConfig, search_from_roots

SEARCH = SearchConfig(num_simulations=12)


def episode(wm, steps: int, seed: int = 0):
    """``steps`` real steps of 3 envs through ``initial_inference`` (the collector's root contexts).

    Returns the observations ``[steps, 3, D]``, the actions ``[steps - 1, 3]`` between them and
    the last roots' output.
    """
    rng = np.random.default_rng(seed)
    obs = rng.random((steps, 3, *wm.config.observation_shape), dtype=np.float32)
    acts = rng.integers(wm.config.action_space_size, size=(steps - 1, 3))
    root = wm.initial_inference(obs[0])
    for t in range(1, steps):
        root = wm.initial_inference(obs[t], last_actions=acts[t - 1])
    return obs, acts, root


@pytest.mark.parametrize("backend", CACHE_BACKENDS)
def test_a_reanalysed_root_searches_exactly_like_the_collectors_root(backend):
    wm = build(backend)
    h = wm.config.root_history_steps
    obs, acts, root = episode(wm, h + 4)
    collected = search_from_roots(wm, root, config=SEARCH, rng=np.random.default_rng(0), add_noise=False)

    # The same positions from replay: the root's observation and h steps of history, per env.
    hist_obs = obs[-(h + 1):].transpose(1, 0, 2)  # (3, h+1, D)
    hist_acts = acts[-h:].T  # (3, h)
    fresh = build(backend)  # the same weights; its caches never saw the episode
    out = Reanalyzer(fresh, SEARCH, roots_per_call=3)(hist_obs, hist_acts, rng=np.random.default_rng(0),
                                                      add_noise=False)
    np.testing.assert_allclose(out.root_value, collected.root_value, rtol=ATOL, atol=ATOL)
    np.testing.assert_array_equal(out.visit_counts, collected.visit_counts)
    assert out.model_calls == SEARCH.num_simulations


def test_wide_batches_and_chunks_of_eight_agree():
    wm = build("paged")
    h, n = wm.config.root_history_steps, 20
    rng = np.random.default_rng(3)
    obs = rng.random((n, h + 1, *wm.config.observation_shape), dtype=np.float32)
    acts = rng.integers(wm.config.action_space_size, size=(n, h))
    lengths = rng.integers(1, h + 2, size=n)  # some positions near their segment's start
    wide = Reanalyzer(wm, SEARCH, roots_per_call=n)(obs, acts, lengths, rng=np.random.default_rng(0), add_noise=False)
    chunks = Reanalyzer(wm, SEARCH, roots_per_call=8)(obs, acts, lengths, rng=np.random.default_rng(0),
                                                      add_noise=False)
    assert wide.model_calls == SEARCH.num_simulations and chunks.model_calls == 3 * SEARCH.num_simulations
    np.testing.assert_allclose(wide.root_value, chunks.root_value, rtol=ATOL, atol=ATOL)
    np.testing.assert_array_equal(wide.visit_counts, chunks.visit_counts)
    np.testing.assert_allclose(wide.search_policy.sum(1), 1.0, rtol=1e-6)
    # A row's ignored entries (before its length) do not matter: a short history alone, same answer.
    i = int(np.argmin(lengths))
    k = int(lengths[i])
    alone = wm.arena(1).initial_inference_from_history(obs[i:i + 1, -k:], acts[i:i + 1, acts.shape[1] - (k - 1):])
    again = wm.arena(n).initial_inference_from_history(obs, acts, lengths=lengths)
    torch.testing.assert_close(again.policy_logits[i:i + 1], alone.policy_logits, rtol=ATOL, atol=ATOL)


def test_reanalysis_leaves_the_collectors_contexts_alone():
    wm, twin = build("paged"), build("paged")
    h = wm.config.root_history_steps
    obs, acts, _ = episode(wm, 3)
    episode(twin, 3)
    rng = np.random.default_rng(5)
    many = rng.random((40, h + 1, *wm.config.observation_shape), dtype=np.float32)
    Reanalyzer(wm, SEARCH, roots_per_call=40)(many, rng.integers(3, size=(40, h)), rng=rng)
    wm.reset_cache_stats()
    nxt, last = rng.random((3, *wm.config.observation_shape), dtype=np.float32), np.array([0, 1, 2])
    a, b = wm.initial_inference(nxt, last_actions=last), twin.initial_inference(nxt, last_actions=last)
    assert wm.cache_stats().hits == 3 and wm.cache_stats().fallbacks == 0
    torch.testing.assert_close(a.policy_logits, b.policy_logits, rtol=0, atol=0)


def test_bad_reanalysis_input_is_named():
    wm = build("paged")
    with pytest.raises(ValueError, match="roots_per_call=0"):
        Reanalyzer(wm, SEARCH, roots_per_call=0)
    r = Reanalyzer(wm, SEARCH, roots_per_call=4)
    obs = np.zeros((2, 3, 5), np.float32)
    with pytest.raises(ValueError, match="2 histories but 1 action rows"):
        r(obs, np.zeros((1, 2), np.int64), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="history length 4 outside"):
        r(obs, np.zeros((2, 2), np.int64), np.array([1, 4]), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="action 7 outside"):
        r(obs, np.full((2, 2), 7), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"expected \(B, T, 5\)"):
        r(np.zeros((2, 5), np.float32), np.zeros((2, 0), np.int64), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="env_num=0"):
        wm.arena(0)


def _buffer_with_segments() -> ReplayBuffer:
    buf = ReplayBuffer(1000, (2,), 3, unroll_steps=2, td_steps=3, discount=0.9, seed=0)
    for s, length in enumerate((4, 7)):
        seg = GameSegment((2,), 3)
        for t in range(length):
            seg.append(np.array([s, t], np.float32), t % 3, 1.0, 0.5, np.array([1, 0, 0], np.float32))
        seg.close(terminated=s == 0, bootstrap_value=2.0)
        buf.add(seg)
    return buf


def test_replay_positions_histories_and_target_updates():
    buf = _buffer_with_segments()
    positions = buf.sample_positions(100)  # more than stored: every position once, oldest first
    assert len(positions.slots) == 11 and len(set(positions.slots.tolist())) == 11
    history = buf.histories(positions, history_steps=2)
    for row, t in enumerate(positions.steps.tolist()):
        i, k = int(history.obs[row, -1, 0]), min(2, t)  # obs = [segment, step]
        assert history.lengths[row] == k + 1
        np.testing.assert_array_equal(history.obs[row, 2 - k:, 1], np.arange(t - k, t + 1))  # right-aligned steps
        np.testing.assert_array_equal(history.obs[row, 2 - k:, 0], i)  # from its own segment
        np.testing.assert_array_equal(history.obs[row, :2 - k], 0)
        np.testing.assert_array_equal(history.actions[row, 2 - k:], np.arange(t - k, t) % 3)

    new_policy = np.tile(np.array([0, 0.5, 0.5], np.float32), (11, 1))
    new_values = np.arange(11, dtype=np.float32)
    tv = buf.update_targets(positions, new_policy, new_values)
    assert tv == pytest.approx(1.0)  # [1,0,0] → [0,.5,.5]: disjoint supports
    # The value targets follow the new root values: segment 1 holds positions 4..10.
    want = n_step_value_targets(np.ones(7, np.float32), new_values[4:], 2.0, 3, 0.9)
    batch = buf.sample(300)
    rows = batch.obs[:, 0, 0] == 1
    np.testing.assert_array_equal(batch.value_targets[rows, 0], want[batch.obs[rows, 0, 1].astype(int)])
    np.testing.assert_array_equal(batch.policy_targets[batch.mask == 1], np.tile([0, 0.5, 0.5], (int(batch.mask.sum()), 1)))


def test_a_bfloat16_model_reanalyses_in_its_own_precision():
    f32 = build("paged", embed_dim=64)
    bf16 = build("paged", embed_dim=64, dtype="bfloat16")
    bf16.load_weights_from(f32)
    h, n = f32.config.root_history_steps, 16
    rng = np.random.default_rng(4)
    obs = rng.random((n, h + 1, *f32.config.observation_shape), dtype=np.float32)
    acts = rng.integers(f32.config.action_space_size, size=(n, h))
    runs = {}
    for name, wm in (("f32", f32), ("bf16", bf16)):
        reanalyzer = Reanalyzer(wm, SEARCH, roots_per_call=n)
        runs[name] = reanalyzer(obs, acts, rng=np.random.default_rng(0), add_noise=False)
        assert reanalyzer.arena.kv_cache_manager.kv.dtype == wm.config.torch_dtype
    a, b = runs["f32"], runs["bf16"]
    assert b.root_value.dtype == np.float32 and b.search_policy.dtype == np.float32
    assert 0 < np.abs(a.search_policy - b.search_policy).sum(1).mean() / 2 <= 0.2  # rounding moves it, a little
    assert (a.visit_counts.argmax(1) == b.visit_counts.argmax(1)).mean() >= 0.75


def test_the_reanalyzer_takes_a_checked_search_config():
    wm = build("paged")
    with pytest.raises(TypeError, match="Reanalyzer: search is a dict; expected a SearchConfig"):
        Reanalyzer(wm, {"num_simulations": 12})
    with pytest.raises(ValueError, match="Reanalyzer: roots_per_call=0; must be a positive int"):
        Reanalyzer(wm, SEARCH, roots_per_call=0)
    with pytest.raises(ValueError, match="SearchConfig: exploration_fraction=2.0"):
        Reanalyzer(wm, SearchConfig(num_simulations=12, exploration_fraction=2.0))
