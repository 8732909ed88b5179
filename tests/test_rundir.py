"""The run directory: one trainer at a time, no mixing of runs, writability checked up front,
progress.csv cut back to a checkpoint, and a resume that keeps the saved config."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from zerokv.rl import TrainConfig
from zerokv.rl.progress import truncate_progress
from zerokv.rl.rundir import RESUMABLE_FIELDS, RunDir, RunDirError, resume_changes, resume_config


def opened(path, resume=False, overwrite=False) -> RunDir:
    run = RunDir(path)
    run.open(resume=resume, overwrite=overwrite)
    return run


def test_a_second_trainer_is_refused_and_the_lock_is_released_at_close(tmp_path):
    first = opened(tmp_path / "run")
    with pytest.raises(RunDirError, match=rf"in use by another trainer \(pid {os.getpid()}\)"):
        opened(tmp_path / "run")
    first.close()
    opened(tmp_path / "run").close()


@pytest.mark.slow
def test_a_second_process_is_refused(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from zerokv.rl.rundir import RunDir; r = RunDir(sys.argv[1]); "
         "r.open(resume=False, overwrite=False); print('locked', flush=True); sys.stdin.read()", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=rf"in use by another trainer \(pid {holder.pid}\)"):
            opened(tmp_path)
    finally:
        holder.communicate("")
    opened(tmp_path).close()  # the holder is gone: free again


def test_the_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(dead.stdout.strip())  # what a trainer killed with -9 leaves
    run = opened(tmp_path)
    assert any(f"pid {dead.stdout.strip()}" in note for note in run.notes)
    assert (tmp_path / ".lock").read_text() == str(os.getpid())
    run.close()


def test_a_directory_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt_000000008.pt").write_bytes(b"x")
    (tmp_path / "progress.csv").write_text("env_steps\n8\n")
    (tmp_path / "tb").mkdir()  # empty: what a start that failed leaves, not a run
    with pytest.raises(RunDirError, match=r"already holds a run \(checkpoints/, progress.csv\): pass --resume"):
        opened(tmp_path)
    opened(tmp_path, resume=True).close()  # untouched
    assert (tmp_path / "progress.csv").exists()
    run = opened(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "checkpoints", "tb"]
    assert not any((tmp_path / "checkpoints").iterdir())
    run.close()


def test_overwrite_never_deletes_other_files(tmp_path):
    (tmp_path / "progress.csv").write_text("env_steps\n8\n")
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(RunDirError, match=r"also holds thesis.tex, which are not zerokv's.*nothing was deleted"):
        opened(tmp_path, overwrite=True)
    assert (tmp_path / "progress.csv").exists() and (tmp_path / "thesis.tex").exists()


def test_unusable_paths_fail_at_open_with_one_line(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match="file.* is not a directory|cannot create"):
        opened(tmp_path / "file" / "run")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").write_text("")  # a file where the directory goes
    with pytest.raises(RunDirError, match=r"checkpoints exists and is not a directory"):
        opened(tmp_path / "run", overwrite=False, resume=True)
    real_open = os.open

    def read_only(path, flags, *args):
        if "write-probe" in str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)  # as a read-only directory answers (root passes chmod)
    with pytest.raises(RunDirError, match=r"ro is not writable: Permission denied") as info:
        opened(tmp_path / "ro")
    assert "\n" not in str(info.value)


def test_progress_is_cut_back_to_the_checkpoint(tmp_path):
    path = tmp_path / "progress.csv"
    path.write_text("env_steps,loss\n8,1.0\n16,0.5\n24,0.25\n")
    assert truncate_progress(path, 16) == 1
    assert path.read_text().splitlines() == ["env_steps,loss", "8,1.0", "16,0.5"]
    assert truncate_progress(path, 16) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.csv"]


def test_resume_keeps_the_saved_config_and_refuses_other_values_by_name():
    saved = TrainConfig(learning_rate=5e-4, embed_dim=32, num_simulations=9, out="runs/x").to_dict()
    given = TrainConfig(out="runs/x", resume=True)  # nothing given: defaults everywhere
    resumed = resume_config(saved, given)
    assert (resumed.learning_rate, resumed.embed_dim, resumed.num_simulations) == (5e-4, 32, 9)
    assert resumed.resume
    longer = resume_config(saved, TrainConfig(out="runs/x", resume=True, total_env_steps=90_000, threads=1))
    assert (longer.total_env_steps, longer.threads, longer.learning_rate) == (90_000, 1, 5e-4)
    with pytest.raises(RunDirError, match=r"embed_dim=128 \(the run has 32\); learning_rate=0.002 "
                                          r"\(the run has 0.0005\)\. Only total_env_steps, .* may change"):
        resume_config(saved, TrainConfig(out="runs/x", resume=True, learning_rate=2e-3, embed_dim=128))
    assert "seed" not in RESUMABLE_FIELDS and "total_env_steps" in RESUMABLE_FIELDS


def test_resume_without_flags_keeps_every_saved_value_even_resumable_ones():
    saved = TrainConfig(out="runs/x", eval_every=512, eval_episodes=3, checkpoint_every=512, track=True).to_dict()
    resumed = resume_config(saved, TrainConfig(out="runs/x", resume=True), explicit=set())
    assert (resumed.eval_every, resumed.eval_episodes, resumed.checkpoint_every, resumed.track) == (512, 3, 512, True)
    assert resume_changes(saved, resumed) == []


def test_a_flag_passed_on_resume_wins_even_when_it_is_the_default_and_the_change_is_listed():
    saved = TrainConfig(out="runs/x", eval_every=512, track=True, learning_rate=5e-4).to_dict()
    # --eval-every 2000 is the default value, --no-track too: passed, so they are what the user chose
    given = TrainConfig(out="runs/x", resume=True, eval_every=2_000, track=False, learning_rate=5e-4)
    resumed = resume_config(saved, given, explicit={"eval_every", "track", "learning_rate", "resume", "out"})
    assert (resumed.eval_every, resumed.track, resumed.learning_rate) == (2_000, False, 5e-4)
    assert resume_changes(saved, resumed) == ["--resume: eval_every changed from 512 to 2000",
                                              "--resume: track changed from True to False"]
    with pytest.raises(RunDirError, match=r"seed=0 \(the run has 3\)"):  # the default, passed: refused
        resume_config(TrainConfig(out="runs/x", seed=3).to_dict(), TrainConfig(out="runs/x", resume=True),
                      explicit={"seed"})


def test_a_field_the_checkpoint_predates_takes_the_given_value():
    saved = TrainConfig(out="runs/x").to_dict()
    del saved["eval_max_steps"]
    resumed = resume_config(saved, TrainConfig(out="runs/x", resume=True, eval_max_steps=7), explicit=set())
    assert resumed.eval_max_steps == 7

