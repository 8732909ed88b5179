"""The command line: a user error is one line on stderr and exit code 2; --debug shows the traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zerokv import CheckpointError
from zerokv.checks import check_device
from zerokv.cli import main, one_line
from zerokv.rl import EvalArgs

TINY_TRAIN = ["--total-env-steps", "8", "--num-envs", "2", "--collect-steps", "4", "--num-simulations", "2",
              "--embed-dim", "16", "--num-layers", "1", "--context-length", "4", "--support-size", "5",
              "--eval-episodes", "1", "--eval-every", "0", "--no-progress", "--threads", "1"]


def one_error_line(capsys, exc, command: str) -> str:
    """The single stderr line of a refused command (exit code 2)."""
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"zerokv {command}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--num-envs", "abc"], "--num-envs"),  # tyro refuses the value
        (["train", "--num-envs", "0"], "num_envs=0; must be a positive int"),  # TrainConfig refuses it
        (["train", "--eval-every", "-100"], "eval_every=-100; must be an int >= 0"),
        (["train", "--device", "cuda"], "device='cuda'"),
        (["train", "--device", "gpu"], "device='gpu'; allowed: cpu, cuda, cuda:N, mps"),
        (["train", "--no-such-flag"], "unknown flag --no-such-flag"),
        (["train", "--embed-dimm", "8"], "unknown flag --embed-dimm; did you mean --embed-dim?"),
        (["eval", "--chekpoint", "x.pt"], "did you mean --checkpoint?"),
        (["train", "--config"], "--config needs a value"),
        (["train", "--preset", "pong"], "preset='pong'; allowed: cartpole, acrobot, lunarlander, atari, atari100k, atari100k-cpu"),
        (["enjoy", "--checkpoint", "x.pt", "--video", "v", "--render", "human"], "drop --render"),
        (["plot", "missing-run"], "missing-run does not exist"),
        (["export", "--checkpoint", "missing.pt", "--out", "e"], "checkpoint missing.pt does not exist"),
        (["eval", "--checkpoint", "no-such-dir/"], "does not exist"),
        (["train", "--config", "missing.yaml"], "config file missing.yaml does not exist"),
        (["eval"], "--checkpoint"),
        (["eval", "--checkpoint", "missing.pt"], "checkpoint missing.pt does not exist"),
        (["eval", "--checkpoint", "x.pt", "--device", "cuda:1"], "device='cuda:1'"),
        (["eval", "--checkpoint", "x.pt", "--episodes", "0"], "episodes=0; must be a positive int"),
        (["eval", "--checkpoint", "x.pt", "--dtype", "float16"], "invalid choice 'float16' for argument '--dtype'"),
        (["train", "--cache-backend", "pages"], "invalid choice 'pages' for argument '--cache-backend'"),
        (["train", "--vector-env", "threads"], "invalid choice 'threads' for argument '--vector-env'"),
        (["bench", "--configs", "pong"], "unknown config 'pong'"),
    ],
)
def test_a_user_error_is_one_line_and_exit_code_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert message in one_error_line(capsys, exc, argv[0])


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("c.yaml", "num_envs: [1\n", "c.yaml is not valid YAML"),
        ("c.toml", "num_envs = \n", "c.toml is not valid TOML"),
        ("c.yaml", "num_envs: '8'\n", "num_envs='8'; must be a positive int"),
        ("c.yaml", "num_env: 8\n", "unknown keys ['num_env']"),
    ],
)
def test_a_bad_config_file_is_one_line(name, text, message, tmp_path, capsys):
    (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", str(tmp_path / name), "--out", str(tmp_path / "run")])
    assert message in one_error_line(capsys, exc, "train")


def test_an_unknown_command_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["trian"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == ("zerokv: error: unknown command 'trian'; allowed: train, eval, enjoy, plot, export, bench "
                                       "(see zerokv --help)\n")


def test_an_unwritable_output_directory_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", str(blocker / "run"), *TINY_TRAIN])
    assert str(blocker) in one_error_line(capsys, exc, "train")


def test_a_missing_optional_extra_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)  # as if zerokv[atari] were not installed
    with pytest.raises(SystemExit) as exc:
        main(["train", "--env", "ALE/Pong-v5", "--out", str(tmp_path), *TINY_TRAIN])
    assert "ale-py" in one_error_line(capsys, exc, "train")


def test_ctrl_c_is_one_line_and_exit_code_130(tmp_path, capsys, monkeypatch):
    def interrupted(cfg, explicit=None):
        raise KeyboardInterrupt

    monkeypatch.setattr("zerokv.rl.trainer.train", interrupted)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", str(tmp_path)])
    assert exc.value.code == 130 and capsys.readouterr().err == "zerokv train: interrupted\n"
    with pytest.raises(KeyboardInterrupt):
        main(["train", "--out", str(tmp_path), "--debug"])


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_lets_the_exception_through_before_or_after_the_command(where, tmp_path):
    argv = ["eval", "--checkpoint", str(tmp_path / "missing.pt")]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    with pytest.raises(CheckpointError, match="does not exist"):
        main(argv)


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(cfg, explicit=None):
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr("zerokv.rl.trainer.train", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", "--out", str(tmp_path)])


def test_help_still_prints_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--help"])
    assert exc.value.code == 0 and "--checkpoint" in capsys.readouterr().out
    main([])
    assert "--debug" in capsys.readouterr().out


def test_tyro_boxes_become_one_line_in_both_renderings():
    utf8 = ("╭─ Value error ─────────────╮\n│ Error parsing --x: bad    │\n│ value 'y'.                │\n│"
            "                           │\n│ Got errors:               │\n│ ───────────────────────── │\n"
            "│ Argument helptext:        │\n╰───────────────────────────╯\n")
    ascii_box = (" Required options          \n -------------------------- \n  Missing from zerokv eval:\n"
                 "      --checkpoint STR\n          Path of a checkpoint.\n  ------------------------\n"
                 "  For full helptext, run zerokv eval --help\n")
    assert one_line(utf8) == "Error parsing --x: bad value 'y'."
    assert one_line(ascii_box) == "Missing from zerokv eval: --checkpoint STR"


def test_eval_args_check_the_device_once():
    assert EvalArgs(checkpoint="c.pt", device="cpu").device == "cpu"
    assert EvalArgs(checkpoint="c.pt").device is None  # the training run's
    with pytest.raises(ValueError, match="device='mps'"):
        EvalArgs(checkpoint="c.pt", device="mps")
    assert check_device("device", "cpu:0") == "cpu:0"


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["train", "--device", "cuda"], ["eval", "--checkpoint", "missing.pt"]])
def test_the_installed_command_prints_one_line_and_exits_2(argv, tmp_path):
    done = subprocess.run([sys.executable, "-m", "zerokv", *argv], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"zerokv {argv[0]}: error: "), done.stderr


def captured_config(monkeypatch, argv: list[str]):
    """The TrainConfig `zerokv train ARGV` would train with (the training itself is replaced)."""
    seen = []

    def fake_train(cfg, explicit=None):
        seen.append(cfg)
        raise KeyboardInterrupt  # stop here: the config is all this test wants

    monkeypatch.setattr("zerokv.rl.trainer.train", fake_train)
    with pytest.raises(SystemExit):
        main(["train", *argv])
    return seen[0]


@pytest.mark.parametrize("form", ["separate", "equals"])
def test_config_file_given_as_config_file_or_config_equals_file(form, tmp_path, monkeypatch, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("num_envs: 3\nembed_dim: 32\n")
    flag = ["--config", str(path)] if form == "separate" else [f"--config={path}"]
    cfg = captured_config(monkeypatch, [*flag, "--embed-dim", "48"])  # flags override the file
    assert (cfg.num_envs, cfg.embed_dim, cfg.config) == (3, 48, str(path))


def test_the_atari_preset_ships_in_the_package_and_files_and_flags_override_it(tmp_path, monkeypatch):
    from zerokv.presets import preset_path

    assert preset_path("atari").is_file() and "zerokv/presets" in preset_path("atari").as_posix()
    cfg = captured_config(monkeypatch, ["--preset", "atari"])
    assert (cfg.env, cfg.embed_dim, cfg.num_simulations, cfg.preset) == ("ALE/Pong-v5", 768, 50, "atari")
    path = tmp_path / "c.toml"
    path.write_text("num_simulations = 16\n")
    cfg = captured_config(monkeypatch, ["--preset=atari", "--config", str(path), "--env", "ALE/Breakout-v5"])
    assert (cfg.env, cfg.embed_dim, cfg.num_simulations) == ("ALE/Breakout-v5", 768, 16)


def test_version_everywhere(capsys):
    import importlib.metadata

    import zerokv

    main(["--version"])
    assert capsys.readouterr().out == f"zerokv {zerokv.__version__}\n"
    assert zerokv.__version__ == importlib.metadata.version("zerokv")  # pyproject reads zerokv/version.py


def test_help_lists_the_choices_of_devices_dtypes_backends_and_vector_envs(capsys):
    main(["train", "--help"])
    text = capsys.readouterr().out
    for choices in ("{cpu,cuda,cuda:N,mps}", "{float32,bfloat16}", "{none,legacy,manager,paged}",
                    "{sync,async}", "{cartpole,acrobot,lunarlander,atari,atari100k,atari100k-cpu,memory,pendulum,dmc}"):
        assert choices in text, choices


def test_the_default_out_is_a_new_directory_per_run_named_as_cleanrl_does():
    from zerokv.rl.config import TrainConfig, default_out, with_out

    assert TrainConfig().out is None
    stamp = 1_800_000_000.0
    out = default_out(TrainConfig(env="ALE/Pong-v5", seed=3), now=stamp)
    assert out.startswith("runs/ALE-Pong-v5__3__2027") and len(out.split("__")[-1]) == len("20270115-080000")
    assert with_out(TrainConfig(out="mine")).out == "mine"
    with pytest.raises(ValueError, match="resume=True needs --out"):
        TrainConfig(resume=True)


def test_train_help_is_grouped_into_sections_with_readable_types_and_unbroken_numbers(capsys):
    main(["train", "--help"])
    out = capsys.readouterr().out
    sections = [line for line in out.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert sections == ["run:", "env:", "model:", "search:", "learning:", "evaluation:", "checkpoints:",
                        "collectors:", "logging:"]
    assert "{None}" not in out and "|STR" not in out
    assert "  --out STR\n" in out and "  --track, --no-track\n" in out and "  --clip-rewards {True,False,None}" in out
    assert "(default: 30,000)" in out and "108,000 frames" in out and "108, 000" not in out
    assert out.index("\nsearch:") < out.index("--num-simulations INT") < out.index("\nlearning:")


def test_every_train_flag_of_tyro_is_in_the_grouped_help(capsys):
    import dataclasses

    from zerokv.cli_flags import explicit_fields
    from zerokv.rl.config import TrainConfig

    main(["train", "--help"])
    out = capsys.readouterr().out
    for field in dataclasses.fields(TrainConfig):
        assert f"  --{field.name.replace('_', '-')}" in out, field.name
    argv = ["--eval-every", "5000", "--no-track", "--total_env_steps=9", "--out", "x", "--seed", "0"]
    assert explicit_fields(argv, TrainConfig) == {"eval_every", "track", "total_env_steps", "out", "seed"}


def test_list_presets_names_each_preset_its_env_and_what_it_reached(capsys):
    main(["train", "--list-presets"])
    out = capsys.readouterr().out
    for name, env in (("cartpole", "CartPole-v1"), ("acrobot", "Acrobot-v1"), ("lunarlander", "LunarLander-v3"),
                      ("atari", "ALE/Pong-v5")):
        assert f"\n{name}" in out and env in out and f"zerokv train --preset {name}" in out


@pytest.mark.slow
def test_resume_from_the_command_line_keeps_saved_values_and_takes_passed_ones(tmp_path, capsys):
    out = str(tmp_path / "run")
    main(["train", *TINY_TRAIN, "--out", out, "--eval-every", "8", "--checkpoint-every", "8", "--eval-episodes", "2"])
    capsys.readouterr()
    main(["train", "--out", out, "--resume", "--total-env-steps", "16", "--no-progress"])
    printed = capsys.readouterr().out
    import json

    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["eval_every"], saved["checkpoint_every"], saved["eval_episodes"], saved["num_envs"]) == (8, 8, 2, 2)
    assert saved["total_env_steps"] == 16 and "total_env_steps changed from 8 to 16" in printed
    main(["train", "--out", out, "--resume", "--total-env-steps", "16", "--eval-every", "2000", "--no-progress"])
    assert "eval_every changed from 8 to 2000" in capsys.readouterr().out  # the default value, passed


@pytest.mark.slow
def test_track_is_kept_on_resume_and_continues_the_same_wandb_run(tmp_path, capsys, monkeypatch):
    ids = []
    monkeypatch.setattr("zerokv.rl.progress._start_wandb", lambda out, config, tracking: ids.append(tracking.run_id))
    out = str(tmp_path / "run")
    main(["train", *TINY_TRAIN, "--out", out, "--track"])
    main(["train", "--out", out, "--resume", "--total-env-steps", "16"])  # no --track: the saved value stands
    assert len(ids) == 2 and ids[0] == ids[1]


def test_a_run_that_ends_before_learning_starts_says_so(tmp_path, capsys):
    main(["train", *TINY_TRAIN, "--segment-length", "50", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert "without a weight update" in out and "above 100 = num_envs x segment_length" in out


def test_rays_token_notice_is_dropped_and_its_other_warnings_kept():
    import logging

    from zerokv.rl.raycluster import TOKEN_LOGGER, _quiet_token_notice

    _quiet_token_notice()
    _quiet_token_notice()  # once is enough: no second filter
    logger = logging.getLogger(TOKEN_LOGGER)
    assert len(logger.filters) == 1

    def record(message):
        return logging.LogRecord(TOKEN_LOGGER, logging.WARNING, "f.py", 1, message, None, None)

    assert not logger.filters[0].filter(record("Token authentication is enabled for this Ray cluster. Set ..."))
    assert logger.filters[0].filter(record("Authentication token is missing"))


@pytest.mark.parametrize("command", ["eval", "enjoy", "export"])
def test_play_and_export_help_is_readable(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "  --checkpoint STR\n" in out and "(required)" in out
    assert "{None}" not in out and "|STR" not in out and "╭" not in out


def test_plot_help_is_readable_with_its_positional_runs(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["plot", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and out.startswith("usage: zerokv plot [--help] [FLAGS] RUNS...\n")
    assert "positional arguments:\n  RUNS...\n      Run directories" in out and "  --labels STR [STR ...]\n" in out
    assert "{None}" not in out and "|STR" not in out and "╭" not in out
    with pytest.raises(SystemExit) as exc:  # a typo still gets its one line, with the nearest flag
        main(["plot", str(tmp_path), "--lables", "a"])
    assert "--labels" in one_error_line(capsys, exc, "plot")
