"""Every entry point on a tiny budget, as cleanrl tests its scripts: `zerokv train --track` (W&B
offline), `eval --json`, `enjoy --video`, `export` + `WorldModel.from_pretrained`, `plot`."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import zerokv
from zerokv import PretrainedError
from zerokv.cli import main
from zerokv.rl.plot import read_curve, reward_threshold, y_limits

TINY = ["--total-env-steps", "16", "--num-envs", "2", "--collect-steps", "4", "--num-simulations", "2",
        "--embed-dim", "16", "--num-layers", "1", "--context-length", "4", "--support-size", "5",
        "--batch-size", "4", "--unroll-steps", "2", "--td-steps", "2", "--min-replay-steps", "8",
        "--eval-episodes", "2", "--eval-every", "0", "--eval-max-steps", "20", "--no-progress",
        "--threads", "1"]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """`zerokv train --track` with W&B offline and the default --out (in a fresh working
    directory): (run directory, stdout)."""
    cwd = tmp_path_factory.mktemp("cwd")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.chdir(cwd)
        for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_ERROR_REPORTING": "false",
                            "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}.items():
            mp.setenv(name, value)
        main(["train", *TINY, "--track"])
    (run,) = (cwd / "runs").iterdir()
    return run, out.getvalue()


@pytest.mark.slow
def test_train_prints_its_config_once_into_a_run_directory_per_run(tracked_run):
    run, stdout = tracked_run
    assert run.name.startswith("CartPole-v1__0__")
    assert stdout.count("config (saved in") == 1
    printed = stdout.split("config (saved in", 1)[1].split("\n", 1)[1].split("stops early")[0]
    assert yaml.safe_load(printed) == json.loads((run / "config.json").read_text())


@pytest.mark.slow
def test_the_final_evaluation_reaches_the_csv_tensorboard_and_wandb(tracked_run):
    run, _ = tracked_run
    with (run / "progress.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[-1]["env_steps"] == "16" and rows[-1]["return/eval"]  # --eval-every 0: only the final one
    tb = EventAccumulator(str(run / "tb"))
    tb.Reload()
    final = tb.Scalars("final/return/eval")
    assert [e.step for e in final] == [16] and final[0].value == pytest.approx(float(rows[-1]["return/eval"]))
    assert "config/text_summary" in tb.Tags()["tensors"]
    assert "_hparams_/experiment" in tb.PluginTagToContent("hparams")
    (record,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    data = record.read_bytes()  # W&B's record log: keys and values are stored as plain strings
    assert data.count(b"cache/hit_rate") >= 2 and b"final/return/eval" in data and b'"CartPole-v1"' in data


@pytest.mark.slow
def test_eval_prints_each_episode_and_writes_json(tracked_run, tmp_path, capsys):
    run, _ = tracked_run
    main(["eval", "--checkpoint", str(run / "best.pt"), "--episodes", "3", "--json", str(tmp_path / "e.json"),
          "--device", "cpu"])
    text = capsys.readouterr().out
    report = json.loads((tmp_path / "e.json").read_text())
    returns = [e["return"] for e in report["episodes"]]
    assert len(returns) == 3 and report["mean"] == pytest.approx(np.mean(returns))
    assert all(f"{i:7d} {r:10.1f}" in text for i, r in enumerate(returns)) and "mean return" in text
    main(["eval", "--checkpoint", str(run / "best.pt"), "--episodes", "3", "--json", "-"])
    assert json.loads(capsys.readouterr().out)["episodes"] == report["episodes"]  # JSON only, same episodes


@pytest.mark.slow
def test_enjoy_records_a_video_of_one_episode(tracked_run, tmp_path, capsys):
    run, _ = tracked_run
    main(["enjoy", "--checkpoint", str(run / "best.pt"), "--video", str(tmp_path / "videos"), "--episodes", "1"])
    (video,) = (tmp_path / "videos").glob("*.mp4")
    assert video.name == "CartPole-v1-episode-0.mp4" and video.stat().st_size > 1000
    assert "episode 0: return" in capsys.readouterr().out


@pytest.mark.slow
def test_export_loads_with_from_pretrained_and_plays_like_the_checkpoint(tracked_run, tmp_path, capsys):
    run, _ = tracked_run
    main(["export", "--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "model")])
    assert {p.name for p in (tmp_path / "model").iterdir()} == {"model.safetensors", "config.json", "README.md"}
    model = zerokv.WorldModel.from_pretrained(tmp_path / "model", env_num=3)
    from zerokv.rl import load_checkpoint

    saved = load_checkpoint(run / "best.pt")["learner"]["model"]
    assert model.config.env_num == 3 and not model.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    capsys.readouterr()
    played = []
    for source in (run / "best.pt", tmp_path / "model"):
        main(["eval", "--checkpoint", str(source), "--episodes", "2", "--json", "-"])
        played.append(json.loads(capsys.readouterr().out)["episodes"])
    assert played[0] == played[1]


def test_from_pretrained_names_a_missing_or_mismatched_file(tmp_path):
    cfg = zerokv.WorldModelConfig(embed_dim=16, num_heads=2, support_size=5)
    zerokv.WorldModel(cfg).save_pretrained(tmp_path / "a")
    with pytest.raises(PretrainedError, match="is not a directory"):
        zerokv.WorldModel.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(PretrainedError, match="shape|embed_dim=32 needs at least"):
        zerokv.WorldModel.from_pretrained(tmp_path / "a", embed_dim=32)
    (tmp_path / "a" / "model.safetensors").unlink()
    with pytest.raises(PretrainedError, match="model.safetensors does not exist"):
        zerokv.WorldModel.from_pretrained(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(PretrainedError, match="not a zerokv model config"):
        zerokv.WorldModel.from_pretrained(tmp_path / "a")


@pytest.mark.slow
def test_plot_draws_one_run_or_several_with_returns_of_any_sign(tracked_run, tmp_path):
    run, _ = tracked_run
    main(["plot", str(run)])
    assert (run / "curve.png").read_bytes()[:4] == b"\x89PNG"
    acrobot = tmp_path / "acrobot.csv"
    acrobot.write_text("env_steps,return/train,return/eval,return/eval_std\n100,-500,,\n200,-480,-420,30\n"
                       "300,-300,-150.5,12\n")
    curve = read_curve(acrobot, env="Acrobot-v1")
    assert curve.eval_steps == [200.0, 300.0] and curve.eval_std == [30.0, 12.0] and curve.train_mean[0] == -500
    threshold = reward_threshold("Acrobot-v1")
    assert threshold == -100.0  # gymnasium's registered one: drawn for Acrobot, not CartPole's 475
    low, high = y_limits([*curve.train_mean, -420 - 30, -150.5 + 12, threshold])
    assert low < -500 and -100 < high < 0
    main(["plot", str(run), str(acrobot), "--env", "Acrobot-v1", "--labels", "cartpole", "acrobot",
          "--out", str(tmp_path / "two.svg")])
    assert b"<svg" in (tmp_path / "two.svg").read_bytes()[:400]


def test_lunar_lander_makes_an_env_with_the_box2d_extra():
    from zerokv.rl import env_spec

    spec = env_spec("LunarLander-v3")
    assert (spec.observation_shape, spec.action_space_size, spec.reward_threshold) == ((8,), 4, 200)


def test_no_text_of_the_repo_cites_the_design_brief_outside_it():
    """The brief (DESIGN.md) is not part of the repository: docs/design.md restates what is cited.
    Links between the docs are checked in tests/test_docs.py."""
    root = Path(__file__).resolve().parents[1]
    texts = [root / "README.md", *(root / "docs").rglob("*.md"), *(root / "zerokv").rglob("*.py"),
             *(root / "zerokv").rglob("*.yaml"), *(p for p in (root / "scripts").glob("*") if p.is_file())]
    for path in texts:
        assert "DESIGN.md" not in path.read_text(), path
