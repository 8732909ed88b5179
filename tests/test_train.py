"""Training on a tiny budget: train → checkpoint → resume → eval, the errors that lose nothing,
and the run directory: no mixing of runs, saved config on resume, rotation, kill -9 and resume."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from zerokv import ReplaySnapshotError, RunDirError
from zerokv.cli import main
from zerokv.rl import TrainConfig, Trainer, evaluate, train
from zerokv.rl.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint


def tiny(out, **overrides) -> TrainConfig:
    base = dict(
        env="CartPole-v1", out=str(out), total_env_steps=32, num_envs=2, collect_steps=4,
        num_simulations=4, embed_dim=16, num_heads=2, num_layers=1, context_length=4, support_size=5,
        batch_size=4, unroll_steps=2, td_steps=2, min_replay_steps=8, segment_length=5,
        eval_episodes=1, eval_every=0, checkpoint_every=8, progress=False, history_steps=4,
        eval_max_steps=20,  # a better-trained tiny model must not make a test play 500 CartPole steps
        threads=1,
    )
    base.update(overrides)
    return TrainConfig(**base)


def final_weights(out) -> dict[str, torch.Tensor]:
    return load_checkpoint(latest_checkpoint(out / "checkpoints"))["learner"]["model"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted `tiny` run: the reference of the resume tests."""
    out = tmp_path_factory.mktemp("full") / "full"
    return train(tiny(out)), out


@pytest.mark.slow
def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path, full_run):
    full, full_out = full_run
    assert full.env_steps == 32 and len(full.eval_returns) == 1
    train(tiny(tmp_path / "split", total_env_steps=16))
    resumed = train(tiny(tmp_path / "split", resume=True))
    assert resumed.env_steps == 32
    a, b = final_weights(full_out), final_weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    # Something was learned: every weight moved further than AdamW's weight decay alone would take
    # it (decay shrinks a weight by lr·wd per update; only gradients move it further).
    cfg = tiny(tmp_path / "init")
    updates = load_checkpoint(latest_checkpoint(full_out / "checkpoints"))["learner"]["updates"]
    assert updates == cfg.replay_ratio * (cfg.total_env_steps - cfg.min_replay_steps)  # 0.5 × (32 − 8)
    init = Trainer(cfg).model.state_dict()
    decayed = {n: init[n] * (1 - cfg.learning_rate * cfg.weight_decay) ** updates for n in init}
    moved = {n: float((a[n] - decayed[n]).abs().max()) for n in a}
    assert min(moved.values()) > 1e-4, moved


@pytest.mark.slow
def test_reanalysis_refreshes_stored_targets_and_resumes_exactly(tmp_path):
    # Chunks of 4 and 2; 16 simulations, since with 9 this tiny model's searches can all come out
    # [1/9, 8/9] before and after (a policy change of exactly 0).
    opts = dict(reanalyze_per_iteration=6, reanalyze_batch=4, num_simulations=16)
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
def test_progress_splits_each_iteration_into_search_env_and_learner_time(full_run):
    _, out = full_run
    with (out / "progress.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows:
        search, env, learner, total = (float(row[f"time/{k}"]) for k in ("search_s", "env_s", "learner_s", "iteration_s"))
        assert search > 0 and env > 0 and learner >= 0
        assert search + env + learner <= total
    assert any(float(r["time/learner_s"]) > 0 for r in rows)  # updates ran and were timed


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
    assert trainer.source.collector.world_model is trainer.search_model
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


def test_a_trainer_gives_the_process_back_its_torch_thread_count(tmp_path):
    assert torch.get_num_threads() == 1  # tests/conftest.py
    trainer = Trainer(tiny(tmp_path / "threads", threads=2))
    assert torch.get_num_threads() == 2
    trainer.close()
    assert torch.get_num_threads() == 1


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
    from zerokv.rl.config_files import load_overrides

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
    with pytest.raises(ValueError, match="observation space Discrete"):  # Pendulum-v1's Box actions are accepted now
        Trainer(tiny(tmp_path, env="FrozenLake-v1"))
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
    ckpts[-1].unlink()  # the earlier checkpoint is intact, but the one replay snapshot is of step 16
    with pytest.raises(ReplaySnapshotError, match=r"replay_000000016 is of run \w+ at 16 env steps.*at 8 env steps"):
        train(tiny(tmp_path / "t", resume=True))
    shutil.rmtree(tmp_path / "t" / "checkpoints" / "replay_000000016")  # as the message says
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
        # Each of these used to be accepted (and failed later, or never).
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
        # The Atari and run-directory fields.
        ("keep_checkpoints", 0, "keep_checkpoints=0"),
        ("eval_max_steps", 0, "eval_max_steps=0"),
        ("sticky_action_prob", 1.5, "sticky_action_prob=1.5"),
        ("frame_skip", 0, "frame_skip=0"),
        ("clip_rewards", "yes", "clip_rewards='yes'"),
        ("save_replay", 1, "save_replay=1"),
        ("terminal_on_life_loss", True, "needs an Atari env with lives; env='CartPole-v1'"),
    ],
)
def test_bad_train_values_are_named_at_construction(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**{field: value})


