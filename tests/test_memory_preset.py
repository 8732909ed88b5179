"""The memory preset (`--preset memory`), `--memory-length`, and the refusals of episodes that do not fit."""

from __future__ import annotations

import pytest

from zerokv.presets import preset_path
from zerokv.rl.config import TrainConfig
from zerokv.rl.config_files import load_overrides
from zerokv.rl.envs import EnvOptions, make_env
from zerokv.rl.factory import env_options, world_model_config


def preset(**overrides) -> TrainConfig:
    return TrainConfig(**{**load_overrides(preset_path("memory")), **overrides})


def test_the_preset_is_unizeros_memory_config():
    cfg = preset()
    assert (cfg.env, cfg.memory_length) == ("zerokv/VisualMatch-v0", 60)
    assert (cfg.unroll_steps, cfg.segment_length, cfg.td_steps) == (76, 76, 76)  # 16 + memory length
    model = world_model_config(cfg)
    assert model.observation_shape == (3, 5, 5) and model.action_space_size == 4
    assert (model.embed_dim, model.num_layers, model.num_heads) == (256, 4, 4)
    assert model.context_length == model.max_tokens == 162  # 2 * (76 + 5)
    env = make_env(cfg.env, options=env_options(cfg))
    assert env.unwrapped.episode_steps == 76


def test_memory_length_reaches_the_env():
    env = make_env("zerokv/VisualMatch-v0", seed=0, options=EnvOptions(memory_length=9))
    assert env.unwrapped.episode_steps == 1 + 9 + 15
    cfg = preset(memory_length=10)
    assert make_env(cfg.env, options=env_options(cfg)).unwrapped.memory_length == 10


def test_an_episode_longer_than_the_context_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"96 steps = 192 tokens.*context_length=162"):
        preset(memory_length=80)


def test_an_episode_longer_than_the_unroll_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"86 steps.*unroll_steps=76"):
        preset(memory_length=70, context_length=400)


def test_memory_length_only_for_memory_tasks():
    with pytest.raises(ValueError, match="not a memory task"):
        TrainConfig(memory_length=5)
    with pytest.raises(ValueError, match="only the memory tasks"):
        make_env("CartPole-v1", options=EnvOptions(memory_length=5))
    with pytest.raises(ValueError, match="memory_length"):
        preset(memory_length=0)


@pytest.mark.slow
def test_a_tiny_visual_match_run_trains_on_whole_episodes(tmp_path):
    from zerokv.rl.trainer import train

    # Episodes of 1 + 2 + 15 = 18 steps: unroll, segment and TD steps cover one whole episode.
    cfg = TrainConfig(env="zerokv/VisualMatch-v0", memory_length=2, out=str(tmp_path), total_env_steps=36,
                      num_envs=2, collect_steps=9, num_simulations=2, embed_dim=16, num_heads=2, num_layers=1,
                      context_length=40, unroll_steps=18, segment_length=18, td_steps=18, support_size=5,
                      batch_size=2, min_replay_steps=0, eval_episodes=1, eval_every=0, checkpoint_every=36,
                      progress=False, history_steps=18, replay_sampling="segment_start")
    result = train(cfg)
    assert result.env_steps >= 36 and len(result.eval_returns) == 1
    assert result.eval_returns[0] in (0.0, 1.0)  # VisualMatch pays 1 or nothing (apples are worth 0)
    stats = result.cache_stats
    assert stats["fallbacks"] == 0 and stats["misses"] == 0 and stats["hits"] > 0
