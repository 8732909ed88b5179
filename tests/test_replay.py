"""Replay: exact n-step targets on hand-sized segments, padding and masks, FIFO eviction,
uniform sampling, argument checks, and a state_dict round trip that keeps the rng stream."""

import io

import numpy as np
import pytest
import torch

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
    state = buffer.state_dict()
    assert buffer.num_steps == sum(len(s["actions"]) for s in state["segments"])
    assert buffer.num_steps <= buffer.capacity_steps
    assert buffer.num_segments == len(state["segments"])


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


def test_state_dict_round_trip_continues_the_same_sample_stream():
    original = ReplayBuffer(12, (2,), 3, unroll_steps=2, td_steps=2, discount=0.5, seed=7)
    for seg_id in range(4):  # 16 steps into 12: the first segment is evicted
        original.add(make_segment(seg_id % 2 == 0, seg_id))
    original.sample(5)  # advance the rng past its seed state

    blob = io.BytesIO()
    torch.save(original.state_dict(), blob)
    blob.seek(0)
    state = torch.load(blob, weights_only=True)
    restored = ReplayBuffer(12, (2,), 3, unroll_steps=2, td_steps=2, discount=0.5, seed=999)
    restored.load_state_dict(state)
    assert (restored.num_steps, restored.num_segments) == (12, 3)
    for _ in range(3):
        a, b = original.sample(16), restored.sample(16)
        for name in a.__slots__:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)

    with pytest.raises(ValueError, match="action_space_size 3"):
        ReplayBuffer(12, (2,), 4).load_state_dict(state)
