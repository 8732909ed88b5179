"""Files are data, never code: an env id read from a checkpoint, an export's config.json, a
--config file or a resumed run's checkpoint is looked up in gymnasium's registry and never
imported; gymnasium's `module:EnvName` form is honoured only when typed or explicitly allowed."""

from __future__ import annotations

import sys

import pytest
from secutil import evil_module, policy_payload, write_checkpoint, write_export

from zerokv.cli import main
from zerokv.rl.config import TrainConfig
from zerokv.rl.config_files import load_overrides
from zerokv.rl.envs import check_env_id, make_env
from zerokv.rl.rundir import resume_config

EVIL_ID = "evilmod:Evil-v0"


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """A directory holding evilmod.py, importable (it is the working directory and on sys.path,
    as the current directory is for `python -m zerokv`); yields the marker it would write."""
    marker = evil_module(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evilmod", raising=False)
    yield marker
    sys.modules.pop("evilmod", None)


def refused(capsys, exc, command: str) -> str:
    assert exc.value.code == 2
    err = capsys.readouterr().err
    # progress lines ("loading X ...") may come first; the error is one line, and no traceback
    last = err.rstrip("\n").split("\n")[-1]
    assert last.startswith(f"zerokv {command}: error: ") and "Traceback" not in err, err
    return last


@pytest.mark.parametrize("command", ["eval", "enjoy"])
def test_a_checkpoint_naming_a_module_runs_no_code(command, evil, tmp_path, capsys):
    path = write_checkpoint(tmp_path / "best.pt", policy_payload(EVIL_ID))
    with pytest.raises(SystemExit) as exc:
        main([command, "--checkpoint", str(path)])
    err = refused(capsys, exc, command)
    assert EVIL_ID in err and "--allow-env-import" in err and "--env" in err
    assert not evil.exists()


def test_an_export_config_json_naming_a_module_runs_no_code(evil, tmp_path, capsys):
    directory = write_export(tmp_path / "model", policy_payload(EVIL_ID))
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--checkpoint", str(directory)])
    assert EVIL_ID in refused(capsys, exc, "eval")
    assert not evil.exists()


@pytest.mark.parametrize("env", [EVIL_ID, "this:CartPole-v1"])
def test_a_config_file_naming_a_module_runs_no_code(env, evil, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(f"env: '{env}'\n")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")])
    assert env in refused(capsys, exc, "train")
    assert not evil.exists()


def test_a_config_file_cannot_allow_itself_to_import(evil, tmp_path):
    (tmp_path / "c.yaml").write_text(f"env: '{EVIL_ID}'\nallow_env_import: true\n")
    with pytest.raises(ValueError, match="allow_env_import"):
        load_overrides(tmp_path / "c.yaml")
    assert not evil.exists()


def test_a_resumed_checkpoint_naming_a_module_needs_it_typed_again(evil, tmp_path):
    saved = TrainConfig(env="CartPole-v1", out=str(tmp_path / "run")).to_dict()
    saved["env"] = EVIL_ID
    with pytest.raises(ValueError, match="would import the module 'evilmod'"):
        resume_config(saved, TrainConfig(out=str(tmp_path / "run"), resume=True))
    assert not evil.exists()
    typed = resume_config(saved, TrainConfig(env=EVIL_ID, out=str(tmp_path / "run"), resume=True))
    allowed = resume_config(saved, TrainConfig(out=str(tmp_path / "run"), resume=True, allow_env_import=True))
    assert typed.env == allowed.env == EVIL_ID
    assert not evil.exists()  # checked, not yet made


def test_an_unregistered_id_from_a_file_is_refused_by_name():
    with pytest.raises(ValueError, match="'NoSuchEnv-v9' in f.yaml is not in gymnasium's registry"):
        check_env_id("NoSuchEnv-v9", source="f.yaml")
    with pytest.raises(ValueError, match="must be a non-empty string"):
        check_env_id(["CartPole-v1"], source="f.yaml")
    assert check_env_id("CartPole-v1", source="f.yaml") == "CartPole-v1"


def test_a_typed_or_allowed_module_id_is_honoured(evil, tmp_path, capsys):
    assert check_env_id(EVIL_ID, source="--env", allow_import=True) == EVIL_ID
    assert not evil.exists()
    env = make_env(EVIL_ID, seed=0)  # what --env evilmod:Evil-v0 asks for: the user's own code
    env.close()
    assert evil.exists()
    path = write_checkpoint(tmp_path / "best.pt", policy_payload(EVIL_ID))
    main(["eval", "--checkpoint", str(path), "--episodes", "1", "--allow-env-import", "--max-steps", "3"])
    assert "over 1 episodes" in capsys.readouterr().out  # it played the env the file names
