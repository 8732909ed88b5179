"""A continuous-action run through the one training loop (in-process, and a Ray collector's
worker), resumed, then played by ``zerokv.Agent``; the loaders' size checks on a continuous
model's fields; ``--compile`` refused for continuous actions in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import zerokv
from zerokv import WorldModel, WorldModelConfig
from zerokv.cli import main
from zerokv.model.bounds import FILE_SAMPLED_ACTIONS_CEILING, check_config_fits
from zerokv.rl import TrainConfig, latest_checkpoint, load_checkpoint, train
from zerokv.rl.factory import world_model_config
from zerokv.rl.worker import CollectorWorker, WeightsOffer


def tiny(out, **overrides) -> TrainConfig:
    base = dict(
        env="Pendulum-v1", out=str(out), total_env_steps=32, num_envs=2, collect_steps=4,
        num_simulations=4, num_sampled_actions=3, embed_dim=16, num_heads=2, num_layers=1, context_length=4,
        support_size=5, batch_size=4, unroll_steps=2, td_steps=2, min_replay_steps=8, segment_length=5,
        eval_episodes=1, eval_every=0, checkpoint_every=16, progress=False, history_steps=4, eval_max_steps=6,
    )
    base.update(overrides)
    return TrainConfig(**base)


@pytest.mark.slow
def test_a_continuous_run_trains_resumes_and_the_agent_plays_it(tmp_path):
    out = tmp_path / "pendulum"
    result = train(tiny(out))
    assert result.env_steps == 32 and len(result.eval_returns) == 1 and np.isfinite(result.eval_returns[0])
    stats = result.cache_stats
    assert stats["fallbacks"] == 0 and stats["misses"] == 0 and stats["hits"] > 0
    ckpt = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    assert ckpt["model_config"]["action_dim"] == 1 and ckpt["model_config"]["action_space_size"] == 3
    assert ckpt["learner"]["updates"] > 0
    resumed = train(tiny(out, resume=True, total_env_steps=48))
    assert resumed.env_steps == 48 and resumed.cache_stats["fallbacks"] == 0

    agent = zerokv.Agent.load(out, num_simulations=3)
    env = agent.make_env()
    obs, _ = env.reset(seed=0)
    action = agent.predict(obs)
    assert action.shape == (1,) and action.dtype == np.float32 and -1.0 <= action[0] <= 1.0
    assert agent.last_search.sampled_actions.shape == (1, 3, 1)
    obs, reward, *_ = env.step(action)
    assert np.isfinite(reward) and agent.predict(obs).shape == (1,)  # extends the env's context
    batch = agent.predict(np.stack([obs, obs, obs]))
    assert batch.shape == (3, 1) and batch.dtype == np.float32 and np.abs(batch).max() <= 1.0
    agent.reset([1])
    assert agent.predict(np.stack([obs, obs, obs])).shape == (3, 1)


def test_a_ray_collector_worker_collects_continuous_segments(tmp_path):
    cfg = tiny(tmp_path, collectors=1, collector_cpus=0.5)
    torch.manual_seed(0)
    weights = WorldModel(world_model_config(cfg)).state_dict()
    worker = CollectorWorker(cfg.to_dict(), 0, start_env_steps=0)
    got = worker.collect(7, 1.0, WeightsOffer(1, weights))  # a segment of 5 closes at the 6th root
    assert got.env_steps == 14 and got.segments and got.cache["fallbacks"] == got.cache["misses"] == 0
    segment = got.segments[0]  # closed: whole arrays
    assert segment.actions.dtype == np.float32 and segment.actions.shape[1:] == (1,)
    assert np.abs(segment.actions).max() <= 1.0 and segment.sampled_actions.shape[1:] == (3, 1)


def continuous_config(**changes) -> WorldModelConfig:
    return WorldModelConfig(**{**dict(observation_shape=(3,), action_space_size=20, action_dim=1, embed_dim=16,
                                      num_layers=1, num_heads=2, context_length=4, support_size=5), **changes})


def test_the_loaders_bound_a_continuous_models_action_fields():
    config = continuous_config()
    n = sum(p.numel() for p in WorldModel(config).parameters())
    check_config_fits(config, n, "config.json")  # a genuine pair passes
    with pytest.raises(ValueError, match=r"action_dim=100000 needs at least .* parameters"):
        check_config_fits(continuous_config(action_dim=100_000), n, "config.json")
    big_k = FILE_SAMPLED_ACTIONS_CEILING + 1
    with pytest.raises(ValueError, match=rf"action_space_size={big_k} sampled actions per node .* at most "
                                         rf"{FILE_SAMPLED_ACTIONS_CEILING}"):
        check_config_fits(continuous_config(action_space_size=big_k), n, "config.json")
    check_config_fits(continuous_config(action_space_size=big_k), n, "config.json", explicit=["action_space_size"])


def test_compile_is_refused_for_continuous_actions_in_one_line(tmp_path, capsys):
    with pytest.raises(ValueError, match="compile=True with action_dim=1"):
        world_model_config(tiny(tmp_path, compile=True))
    with pytest.raises(SystemExit):
        main(["train", "--env", "Pendulum-v1", "--compile", "--out", str(tmp_path / "c"), "--total-env-steps", "8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("zerokv train: error:") and "compile=True with action_dim=1" in err[-1]


@pytest.mark.slow
def test_a_continuous_run_on_ray_collectors_trains_and_resumes(tmp_path):
    from zerokv.rl import raycluster

    ray = raycluster.import_ray()
    if ray.is_initialized():
        ray.shutdown()
    raycluster.connect(None, num_cpus=2)
    try:
        cfg = dict(collectors=2, collector_cpus=0.5, total_env_steps=64, checkpoint_every=32)
        result = train(tiny(tmp_path / "r", **cfg))
        assert result.env_steps == 64 and result.cache_stats["fallbacks"] == 0 and result.cache_stats["hits"] > 0
        ckpt = load_checkpoint(latest_checkpoint(tmp_path / "r" / "checkpoints"))
        assert ckpt["learner"]["updates"] > 0 and ckpt["model_config"]["action_dim"] == 1
        resumed = train(tiny(tmp_path / "r", **{**cfg, "resume": True, "total_env_steps": 96}))
        assert resumed.env_steps == 96
    finally:
        ray.shutdown()
