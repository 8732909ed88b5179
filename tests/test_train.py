"""Training on a tiny budget: train → checkpoint → resume → eval, and the errors that lose nothing."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from zerokv.cli import main
from zerokv.rl.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from zerokv.rl.config import TrainConfig
from zerokv.rl.trainer import Trainer, train


def tiny(out, **overrides) -> TrainConfig:
    base = dict(
        env="CartPole-v1", out=str(out), total_env_steps=32, num_envs=2, collect_steps=4,
        num_simulations=4, embed_dim=16, num_heads=2, num_layers=1, context_length=4, support_size=5,
        batch_size=4, unroll_steps=2, td_steps=2, min_replay_steps=8, segment_length=5,
        eval_episodes=1, eval_every=0, checkpoint_every=8, progress=False, history_steps=4,
    )
    base.update(overrides)
    return TrainConfig(**base)


def final_weights(out) -> dict[str, torch.Tensor]:
    return load_checkpoint(latest_checkpoint(out / "checkpoints"))["learner"]["model"]


@pytest.mark.slow
def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path):
    full = train(tiny(tmp_path / "full"))
    assert full.env_steps == 32 and len(full.eval_returns) == 1
    train(tiny(tmp_path / "split", total_env_steps=16))
    resumed = train(tiny(tmp_path / "split", resume=True))
    assert resumed.env_steps == 32
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    # Something was learned: every weight moved further than AdamW's weight decay alone would take
    # it (decay shrinks a weight by lr·wd per update; only gradients move it further).
    cfg = tiny(tmp_path / "init")
    updates = load_checkpoint(latest_checkpoint(tmp_path / "full" / "checkpoints"))["learner"]["updates"]
    assert updates == cfg.replay_ratio * (cfg.total_env_steps - cfg.min_replay_steps)  # 0.5 × (32 − 8)
    init = Trainer(cfg).model.state_dict()
    decayed = {n: init[n] * (1 - cfg.learning_rate * cfg.weight_decay) ** updates for n in init}
    moved = {n: float((a[n] - decayed[n]).abs().max()) for n in a}
    assert min(moved.values()) > 1e-4, moved


@pytest.mark.slow
def test_reanalysis_refreshes_stored_targets_and_resumes_exactly(tmp_path):
    opts = dict(reanalyze_per_iteration=6, reanalyze_batch=4, num_simulations=9)  # chunks of 4 and 2
    train(tiny(tmp_path / "full", **opts))
    train(tiny(tmp_path / "split", total_env_steps=16, **opts))
    train(tiny(tmp_path / "split", resume=True, **opts))
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "split")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    rows = (tmp_path / "full" / "progress.csv").read_text().splitlines()
    header = rows[0].split(",")
    tv = [float(r.split(",")[header.index("reanalyze/policy_tv")]) for r in rows[1:]
          if r.split(",")[header.index("reanalyze/policy_tv")]]
    assert tv and all(0 <= x <= 1 for x in tv) and max(tv) > 0  # targets were replaced by new searches


@pytest.mark.slow
def test_caches_stay_exact_and_complete_while_training(tmp_path):
    result = train(tiny(tmp_path / "run"))
    stats = result.cache_stats
    assert stats["fallbacks"] == 0 and stats["misses"] == 0 and stats["hits"] > 0


@pytest.mark.slow
def test_the_reference_behaviour_loses_the_root_context(tmp_path):
    result = train(tiny(tmp_path / "ref", keep_root_context=False))
    assert result.cache_stats["fallbacks"] > 0


@pytest.mark.slow
def test_legacy_and_manager_train_identically(tmp_path):
    train(tiny(tmp_path / "new", use_new_cache_manager=True))
    train(tiny(tmp_path / "old", use_new_cache_manager=False))
    a, b = final_weights(tmp_path / "new"), final_weights(tmp_path / "old")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    # The paged backend computes the same numbers in another order: the same run, up to rounding.
    train(tiny(tmp_path / "paged", cache_backend="paged"))
    c = final_weights(tmp_path / "paged")
    for name in a:
        torch.testing.assert_close(a[name], c[name], rtol=1e-4, atol=1e-5, msg=name)
    progress_new = (tmp_path / "new" / "progress.csv").read_text().splitlines()
    progress_old = (tmp_path / "old" / "progress.csv").read_text().splitlines()
    assert len(progress_new) == len(progress_old) > 1


@pytest.mark.slow
def test_a_bfloat16_search_copy_trains_resumes_and_checkpoints_float32(tmp_path, capsys):
    trainer = Trainer(tiny(tmp_path / "full", search_dtype="bfloat16"))
    full = trainer.run()
    assert trainer.model.config.dtype == "float32" and trainer.search_model.config.dtype == "bfloat16"
    assert trainer.collector.world_model is trainer.search_model
    # Refreshed after the last update: the search copy holds the trained weights, cast.
    trained = trainer.model.state_dict()
    for name, tensor in trainer.search_model.state_dict().items():
        assert torch.equal(tensor, trained[name].to(torch.bfloat16)), name
    stats = full.cache_stats
    assert stats["fallbacks"] == 0 and stats["misses"] == 0 and stats["hits"] > 0
    train(tiny(tmp_path / "split", total_env_steps=16, search_dtype="bfloat16"))
    train(tiny(tmp_path / "split", resume=True, search_dtype="bfloat16"))
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "split")
    for name in a:  # checkpoints hold the float32 weights only; resuming rebuilds the copy
        assert a[name].dtype == torch.float32
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    ckpt = latest_checkpoint(tmp_path / "full" / "checkpoints")
    capsys.readouterr()
    main(["eval", "--checkpoint", str(ckpt), "--episodes", "1"])  # searches in the run's search dtype
    assert "mean return" in capsys.readouterr().out


def test_the_default_search_uses_the_training_model_itself(tmp_path):
    trainer = Trainer(tiny(tmp_path / "f32"))
    assert trainer.search_model is trainer.model and trainer.model.config.dtype == "float32"


@pytest.mark.slow
def test_cli_train_then_eval(tmp_path, capsys):
    cfg = tiny(tmp_path / "cli")
    args = ["train"]
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        flag = f"--{field.name.replace('_', '-')}"
        if field.name in ("resume", "config", "progress") or value is None:
            continue
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{flag[2:]}")
        else:
            args += [flag, str(value)]
    main(args + ["--no-progress"])
    out = capsys.readouterr().out
    assert "evaluation return" in out and "fallbacks=0" in out
    ckpt = latest_checkpoint(tmp_path / "cli" / "checkpoints")
    main(["eval", "--checkpoint", str(ckpt), "--episodes", "2"])
    assert "mean return" in capsys.readouterr().out
    assert (tmp_path / "cli" / "config.json").is_file()
    assert any((tmp_path / "cli" / "tb").iterdir())


def test_config_file_overrides_defaults(tmp_path):
    from zerokv.rl.config import load_overrides

    path = tmp_path / "c.yaml"
    path.write_text("num_simulations: 7\nuse_new_cache_manager: false\n")
    assert load_overrides(path) == {"num_simulations": 7, "use_new_cache_manager": False}
    bad = tmp_path / "bad.toml"
    bad.write_text("num_simulation = 7\n")
    with pytest.raises(ValueError, match="num_simulation"):
        load_overrides(bad)


def test_bad_envs_are_named(tmp_path, capsys):
    with pytest.raises(ValueError, match="NoSuchEnv-v0"):
        Trainer(tiny(tmp_path, env="NoSuchEnv-v0"))
    with pytest.raises(ValueError, match="Discrete"):
        Trainer(tiny(tmp_path, env="Pendulum-v1"))
    with pytest.raises(SystemExit) as exc:
        main(["train", "--env", "NoSuchEnv-v0", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "NoSuchEnv-v0" in capsys.readouterr().err


@pytest.mark.slow
def test_a_tampered_checkpoint_is_refused_and_the_run_can_resume_from_an_intact_one(tmp_path, capsys):
    train(tiny(tmp_path / "t", total_env_steps=16))
    ckpts = sorted((tmp_path / "t" / "checkpoints").glob("ckpt_*.pt"))
    assert len(ckpts) == 2
    data = bytearray(ckpts[-1].read_bytes())
    data[-10] ^= 0xFF
    ckpts[-1].write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        train(tiny(tmp_path / "t", resume=True))
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--checkpoint", str(ckpts[-1])])
    assert exc.value.code == 2 and "fails its SHA-256 check" in capsys.readouterr().err
    ckpts[-1].unlink()  # the earlier checkpoint is untouched and resumes
    assert train(tiny(tmp_path / "t", resume=True)).env_steps == 32


@pytest.mark.slow
def test_the_run_stops_once_solved_and_keeps_the_best_weights(tmp_path):
    # Every CartPole episode returns >= 1, so the first evaluation (at 16 env steps) "solves" it.
    solved = train(tiny(tmp_path / "s", total_env_steps=64, eval_every=16, stop_return=1.0))
    assert solved.solved_at == solved.env_steps == 16
    assert latest_checkpoint(tmp_path / "s" / "checkpoints").name == "ckpt_000000016.pt"
    best = load_checkpoint(tmp_path / "s" / "best.pt")
    assert best["counters"]["env_steps"] == 16
    assert best["counters"]["best_eval_return"] == pytest.approx(np.mean(solved.eval_returns))
    never = train(tiny(tmp_path / "n", total_env_steps=32, eval_every=16, stop_return=float("inf")))
    assert never.solved_at is None and never.env_steps == 32


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_envs", 0, "num_envs=0; must be a positive int"),
        ("target_update_rate", 2.0, "target_update_rate=2.0"),
        ("stop_return", float("nan"), "stop_return=nan"),
        ("reanalyze_per_iteration", -1, "reanalyze_per_iteration=-1"),
        ("search_dtype", "float16", "search_dtype='float16'; allowed: float32, bfloat16"),
        ("learning_rate", float("inf"), "learning_rate=inf; must be a finite number > 0"),
        ("learning_rate", float("nan"), "learning_rate=nan"),
        # Refused since issue 17: each of these used to be accepted (and failed later, or never).
        ("eval_every", -100, "eval_every=-100; must be an int >= 0"),
        ("min_replay_steps", -1, "min_replay_steps=-1"),
        ("min_replay_steps", 200_000, "min_replay_steps=200000; must be an int in [0, 100000]"),
        ("temperature_decay_steps", -5, "temperature_decay_steps=-5; must be an int >= 0"),
        ("temperature_start", -1.0, "temperature_start=-1.0; must be a finite number >= 0"),
        ("temperature_end", float("inf"), "temperature_end=inf"),
        ("dirichlet_alpha", 0.0, "dirichlet_alpha=0.0; must be a finite number > 0"),
        ("exploration_fraction", 1.5, "exploration_fraction=1.5; must be a finite number >= 0 and <= 1"),
        ("weight_decay", -1e-4, "weight_decay=-0.0001; must be a finite number >= 0"),
        ("seed", -1, "seed=-1; must be an int >= 0"),
        ("device", "cuda", "device='cuda'"),
        ("device", "tpu", "device='tpu'; allowed: cpu, cuda, cuda:N, mps"),
        ("progress", "yes", "progress='yes'; must be True or False"),
        ("fresh_value_targets", 1, "fresh_value_targets=1; must be True or False"),
        ("out", "", "out=''; must be a non-empty string"),
        ("embed_dim", 65, "embed_dim=65"),  # the model's own checks, before any env exists
        ("context_length", 7, "context_length=7"),
        ("cache_backend", "pages", "cache_backend='pages'"),
    ],
)
def test_bad_train_values_are_named_at_construction(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**{field: value})
