"""Collector: reward clipping only when asked, life loss as a learning-episode end, float input
to the model from uint8 frames, and a checkpoint state without frames that restores exactly."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces

from zerokv import WorldModel, WorldModelConfig
from zerokv.rl import Collector, ReplayBuffer
from zerokv.search import SearchConfig


class _LivesEnv(gymnasium.Env):
    """Rewards 2.5, -3, 0, 2.5, …; 3 lives, one lost every 4 steps; over after 12 steps."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {"lives": 3}

    def step(self, action):
        self.t += 1
        reward = [2.5, -3.0, 0.0][self.t % 3 - 1]
        return np.array([self.t / 12, action], np.float32), reward, self.t >= 12, False, {"lives": 3 - self.t // 4}


gymnasium.register("ZerokvTest/Lives-v0", entry_point=_LivesEnv)
SEARCH = SearchConfig(num_simulations=2)


def collector(env_id: str, obs_shape, actions: int, obs_dtype=np.float32, **kwargs) -> Collector:
    torch.manual_seed(0)
    cfg = WorldModelConfig(observation_shape=obs_shape, action_space_size=actions, embed_dim=16, num_heads=2,
                           num_layers=1, context_length=4, max_tokens=8, env_num=2, num_simulations=2,
                           support_size=5)
    replay = ReplayBuffer(1000, obs_shape, actions, observation_dtype=obs_dtype, unroll_steps=2, td_steps=2)
    return Collector(env_id, 2, WorldModel(cfg), replay, search=SEARCH, seed=0, segment_length=100,
                     history_steps=3, keep_root_context=True, **kwargs)


def stored_rewards(c: Collector) -> list[float]:
    return np.concatenate(c.replay.contents().fields["rewards"]).tolist()


@pytest.mark.parametrize("clip", [False, True])
def test_rewards_are_clipped_only_when_asked_and_returns_stay_raw(clip):
    c = collector("ZerokvTest/Lives-v0", (2,), 2, clip_rewards=clip)
    returns = []
    for _ in range(12):
        returns += c.step(1.0).finished_returns
    raw = [[2.5, -3.0, 0.0][t % 3] for t in range(12)]
    assert stored_rewards(c) == (np.sign(raw * 2).tolist() if clip else raw * 2)
    assert returns == [sum(raw)] * 2  # the logged return is the game's, unclipped


def test_a_lost_life_ends_the_learning_episode_but_not_the_game():
    c = collector("ZerokvTest/Lives-v0", (2,), 2, terminal_on_life_loss=True)
    for _ in range(5):
        c.step(1.0)
    # One life lost at step 4 in each env: a terminal segment of 4 steps each; the game goes on.
    table = c.replay.segment_table()
    assert table.lengths.tolist() == [4, 4] and table.terminated.tolist() == [True, True]
    track = c.tracks[0]
    assert track.episode == 0 and len(track.episode_actions) == 5 and track.lives == 2
    assert len(track.segment) == 1 and len(track.history_obs) == 1  # a fresh context after the loss
    for _ in range(7):
        c.step(1.0)
    table = c.replay.segment_table()
    assert table.lengths.tolist() == [4, 4, 4, 4, 4, 4] and table.terminated.all()
    assert c.tracks[0].episode == 1  # the game ended at 12 steps
    plain = collector("ZerokvTest/Lives-v0", (2,), 2)
    for _ in range(12):
        plain.step(1.0)
    assert plain.replay.segment_table().lengths.tolist() == [12, 12]


def test_atari_frames_reach_the_model_as_floats_and_the_state_has_no_frames():
    c = collector("ALE/Pong-v5", (3, 64, 64), 6, np.uint8)
    seen = []
    initial_inference = c.world_model.initial_inference

    def spy(obs, *args, **kwargs):
        seen.append(obs)
        return initial_inference(obs, *args, **kwargs)

    c.world_model.initial_inference = spy
    for _ in range(9):
        before = c.obs.copy()
        c.step(1.0)
    assert c.obs.dtype == np.uint8 and seen[-1].dtype == torch.float32
    assert torch.equal(seen[-1], torch.from_numpy(before).float() / 255)
    state = c.state_dict()
    frames = [k for t in state["tracks"] for k, v in t.items()
              if isinstance(v, torch.Tensor) and v.dtype == torch.uint8]
    assert not frames
    # A fresh collector restores the open segment's and the history's frames by replaying the
    # episode: the same arrays, and the same next step.
    d = collector("ALE/Pong-v5", (3, 64, 64), 6, np.uint8)
    d.load_state_dict(state)
    np.testing.assert_array_equal(c.obs, d.obs)
    for a, b in zip(c.tracks, d.tracks, strict=True):
        np.testing.assert_array_equal(np.stack(a.history_obs), np.stack(b.history_obs))
        assert [s.action for s in a.segment.open_steps()] == [s.action for s in b.segment.open_steps()]
        for x, y in zip(a.segment.open_steps(), b.segment.open_steps(), strict=True):
            np.testing.assert_array_equal(x.obs, y.obs)
            np.testing.assert_array_equal(x.policy, y.policy)
            assert (x.reward, x.root_value) == (y.reward, y.root_value)
    c.world_model.clear_caches()
    d.world_model.clear_caches()
    c.rebuild_contexts()
    d.rebuild_contexts()
    np.testing.assert_array_equal(c.step(1.0).search.action, d.step(1.0).search.action)
    np.testing.assert_array_equal(c.obs, d.obs)
