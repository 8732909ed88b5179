"""`ReplayBuffer(sampling="segment_start")`: rows that start at a segment's first step, so that a
memory task's sequences hold both the cue (an episode's first step) and the reward phase (its last)."""

from __future__ import annotations

import numpy as np
import pytest
from replayutil import assert_rows_match, reference_batch

from zerokv.envs.memory import COLOURS
from zerokv.presets import preset_path
from zerokv.rl.config import TrainConfig
from zerokv.rl.config_files import load_overrides
from zerokv.rl.envs import EnvOptions, make_env
from zerokv.rl.replay import GameSegment, ReplayBuffer

NUM_ACTIONS = 3


def numbered_segment(seg_id: int, length: int, terminated: bool = True) -> GameSegment:
    """obs [length, 2] = (seg_id, t): every step names its segment and its index."""
    rng = np.random.default_rng(seg_id)
    obs = np.stack([np.full(length, seg_id), np.arange(length)], 1).astype(np.float32)
    policies = rng.dirichlet(np.ones(NUM_ACTIONS), size=length).astype(np.float32)
    return GameSegment.from_arrays(obs, rng.integers(NUM_ACTIONS, size=length), rng.normal(size=length),
                                   rng.normal(size=length), policies, terminated, 0.0 if terminated else 0.5)


def test_rows_start_at_segment_first_steps_with_segments_alike():
    # capacity 10: the third segment evicts the first and wraps around the ring's end
    buffer = ReplayBuffer(10, (2,), NUM_ACTIONS, unroll_steps=4, td_steps=2, discount=0.9, seed=0,
                          sampling="segment_start")
    segments = {i: numbered_segment(i, n, terminated=i != 2) for i, n in ((0, 4), (1, 3), (2, 5))}
    for seg in segments.values():
        buffer.add(seg)
        buffer.check_invariants()
    assert buffer.num_segments == 2  # 1 (3 steps) and 2 (5 steps, slots 7..9 and 0..1)
    batch = buffer.sample(3000)
    firsts, counts = np.unique(batch.obs[:, 0], axis=0, return_counts=True)
    assert firsts.tolist() == [[1, 0], [2, 0]]  # never a later step, never an evicted segment
    assert counts.min() > 1350 and counts.max() < 1650  # segments alike, not by their lengths (1500 each)
    ids = batch.obs[:, 0, 0].astype(int)
    np.testing.assert_array_equal(batch.mask.sum(1), np.where(ids == 1, 3, 5))  # each row its whole segment
    rows = reference_batch(segments, [(i, 0) for i in ids[:50]], 4, 2, 0.9, NUM_ACTIONS)
    first_50 = type(batch)(**{name: None if getattr(batch, name) is None else getattr(batch, name)[:50]
                              for name in batch.__slots__})
    assert_rows_match(first_50, rows, NUM_ACTIONS)


def test_segment_start_sampling_resumes_bit_exact_from_a_snapshot():
    source = ReplayBuffer(12, (2,), NUM_ACTIONS, unroll_steps=5, seed=3, sampling="segment_start")
    for i, n in enumerate((4, 6, 5)):
        source.add(numbered_segment(i, n))
    source.sample(7)  # move the rng along
    copy = ReplayBuffer(12, (2,), NUM_ACTIONS, unroll_steps=5, seed=99, sampling="segment_start")
    contents = source.contents()
    copy.load_contents(contents.segments, lambda name, view: view.__setitem__(
        slice(None), np.concatenate(contents.fields[name])))
    copy.set_rng_state(source.rng_state())
    copy.check_invariants()
    want, got = source.sample(16), copy.sample(16)
    for name in ("obs", "actions", "rewards", "value_targets", "policy_targets", "mask"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def play_visual_match(episodes: int, memory_length: int) -> tuple[list[GameSegment], list[dict]]:
    """Whole VisualMatch episodes under random actions, one closed segment each, with what each
    step was (its phase) and the cue colour."""
    env = make_env("zerokv/VisualMatch-v0", seed=0, options=EnvOptions(memory_length=memory_length))
    rng = np.random.default_rng(0)
    segments, logs = [], []
    for e in range(episodes):
        obs, info = env.reset(seed=e)
        seg = GameSegment(obs.shape, 4, obs.dtype)
        phases, done = [], False
        while not done:
            phases.append(info["phase"])
            action = int(rng.integers(4))
            next_obs, reward, terminated, truncated, info = env.step(action)
            seg.append(obs, action, reward, 0.0, np.full(4, 0.25, np.float32))
            obs, done = next_obs, terminated or truncated
        seg.close(terminated=True)
        segments.append(seg)
        logs.append({"phases": phases, "cue": env.unwrapped.target, "return": float(seg.rewards.sum())})
    return segments, logs


def test_a_visual_match_batch_holds_the_cue_and_the_reward_steps():
    memory, steps = 10, 26  # episodes of 1 + 10 + 15 steps
    segments, logs = play_visual_match(12, memory)
    assert {tuple(log["phases"]) for log in logs} == {("explore",) + ("distractor",) * memory + ("reward",) * 15}
    assert sum(log["return"] for log in logs) > 0  # some episode paid, so some rows hold a reward
    buffers = {mode: ReplayBuffer(10_000, (3, 5, 5), 4, unroll_steps=steps, td_steps=steps, seed=1, sampling=mode)
               for mode in ("segment_start", "uniform")}
    for buffer in buffers.values():
        for seg in segments:
            buffer.add(seg)
    batch = buffers["segment_start"].sample(64)
    for b in range(64):
        assert batch.mask[b].sum() == steps  # the whole episode, its last step included
        e = next(e for e, seg in enumerate(segments) if np.array_equal(batch.obs[b, :steps], seg.obs))
        cue = np.asarray(COLOURS[logs[e]["cue"]], np.float32) / 1000
        assert (batch.obs[b, 0] == cue[:, None, None]).all(0).any()  # step 0 shows the cue colour
        np.testing.assert_array_equal(batch.rewards[b, :steps], segments[e].rewards)  # reward phase included
        assert batch.rewards[b].sum() == logs[e]["return"]
    # uniform starts: a row holds an episode's first step (all 26 steps real) only when it starts
    # there, about 1 row in 26
    whole = buffers["uniform"].sample(64).mask.sum(1) == steps
    assert whole.sum() < 8


def test_config_refuses_segment_start_rows_shorter_than_a_segment():
    with pytest.raises(ValueError, match=r"unroll_steps \+ 1 = 11 steps.*segment_length=50.*unroll_steps >= 49"):
        TrainConfig(replay_sampling="segment_start")
    with pytest.raises(ValueError, match="replay_sampling.*uniform.*segment_start"):
        TrainConfig(replay_sampling="episode")
    assert TrainConfig(replay_sampling="segment_start", unroll_steps=49).replay_sampling == "segment_start"
    with pytest.raises(ValueError, match="sampling='episodes'; allowed: uniform, segment_start"):
        ReplayBuffer(10, (2,), 3, sampling="episodes")


def test_the_memory_preset_trains_on_whole_episodes_from_their_reset():
    cfg = TrainConfig(**load_overrides(preset_path("memory")))
    assert cfg.replay_sampling == "segment_start"
    assert cfg.unroll_steps + 1 >= cfg.segment_length == cfg.collect_steps == cfg.history_steps == 76
    with pytest.raises(ValueError, match=r"episodes of 76 steps, more than history_steps=12.*history_steps >= 76"):
        TrainConfig(**{**load_overrides(preset_path("memory")), "history_steps": 12})
