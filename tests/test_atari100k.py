"""The Atari 100k protocol preset (`--preset atari100k`, and `atari100k-cpu`), UniZero's encoder,
and what a long run needs: checkpoints by wall time, a checkpoint on SIGTERM/SIGINT before exit,
and a wide final evaluation."""

from __future__ import annotations

import csv
import json
import os
import signal

import pytest
import torch

from zerokv.model.config import WorldModelConfig
from zerokv.model.encoders import ImageEncoder, UniZeroEncoder
from zerokv.model.world_model import WorldModel
from zerokv.presets import preset_path
from zerokv.rl.checkpoint import latest_checkpoint, load_checkpoint
from zerokv.rl.config import TrainConfig
from zerokv.rl.config_files import load_overrides
from zerokv.rl.factory import resolve_env_defaults, world_model_config
from zerokv.rl.trainer import Trainer, train

MODEL_SIZE = {"embed_dim", "num_heads", "encoder_channels"}
"""The fields in which atari100k-cpu differs from atari100k."""


def preset(name: str, **overrides) -> TrainConfig:
    return TrainConfig(**{**load_overrides(preset_path(name)), "preset": name, **overrides})


def test_atari100k_is_the_protocol_and_unizero_s_network():
    cfg = resolve_env_defaults(preset("atari100k"))
    assert cfg.env == "PongNoFrameskip-v4" and cfg.total_env_steps == 100_000
    assert (cfg.frame_skip, cfg.sticky_action_prob, cfg.max_episode_frames) == (4, 0.0, 108_000)
    assert cfg.clip_rewards and cfg.terminal_on_life_loss and cfg.eval_max_steps == 27_000
    assert cfg.eval_episodes == 3 and cfg.final_eval_episodes >= 10 and cfg.eval_every == 10_000
    assert cfg.checkpoint_every_minutes == 10 and cfg.stop_return == float("inf")
    # LightZero's learning settings: value targets from the momentum copy, smoothed two-hot targets
    assert (cfg.value_bootstrap, cfg.target_update_rate, cfg.target_label_smoothing) == ("target", 0.05, 0.1)
    model = world_model_config(cfg)
    assert (model.encoder, model.encoder_channels, model.encoder_blocks) == ("unizero", 64, 1)
    assert (model.embed_dim, model.num_layers, model.num_heads, model.support_bins) == (768, 2, 8, 601)
    assert (model.observation_shape, model.action_space_size) == ((3, 64, 64), 6)


def test_atari100k_cpu_differs_only_in_model_size():
    full, cpu = load_overrides(preset_path("atari100k")), load_overrides(preset_path("atari100k-cpu"))
    assert full.keys() == cpu.keys()
    assert {k for k in full if full[k] != cpu[k]} == MODEL_SIZE
    assert cpu["embed_dim"] < full["embed_dim"] and cpu["encoder_channels"] < full["encoder_channels"]


def image_config(**overrides) -> WorldModelConfig:
    fields = dict(observation_shape=(3, 64, 64), action_space_size=6, embed_dim=64, encoder="unizero",
                  encoder_channels=16)
    return WorldModelConfig(**{**fields, **overrides})


def test_the_unizero_encoder_maps_frames_to_simnorm_latents_per_sample():
    torch.manual_seed(0)
    enc = UniZeroEncoder(image_config()).eval()
    obs = torch.rand(5, 3, 64, 64)
    with torch.no_grad():
        z = enc(obs)
        alone = enc(obs[2:3])
    assert z.shape == (5, 64)
    torch.testing.assert_close(z.view(5, 8, 8).sum(-1), torch.ones(5, 8))  # SimNorm: groups of 8 sum to 1
    torch.testing.assert_close(alone, z[2:3], rtol=0, atol=1e-6)  # no batch statistics: a row is its own
    # LightZero's layout at 16 channels: the stem's stages of 8 then 16 channels, 8x8 maps, one projection.
    assert enc.project.weight.shape == (64, 16 * 8 * 8)
    assert [m.out_channels for m in enc.stem if isinstance(m, torch.nn.Conv2d)] == [8]
    with pytest.raises(ValueError, match="encoder='resnet'"):
        image_config(encoder="resnet")
    with pytest.raises(ValueError, match="encoder_channels=15"):
        image_config(encoder_channels=15)


def test_the_world_model_builds_the_encoder_its_config_names():
    assert isinstance(WorldModel(image_config()).encoder, UniZeroEncoder)
    assert isinstance(WorldModel(image_config(encoder="light")).encoder, ImageEncoder)
    assert WorldModelConfig().encoder == "light"  # old checkpoints without the field keep their encoder


def tiny_pong(out, **overrides) -> TrainConfig:
    small = dict(out=str(out), embed_dim=16, num_layers=1, num_heads=2, support_size=5, num_envs=2,
                 num_simulations=3, batch_size=4, unroll_steps=2, td_steps=2, segment_length=4, collect_steps=4,
                 total_env_steps=16, checkpoint_every=8, eval_every=0, eval_episodes=1, final_eval_episodes=2,
                 eval_max_steps=6, min_replay_steps=0, replay_capacity=500, history_steps=4, progress=False,
                 encoder_channels=8, checkpoint_every_minutes=None)
    return preset("atari100k", **{**small, **overrides})


