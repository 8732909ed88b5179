"""Checkpoints: round trip, refusal of truncated / flipped / missing files, crash safety,
the choice of the latest checkpoint, rotation and the removal of unfinished saves."""

import os

import numpy as np
import pytest
import torch

from zerokv.rl.checkpoint import (
    CheckpointError,
    checkpoint_path,
    checkpoint_steps,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    remove_orphans,
    save_checkpoint,
)


def make_payload(step: int = 7) -> dict:
    gen = torch.Generator().manual_seed(step)
    return {
        "model": {
            "w": torch.randn(3, 4, generator=gen),
            "b": torch.arange(5),
            "h": torch.ones(2, dtype=torch.bfloat16),
        },
        "step": step,
        "config": {"lr": 1e-3, "name": "cartpole", "layers": [1, 2, [3, None]], "flag": True},
        "rng": {"state": 2**100 + 3, "inc": 12345},
    }


def assert_payload_equal(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want["model"]:
        assert torch.equal(got["model"][key], want["model"][key])
        assert got["model"][key].dtype == want["model"][key].dtype
    rest = {k: v for k, v in want.items() if k != "model"}
    assert {k: v for k, v in got.items() if k != "model"} == rest


def test_round_trip(tmp_path):
    path = checkpoint_path(tmp_path / "run", 7)  # parent directory is created on save
    save_checkpoint(path, make_payload())
    assert_payload_equal(load_checkpoint(path), make_payload())
    assert [p.name for p in path.parent.iterdir()] == ["ckpt_000000007.pt"]  # no temp files left


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"ckpt_000000001\.pt does not exist"):
        load_checkpoint(checkpoint_path(tmp_path, 1))


@pytest.mark.parametrize(
    ("keep", "message"),
    [(0, "no valid zerokv header"), (20, "no valid zerokv header"), (-100, "is truncated")],
)
def test_truncated_file(tmp_path, keep, message):
    path = tmp_path / "ckpt_000000001.pt"
    save_checkpoint(path, make_payload())
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("where", ["body", "digest"])
def test_flipped_byte(tmp_path, where):
    path = tmp_path / "ckpt_000000001.pt"
    save_checkpoint(path, make_payload())
    data = bytearray(path.read_bytes())
    header_end = data.index(b"\n")
    index = len(data) // 2 if where == "body" else data.index(b"sha256=") + 7
    assert (index > header_end) == (where == "body")
    data[index] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256|header"):
        load_checkpoint(path)


def test_trailing_bytes_refused(tmp_path):
    path = tmp_path / "ckpt_000000001.pt"
    save_checkpoint(path, make_payload())
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(CheckpointError, match="trailing bytes"):
        load_checkpoint(path)


def test_crash_before_replace_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt_000000001.pt"
    save_checkpoint(path, make_payload(1))

    def crash(src, dst):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, make_payload(2))
    monkeypatch.undo()
    assert_payload_equal(load_checkpoint(path), make_payload(1))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # temp file cleaned up


def test_crash_during_serialization_writes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "ckpt_000000001.pt"

    def crash(obj, f):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError):
        save_checkpoint(path, make_payload())
    assert list(tmp_path.iterdir()) == []


def test_unsafe_payload_rejected_naming_where(tmp_path):
    with pytest.raises(ValueError, match=r"payload\['replay'\]\['obs'\] is a numpy.ndarray"):
        save_checkpoint(tmp_path / "x.pt", {"replay": {"obs": np.zeros(3)}})
    with pytest.raises(ValueError, match="must be a dict"):
        save_checkpoint(tmp_path / "x.pt", [1, 2])


def test_latest_checkpoint_picks_highest_step(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    for step in (5, 120, 20):
        save_checkpoint(checkpoint_path(tmp_path, step), {"step": step})
    for name in ("ckpt_1.pt", "ckpt_000000999.pt.tmp", ".ckpt_000000999.pt.abc.tmp", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    latest = latest_checkpoint(tmp_path)
    assert latest == tmp_path / "ckpt_000000120.pt"
    assert load_checkpoint(latest) == {"step": 120}


def test_checkpoint_path_format():
    assert checkpoint_path("runs", 42).as_posix() == "runs/ckpt_000000042.pt"
    with pytest.raises(ValueError, match="step=-1"):
        checkpoint_path("runs", -1)


def test_files_of_the_previous_header_format_still_load(tmp_path):
    import hashlib
    import io

    body = io.BytesIO()
    torch.save(make_payload(), body)
    data = body.getvalue()
    path = tmp_path / "old.pt"  # size not zero-padded, as zerokv wrote it before
    path.write_bytes(b"ZEROKV-CKPT 1 sha256=%s size=%d\n" % (hashlib.sha256(data).hexdigest().encode(), len(data)) + data)
    assert_payload_equal(load_checkpoint(path), make_payload())


def test_save_streams_without_an_in_memory_copy(tmp_path):
    # A 16 MiB tensor goes straight to the file: Python memory never holds its bytes (the
    # previous version built them in a BytesIO first, a peak of 16 MiB more).
    import tracemalloc

    payload = {"w": torch.ones(4 << 20)}
    tracemalloc.start()
    save_checkpoint(tmp_path / "a.pt", payload)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 << 20, f"peak {peak} B while saving"
    assert torch.equal(load_checkpoint(tmp_path / "a.pt")["w"], payload["w"])


def test_prune_keeps_the_newest(tmp_path):
    for step in (5, 120, 20, 60):
        save_checkpoint(checkpoint_path(tmp_path, step), {"step": step})
    removed = prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["ckpt_000000005.pt", "ckpt_000000020.pt"]
    assert checkpoint_steps(tmp_path) == [60, 120]
    assert prune_checkpoints(tmp_path, keep=3) == []
    with pytest.raises(ValueError, match="keep=0"):
        prune_checkpoints(tmp_path, keep=0)


def test_remove_orphans_deletes_only_unfinished_saves(tmp_path):
    save_checkpoint(checkpoint_path(tmp_path, 1), {"step": 1})
    (tmp_path / ".ckpt_000000002.pt.a1b2.tmp").write_bytes(b"half")
    (tmp_path / ".replay_000000002.x9.tmp").mkdir()
    (tmp_path / ".replay_000000002.x9.tmp" / "obs.npy").write_bytes(b"half")
    (tmp_path / "notes.tmp").write_bytes(b"mine")  # not hidden: not ours
    assert remove_orphans(tmp_path) == [".ckpt_000000002.pt.a1b2.tmp", ".replay_000000002.x9.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_000000001.pt", "notes.tmp"]
