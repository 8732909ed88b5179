"""Replay: exact n-step targets on hand-sized segments, padding and masks, FIFO eviction,
uniform sampling, argument checks, uint8 frames, the vectorised sampler against a per-row loop,
and the bytes a stored Atari step takes."""

import numpy as np
import pytest
import torch
from replayutil import assert_rows_match, reference_batch

from zerokv.rl.observations import observations_as_float
from zerokv.rl.replay import GameSegment, ReplayBuffer, n_step_value_targets

REWARDS = [1.0, 2.0, 3.0, 4.0]
ROOT_VALUES = [10.0, 20.0, 30.0, 40.0]
# td_steps=2, discount=0.5: z_j = r_j + 0.5 r_{j+1} + 0.25 v_{j+2}, stopping at the end (T=4).
TERMINATED_TARGETS = [1 + 1 + 7.5, 2 + 1.5 + 10, 3 + 2 + 0, 4 + 0]
TRUNCATED_TARGETS = [9.5, 13.5, 3 + 2 + 0.25 * 100, 4 + 0.5 * 100]  # bootstrap_value=100
POLICIES = [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]


def make_segment(terminated: bool, seg_id: float = 0.0, length: int = 4) -> GameSegment:
    """obs_t = [seg_id, t], so a sampled row tells which segment and start it came from."""
    seg = GameSegment((2,), 3)
    for t in range(length):
        seg.append(np.array([seg_id, t]), t % 3, REWARDS[t % 4], ROOT_VALUES[t % 4],
                   np.array(POLICIES[t % 4]))
    seg.close(terminated=terminated, bootstrap_value=100.0)
    return seg


def reference_targets(rewards, values, bootstrap, n, gamma):
    """Plain loop: sum rewards up to n steps or the end, then bootstrap from where it stopped."""
    num, out = len(rewards), []
    for j in range(num):
        z, i = 0.0, 0
        while i < n and j + i < num:
            z += gamma**i * rewards[j + i]
            i += 1
        z += gamma**i * (values[j + i] if j + i < num else bootstrap)
        out.append(z)
    return np.array(out)


def check_invariant(buffer: ReplayBuffer) -> None:
    buffer.check_invariants()
    lengths = buffer.segment_table().lengths
    assert buffer.num_steps == lengths.sum() <= buffer.capacity_steps
    assert buffer.num_segments == len(lengths)


@pytest.mark.parametrize(
    ("terminated", "expected"), [(True, TERMINATED_TARGETS), (False, TRUNCATED_TARGETS)]
)
def test_value_targets_exact(terminated, expected):
    seg = make_segment(terminated)
    assert seg.bootstrap_value == (0.0 if terminated else 100.0)
    z = n_step_value_targets(seg.rewards, seg.root_values, seg.bootstrap_value, 2, 0.5)
    assert z.dtype == np.float32 and z.tolist() == expected


def test_value_targets_match_reference_loop():
    rng = np.random.default_rng(0)
    for _ in range(50):
        num, n = int(rng.integers(1, 12)), int(rng.integers(1, 8))
        rewards, values = rng.normal(size=num), rng.normal(size=num)
        bootstrap, gamma = float(rng.normal()), float(rng.uniform(0.5, 1.0))
        np.testing.assert_allclose(
            n_step_value_targets(rewards, values, bootstrap, n, gamma),
            reference_targets(rewards, values, bootstrap, n, gamma), rtol=1e-5, atol=1e-5,
        )


@pytest.mark.parametrize(
    ("terminated", "targets"), [(True, TERMINATED_TARGETS), (False, TRUNCATED_TARGETS)]
)
def test_batch_rows_exact_with_padding_and_mask(terminated, targets):
    buffer = ReplayBuffer(100, (2,), 3, unroll_steps=2, td_steps=2, discount=0.5, seed=1)
    buffer.add(make_segment(terminated))
    batch = buffer.sample(200)
    assert batch.obs.shape == (200, 3, 2) and batch.obs.dtype == np.float32
    assert batch.actions.shape == (200, 3) and batch.actions.dtype == np.int64
    assert batch.policy_targets.shape == (200, 3, 3)
    for name in ("rewards", "value_targets", "mask"):
        assert getattr(batch, name).shape == (200, 3) and getattr(batch, name).dtype == np.float32
    assert batch.weights.tolist() == [1.0] * 200
    uniform = [1 / 3] * 3
    seen = set()
    for b in range(200):
        t = int(batch.obs[b, 0, 1])
        seen.add(t)
        real = min(3, 4 - t)
        pad = 3 - real
        assert batch.mask[b].tolist() == [1.0] * real + [0.0] * pad
        assert batch.obs[b, :, 1].tolist() == list(range(t, t + real)) + [3.0] * pad
        assert batch.rewards[b].tolist() == REWARDS[t : t + real] + [0.0] * pad
        assert batch.value_targets[b].tolist() == targets[t : t + real] + [0.0] * pad
        assert batch.actions[b, :real].tolist() == [s % 3 for s in range(t, t + real)]
        assert all(0 <= a < 3 for a in batch.actions[b, real:])
        want_policy = POLICIES[t : t + real] + [uniform] * pad
        np.testing.assert_allclose(batch.policy_targets[b], want_policy)
    assert seen == {0, 1, 2, 3}


