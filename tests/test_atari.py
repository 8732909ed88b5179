"""The Atari preset (zerokv/presets/atari.yaml, `--preset atari`): the bench's `atari` model and UniZero's Atari settings,
and a tiny ALE/Pong-v5 run with it that trains, checkpoints, resumes exactly and evaluates under
a step cap."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zerokv.bench import CONFIGS
from zerokv.presets import preset_path
from zerokv.rl import latest_checkpoint, load_checkpoint
from zerokv.rl.config import TrainConfig
from zerokv.rl.config_files import load_overrides
from zerokv.rl.trainer import train, world_model_config

PRESET = preset_path("atari")


def preset(**overrides) -> TrainConfig:
    return TrainConfig(**{**load_overrides(PRESET), **overrides})


def test_the_preset_is_the_bench_atari_model_with_unizero_settings():
    cfg = preset()
    bench = CONFIGS["atari"]
    model = world_model_config(cfg)
    for name in ("observation_shape", "embed_dim", "num_layers", "num_heads", "context_length", "support_size",
                 "action_space_size", "env_num", "num_simulations"):
        assert getattr(model, name) == getattr(bench, name), name
    assert model.support_bins == 601
    assert (cfg.batch_size, cfg.unroll_steps, cfg.td_steps, cfg.replay_ratio, cfg.discount) == (64, 10, 5, 0.25, 0.997)
    assert (cfg.learning_rate, cfg.temperature_start, cfg.temperature_end) == (1e-4, 0.25, 0.25)
    assert cfg.clip_rewards and cfg.terminal_on_life_loss and cfg.frame_skip == 4 and not cfg.full_action_space
    assert cfg.eval_max_steps == 27_000
    assert TrainConfig().env == "CartPole-v1" and TrainConfig().clip_rewards is None  # CartPole stays the default


def tiny_pong(out, **overrides) -> TrainConfig:
    """The preset at a test's size: small model, 2 envs, few steps."""
    small = dict(out=str(out), embed_dim=16, num_layers=1, num_heads=2, support_size=5, num_envs=2,
                 num_simulations=3, batch_size=4, unroll_steps=2, td_steps=2, segment_length=4, collect_steps=4,
                 total_env_steps=24, checkpoint_every=8, eval_every=0, eval_episodes=1, eval_max_steps=12,
                 replay_capacity=500, history_steps=4, progress=False)
    return preset(**{**small, **overrides})


@pytest.mark.slow
def test_a_tiny_pong_run_with_the_preset_resumes_exactly_and_evaluates_under_the_cap(tmp_path):
    full = train(tiny_pong(tmp_path / "full"))
    assert full.env_steps == 24 and len(full.eval_returns) == 1
    assert full.cache_stats["fallbacks"] == 0 and full.cache_stats["misses"] == 0
    saved = json.loads((tmp_path / "full" / "config.json").read_text())
    assert (saved["clip_rewards"], saved["terminal_on_life_loss"], saved["sticky_action_prob"]) == (True, True, 0.25)
    train(tiny_pong(tmp_path / "split", total_env_steps=16))
    train(tiny_pong(tmp_path / "split", resume=True))
    a = load_checkpoint(latest_checkpoint(tmp_path / "full" / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "split" / "checkpoints"))
    for name, tensor in a["learner"]["model"].items():
        torch.testing.assert_close(tensor, b["learner"]["model"][name], rtol=0, atol=0, msg=name)
    # Replay holds uint8 frames: a snapshot's obs.npy is a quarter of float32's.
    snapshot = next((tmp_path / "full" / "checkpoints").glob("replay_*"))
    steps = json.loads((snapshot / "meta.json").read_text())["num_steps"]
    assert steps > 0 and (snapshot / "obs.npy").stat().st_size < steps * 3 * 64 * 64 + 1024
    assert np.load(snapshot / "obs.npy").dtype == np.uint8