def test_resume_and_overwrite_exclude_each_other_and_life_loss_is_for_atari():
    with pytest.raises(ValueError, match="choose one"):
        TrainConfig(out="r", resume=True, overwrite=True)
    assert TrainConfig(env="ALE/Pong-v5", terminal_on_life_loss=True).terminal_on_life_loss


@pytest.mark.slow
def test_a_run_never_mixes_with_an_earlier_one_in_the_same_out(tmp_path, capsys):
    train(tiny(tmp_path / "r", total_env_steps=16))
    with pytest.raises(RunDirError, match=r"already holds a run .*pass --resume to continue it, or --overwrite"):
        train(tiny(tmp_path / "r"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # one line from the CLI
        main(["train", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1
    train(tiny(tmp_path / "r", total_env_steps=8, checkpoint_every=4, overwrite=True))
    assert "deleted the previous run" in capsys.readouterr().out
    names = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    assert names == ["ckpt_000000008.pt", "replay_000000008"]  # none of the first run's are left
    rows = (tmp_path / "r" / "progress.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["env_steps", "8"]


@pytest.mark.slow
def test_resume_runs_with_the_saved_config(tmp_path):
    train(tiny(tmp_path / "r", total_env_steps=16, learning_rate=2e-3))
    with pytest.raises(RunDirError, match=r"embed_dim=32 \(the run has 16\)"):  # not a size-mismatch traceback
        train(tiny(tmp_path / "r", resume=True, embed_dim=32))
    with pytest.raises(RunDirError, match=r"seed=5 \(the run has 0\)"):
        train(tiny(tmp_path / "r", resume=True, seed=5))
    # learning_rate is not given (the default): the run's 2e-3 stands; the budget may grow.
    result = train(tiny(tmp_path / "r", resume=True, total_env_steps=24))
    assert result.env_steps == 24
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["learning_rate"] == 2e-3 and saved["total_env_steps"] == 24
    assert saved["resume"] is False  # how this invocation opened the run is not one of its settings
    assert load_checkpoint(latest_checkpoint(tmp_path / "r" / "checkpoints"))["config"]["learning_rate"] == 2e-3


def test_unwritable_out_fails_before_training(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match=r"cannot create .*file/run: Not a directory"):
        train(tiny(tmp_path / "file" / "run"))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoints").write_text("")  # used to fail only at the first save, after training
    with pytest.raises(RunDirError, match="checkpoints exists and is not a directory"):
        Trainer(tiny(tmp_path / "r"))
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [".lock", "checkpoints"]  # nothing ran


@pytest.mark.slow
def test_rotation_keeps_n_checkpoints_one_snapshot_and_a_weights_only_best(tmp_path):
    result = train(tiny(tmp_path / "r", total_env_steps=40, eval_every=16, keep_checkpoints=2, stop_return=float("inf")))
    assert result.env_steps == 40
    names = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    assert names == ["ckpt_000000032.pt", "ckpt_000000040.pt", "replay_000000040"]
    best = load_checkpoint(tmp_path / "r" / "best.pt")
    assert set(best) == {"schema", "learner", "counters", "config", "model_config"}
    assert set(best["learner"]) == {"model"}  # no optimizer, target network or replay
    ckpt = (tmp_path / "r" / "checkpoints" / "ckpt_000000040.pt").stat().st_size
    weights = sum(t.numel() * t.element_size() for t in best["learner"]["model"].values())
    assert (tmp_path / "r" / "best.pt").stat().st_size < 2 * weights + 64 * 1024
    assert ckpt < 4 * weights + (1 << 20)  # weights, target encoder, two Adam moments, small state
    rows = [r.split(",") for r in (tmp_path / "r" / "progress.csv").read_text().splitlines()]
    steps_col, bytes_col = rows[0].index("replay/steps"), rows[0].index("replay/bytes")
    assert int(rows[-1][steps_col]) > 0 and int(rows[-1][bytes_col]) == int(rows[-1][steps_col]) * (16 + 4 * 9)


@pytest.mark.slow
def test_a_resume_without_a_replay_snapshot_refills_by_collecting(tmp_path, capsys):
    train(tiny(tmp_path / "r", total_env_steps=16, save_replay=False))
    assert not list((tmp_path / "r" / "checkpoints").glob("replay_*"))
    capsys.readouterr()
    trainer = Trainer(tiny(tmp_path / "r", resume=True, total_env_steps=32))
    updates = []
    update = trainer.learner.update
    trainer.learner.update = lambda batch: updates.append(trainer.replay.num_steps) or update(batch)
    assert trainer.run().env_steps == 32
    out = capsys.readouterr().out
    assert "replay: the snapshot was not saved (--no-save-replay); refilling it by collecting" in out
    saved = int(out.split("refilling it by collecting ")[1].split()[0])
    assert saved > 0 and updates and min(updates) >= saved  # no update before replay holds as much again


_KILLED_RUN = """
import json, os, signal, sys
import zerokv.rl.snapshot as snapshot
from zerokv.rl import TrainConfig
from zerokv.rl import train

write = snapshot._write_npy
def dying(path, views):  # SIGKILL in the middle of the second checkpoint's replay snapshot
    digest = write(path, views)
    if "replay_000000016" in path.parent.name:
        os.kill(os.getpid(), signal.SIGKILL)
    return digest
snapshot._write_npy = dying
train(TrainConfig(**json.loads(sys.argv[1])))
"""


@pytest.mark.slow
def test_kill_9_mid_save_then_resume_repeats_no_row_leaves_no_orphan_and_is_exact(tmp_path, full_run):
    cfg = tiny(tmp_path / "killed")
    proc = subprocess.run([sys.executable, "-c", _KILLED_RUN, json.dumps(cfg.to_dict())], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpt_dir = tmp_path / "killed" / "checkpoints"
    assert [p.name for p in ckpt_dir.glob(".replay_000000016.*.tmp")]  # the killed save's orphan
    rows = (tmp_path / "killed" / "progress.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["8", "16"]  # the row of 16 went out before its checkpoint
    train(tiny(tmp_path / "killed", resume=True))  # takes the dead trainer's lock over
    assert not [p for p in (tmp_path / "killed").rglob("*.tmp")]
    rows = (tmp_path / "killed" / "progress.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["8", "16", "24", "32"]
    a, b = final_weights(full_run[1]), final_weights(tmp_path / "killed")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_evaluation_episodes_stop_at_the_step_cap(tmp_path):
    trainer = Trainer(tiny(tmp_path / "e"))
    kwargs = dict(episodes=2, seed=3, search=trainer.search)
    capped = evaluate(trainer.model.state_dict(), trainer.model_config, "CartPole-v1", max_steps=5, **kwargs)
    assert capped == [5.0, 5.0]  # CartPole pays 1 per step and lasts longer than 5 steps
    assert min(evaluate(trainer.model.state_dict(), trainer.model_config, "CartPole-v1", **kwargs)) > 5
    trainer.close()