@pytest.mark.slow
def test_a_tiny_atari100k_run_records_its_encoder_and_evaluates_wide_at_the_end(tmp_path):
    result = train(tiny_pong(tmp_path / "run"))
    assert result.env_steps == 16 and len(result.eval_returns) == 2  # final_eval_episodes, not eval_episodes
    state = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert (state["model_config"]["encoder"], state["model_config"]["encoder_channels"]) == ("unizero", 8)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["preset"], saved["env"], saved["sticky_action_prob"], saved["max_episode_frames"]) == (
        "atari100k", "PongNoFrameskip-v4", 0.0, 108_000)
    model = WorldModel(WorldModelConfig(**{**state["model_config"], "observation_shape": (3, 64, 64)}))
    model.load_state_dict(state["learner"]["model"])  # the recorded encoder is the one that loads


def list_checkpoints(directory) -> list[str]:
    return sorted(p.name for p in directory.glob("ckpt_*.pt"))


def cartpole(out, **overrides) -> TrainConfig:
    base = dict(env="CartPole-v1", out=str(out), total_env_steps=24, num_envs=2, collect_steps=4,
                num_simulations=3, embed_dim=16, num_heads=2, num_layers=1, context_length=4, support_size=5,
                batch_size=4, unroll_steps=2, td_steps=2, min_replay_steps=8, segment_length=5, eval_episodes=1,
                eval_every=0, checkpoint_every=1000, keep_checkpoints=10, progress=False, history_steps=4,
                eval_max_steps=10, threads=1)
    return TrainConfig(**{**base, **overrides})


@pytest.mark.slow
def test_checkpoints_follow_wall_time_as_well_as_steps(tmp_path):
    train(cartpole(tmp_path / "steps"))
    assert list_checkpoints(tmp_path / "steps" / "checkpoints") == ["ckpt_000000024.pt"]
    with (tmp_path / "steps" / "progress.csv").open() as f:
        rows = list(csv.DictReader(f))
    walls = [float(r["time/wall_s"]) for r in rows]
    assert walls == sorted(walls) and walls[0] > 0
    for r in rows:  # a long run's memory and cache counts, every iteration
        assert float(r["memory/peak_rss_mb"]) >= float(r["memory/rss_mb"]) > 10
        assert int(r["cache/hits"]) > 0 and int(r["cache/misses"]) == 0 and int(r["cache/fallbacks"]) == 0
    train(cartpole(tmp_path / "time", checkpoint_every_minutes=1e-9))  # due after every iteration
    assert list_checkpoints(tmp_path / "time" / "checkpoints") == [
        "ckpt_000000008.pt", "ckpt_000000016.pt", "ckpt_000000024.pt"]
    with pytest.raises(ValueError, match="checkpoint_every_minutes=0"):
        cartpole(tmp_path / "bad", checkpoint_every_minutes=0)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_checkpoints_then_exits_and_the_resumed_run_is_exact(tmp_path, signum):
    full = tmp_path / "full"
    train(cartpole(full))
    before = signal.getsignal(signum)
    trainer = Trainer(cartpole(tmp_path / "split"))
    iteration = trainer._iteration

    def signalled_iteration():
        row = iteration()
        if trainer.iteration == 1:  # mid-run, as a session's end would arrive
            os.kill(os.getpid(), signum)
        return row

    trainer._iteration = signalled_iteration
    with pytest.raises(SystemExit) as stopped:
        trainer.run()
    assert stopped.value.code == 128 + signum
    assert list_checkpoints(tmp_path / "split" / "checkpoints") == ["ckpt_000000008.pt"]
    assert signal.getsignal(signum) == before  # the handler is restored
    stopped_wall = load_checkpoint(latest_checkpoint(tmp_path / "split" / "checkpoints"))["counters"]["wall_seconds"]
    train(cartpole(tmp_path / "split", resume=True))
    with (tmp_path / "split" / "progress.csv").open() as f:
        walls = [float(r["time/wall_s"]) for r in csv.DictReader(f)]
    assert len(walls) == 3 and walls[0] <= stopped_wall < walls[1] < walls[2]  # wall time goes on across sessions
    a = load_checkpoint(latest_checkpoint(full / "checkpoints"))["learner"]["model"]
    b = load_checkpoint(latest_checkpoint(tmp_path / "split" / "checkpoints"))["learner"]["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_plot_draws_return_against_env_steps_and_against_wall_hours(tmp_path):
    from zerokv.rl.plot import PlotArgs, plot, read_curve

    path = tmp_path / "pong.csv"
    path.write_text("env_steps,return/train,return/eval,return/eval_std,time/wall_s\n"
                    "5000,-21,,,1800\n10000,-20,-21,0,3600\n20000,-15,-12,2,9000\n")
    curve = read_curve(path, env="PongNoFrameskip-v4")
    assert curve.eval_hours == [1.0, 2.5] and curve.train_hours == [0.5, 1.0, 2.5]
    assert read_curve(path).eval_steps == [10000.0, 20000.0]
    old = tmp_path / "old.csv"  # a progress.csv without the column: one panel, as before
    old.write_text("env_steps,return/train,return/eval,return/eval_std\n100,1,2,0\n")
    assert read_curve(old).eval_hours == []
    both, one = plot(PlotArgs(runs=(str(path),), out=str(tmp_path / "both.png"))), plot(
        PlotArgs(runs=(str(old),), out=str(tmp_path / "one.png")))
    import matplotlib.image

    assert matplotlib.image.imread(both).shape[1] > matplotlib.image.imread(one).shape[1]  # two panels side by side
