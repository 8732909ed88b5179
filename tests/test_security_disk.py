"""A full disk (simulated: fsync or write fails with ENOSPC): a checkpoint or cache snapshot that
cannot be written leaves the previous one intact and says so; a cut or damaged progress.csv is
repaired or refused on resume, never mixed."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch
from secutil import policy_payload

from zerokv.rl.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from zerokv.rl.progress import truncate_progress


def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_checkpoint_that_cannot_be_written_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "ckpt_000000008.pt"
    save_checkpoint(path, policy_payload())
    before = path.read_bytes()
    monkeypatch.setattr(os, "fsync", _full_disk)
    with pytest.raises(OSError, match="could not be written .*No space left.*previous (one|file) there is unchanged"):
        save_checkpoint(path, {"other": torch.zeros(3)})
    newer = tmp_path / "checkpoints" / "ckpt_000000016.pt"
    with pytest.raises(OSError, match="nothing was written"):
        save_checkpoint(newer, policy_payload())
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left
    assert latest_checkpoint(path.parent) == path  # --resume continues from the last complete one
    assert load_checkpoint(path)["counters"]["env_steps"] == 8


def test_a_cache_snapshot_that_cannot_be_written_leaves_the_previous_one(tmp_path, monkeypatch):
    from test_cache_snapshot import build, play

    a = build()
    play(a, 1, np.random.default_rng(0))
    path = tmp_path / "roots.safetensors"
    a.save_caches(path)
    before = path.read_bytes()
    play(a, 1, np.random.default_rng(1))
    monkeypatch.setattr(os, "fsync", _full_disk)
    with pytest.raises(OSError, match="previous file there is unchanged"):
        a.save_caches(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize(("text", "kept", "dropped"), [
    ("env_steps,loss\n8,1.0\n16,0.5\n24,0.2", ["8,1.0", "16,0.5"], 1),  # cut mid-row after the checkpoint
    ("env_steps,loss\n8,1.0\n16,0.", ["8,1.0"], 1),  # cut inside the checkpoint's own row: dropped, not mixed
    ("env_steps,loss\n8,1.0\n16,0.5", ["8,1.0"], 1),  # unterminated: cannot be told from a cut row
    ("env_steps,loss\n8,1.0\n\x00\x00\x00\n16,0.5\n", ["8,1.0", "16,0.5"], 1),  # zeros where a write was lost
    ("env_steps,loss\n8,1.0\nnan,2\n16,0.5\n", ["8,1.0", "16,0.5"], 1),
])
def test_a_cut_progress_csv_is_repaired_on_resume(tmp_path, text, kept, dropped):
    path = tmp_path / "progress.csv"
    path.write_text(text)
    assert truncate_progress(path, 16) == dropped
    assert path.read_text().endswith("\n")
    assert path.read_text().splitlines() == ["env_steps,loss", *kept]


@pytest.mark.parametrize("text", ["garbage,header\n1,2\n", "\x00\x00\x00\x00"])
def test_a_progress_csv_that_is_not_one_is_refused(tmp_path, text):
    path = tmp_path / "progress.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match="progress.csv"):
        truncate_progress(path, 16)
    assert path.read_text() == text