def test_sampling_is_uniform_over_all_start_positions():
    buffer = ReplayBuffer(100, (2,), 3, unroll_steps=1, seed=0)
    buffer.add(make_segment(True, seg_id=0, length=3))
    buffer.add(make_segment(False, seg_id=1, length=2))
    obs = buffer.sample(5000).obs[:, 0]  # [B, 2]: (segment, start)
    pairs, counts = np.unique(obs, axis=0, return_counts=True)
    assert pairs.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1]]
    assert counts.min() > 850 and counts.max() < 1150  # 1000 expected each


def test_capacity_evicts_whole_oldest_segments():
    buffer = ReplayBuffer(10, (2,), 3)
    # (segment id, its length, steps and segments held after adding it)
    cases = [(0, 4, 4, 1), (1, 4, 8, 2), (2, 4, 8, 2), (3, 2, 10, 3)]
    for seg_id, length, steps, segments in cases:
        buffer.add(make_segment(True, seg_id, length))
        assert (buffer.num_steps, buffer.num_segments) == (steps, segments)
        check_invariant(buffer)
    assert set(buffer.sample(500).obs[:, 0, 0].tolist()) == {1.0, 2.0, 3.0}
    buffer.add(make_segment(True, seg_id=4, length=10))  # evicts everything else
    assert (buffer.num_steps, buffer.num_segments) == (10, 1)
    check_invariant(buffer)
    with pytest.raises(ValueError, match="segment of 11 steps exceeds capacity_steps=10"):
        buffer.add(make_segment(True, length=11))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"capacity_steps": 0}, "capacity_steps=0"),
        ({"action_space_size": 0}, "action_space_size=0"),
        ({"unroll_steps": -1}, "unroll_steps=-1"),
        ({"td_steps": 0}, "td_steps=0"),
        ({"discount": 1.5}, "discount=1.5"),
    ],
)
def test_bad_buffer_arguments(kwargs, message):
    args = {"capacity_steps": 10, "observation_shape": (2,), "action_space_size": 3} | kwargs
    with pytest.raises(ValueError, match=message):
        ReplayBuffer(**args)


def test_bad_segment_and_sample_arguments():
    buffer = ReplayBuffer(10, (2,), 3)
    with pytest.raises(ValueError, match="empty ReplayBuffer"):
        buffer.sample(1)
    seg = GameSegment((2,), 3)
    with pytest.raises(ValueError, match=r"obs shape \(3,\)"):
        seg.append(np.zeros(3), 0, 0.0, 0.0, np.ones(3) / 3)
    with pytest.raises(ValueError, match=r"search_policy shape \(2,\)"):
        seg.append(np.zeros(2), 0, 0.0, 0.0, np.ones(2) / 2)
    with pytest.raises(ValueError, match="action=3"):
        seg.append(np.zeros(2), 3, 0.0, 0.0, np.ones(3) / 3)
    with pytest.raises(ValueError, match="not closed"):
        buffer.add(seg)
    seg.close(terminated=True)
    with pytest.raises(ValueError, match="0 steps"):
        buffer.add(seg)
    with pytest.raises(RuntimeError, match="closed"):
        seg.append(np.zeros(2), 0, 0.0, 0.0, np.ones(3) / 3)
    with pytest.raises(ValueError, match=r"observation_shape \(4,\)"):
        ReplayBuffer(10, (4,), 3).add(make_segment(True))
    buffer.add(make_segment(True))
    with pytest.raises(ValueError, match="batch_size=0"):
        buffer.sample(0)


def test_append_copies_caller_buffers():
    seg, obs = GameSegment((2,), 3), np.zeros(2, np.float32)
    seg.append(obs, 0, 0.0, 0.0, np.ones(3) / 3)
    obs[:] = 7.0
    seg.close(terminated=True)
    assert seg.obs.tolist() == [[0.0, 0.0]]


def test_the_vectorised_sampler_equals_a_per_row_loop_across_the_ring_end():
    rng = np.random.default_rng(3)
    buffer = ReplayBuffer(40, (2,), 4, observation_dtype=np.uint8, unroll_steps=5, td_steps=3, discount=0.9, seed=5)
    segments = []
    for seg_id in range(12):  # 12 segments of 3..9 steps through 40 slots: the ring wraps, evicts
        length = int(rng.integers(3, 10))
        seg = GameSegment((2,), 4, np.uint8)
        for t in range(length):
            seg.append(np.array([seg_id, t], np.uint8), int(rng.integers(4)), float(rng.normal()),
                       float(rng.normal()), rng.dirichlet(np.ones(4)))
        seg.close(terminated=bool(rng.integers(2)), bootstrap_value=float(rng.normal()))
        buffer.add(seg)
        segments.append(seg)
        check_invariant(buffer)
    stored = {int(s.obs[0, 0]): s for s in segments[-buffer.num_segments:]}
    batch = buffer.sample(400)
    starts = [(int(o[0]), int(o[1])) for o in batch.obs[:, 0]]
    assert {i for i, _ in starts} == set(stored)  # every stored segment is drawn, no evicted one
    assert_rows_match(batch, reference_batch(stored, starts, 5, 3, 0.9, 4), 4)


def test_frames_stay_uint8_and_a_batch_is_the_stored_frames_over_255():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(6, 3, 64, 64), dtype=np.uint8)
    seg = GameSegment((3, 64, 64), 6, np.uint8)
    for t, frame in enumerate(frames):
        seg.append(frame, t % 6, 1.0, 0.0, np.ones(6) / 6)
    seg.close(terminated=True)
    buffer = ReplayBuffer(100, (3, 64, 64), 6, observation_dtype=np.uint8, unroll_steps=2, td_steps=2)
    buffer.add(seg)
    batch = buffer.sample(32)
    assert batch.obs.dtype == np.uint8 and batch.bootstrap_obs.dtype == np.uint8
    starts = [int(np.flatnonzero((frames == o).all(axis=(1, 2, 3)))[0]) for o in batch.obs[:, 0]]
    for b, t in enumerate(starts):
        idx = np.minimum(np.arange(t, t + 3), 5)
        np.testing.assert_array_equal(batch.obs[b], frames[idx])
    as_float = observations_as_float(batch.obs)  # what the learner feeds the model
    assert as_float.dtype == torch.float32 and as_float.shape == (32, 3, 3, 64, 64)
    expected = (frames[np.minimum(np.array(starts)[:, None] + np.arange(3), 5)] / 255.0).astype(np.float32)
    np.testing.assert_array_equal(as_float.numpy(), expected)  # correctly rounded v / 255
    assert float(as_float.max()) <= 1.0
    with pytest.raises(ValueError, match="obs dtype float32 != observation_dtype uint8"):
        GameSegment((3, 64, 64), 6, np.uint8).append(frames[0] / np.float32(255), 0, 0.0, 0.0, np.ones(6) / 6)
    with pytest.raises(ValueError, match="observation dtype float32 != buffer observation_dtype uint8"):
        buffer.add(GameSegment.from_arrays(frames[:1].astype(np.float32), np.zeros(1), np.zeros(1),
                                           np.zeros(1), np.ones((1, 6)) / 6, True, 0.0))


@pytest.mark.parametrize("num_actions", [6, 18])
def test_a_stored_atari_step_takes_at_most_13_kib(num_actions):
    buffer = ReplayBuffer(10, (3, 64, 64), num_actions, observation_dtype=np.uint8)
    assert buffer.bytes_per_step <= 13 * 1024  # 12,288 B of frame, the rest scalars and the policy
    assert buffer.bytes_per_step == 3 * 64 * 64 + 4 * (num_actions + 7)  # 7 int32/float32 scalars
    seg = GameSegment((3, 64, 64), num_actions, np.uint8)
    for _ in range(4):
        seg.append(np.zeros((3, 64, 64), np.uint8), 0, 0.0, 0.0, np.ones(num_actions) / num_actions)
    seg.close(terminated=True)
    buffer.add(seg)
    assert buffer.nbytes == 4 * buffer.bytes_per_step
