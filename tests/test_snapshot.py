"""Replay snapshots: round trip, streaming (no in-memory copy), refusal of another run or step
and of damaged files, atomic replacement."""

from __future__ import annotations

import hashlib
import json
import tracemalloc

import numpy as np
import pytest

from zerokv import ReplaySnapshotError
from zerokv.rl import GameSegment, ReplayBuffer
from zerokv.rl.snapshot import (
    list_snapshots,
    read_snapshot,
    snapshot_path,
    write_snapshot,
)

FRAME = (3, 64, 64)


def atari_buffer(steps: int, capacity: int = 200, seed: int = 0) -> ReplayBuffer:
    """A uint8-frame buffer holding `steps` steps in segments of 50 (the last shorter)."""
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(capacity, FRAME, 6, observation_dtype=np.uint8, unroll_steps=5, td_steps=5, seed=seed)
    for start in range(0, steps, 50):
        seg = GameSegment(FRAME, 6, np.uint8)
        for _ in range(min(50, steps - start)):
            seg.append(rng.integers(0, 256, FRAME, dtype=np.uint8), int(rng.integers(6)), float(rng.integers(-1, 2)),
                       float(rng.normal()), rng.dirichlet(np.ones(6)))
        seg.close(terminated=start % 100 == 0, bootstrap_value=float(rng.normal()))
        seg.weights_version = start // 50 * 7  # distinct per segment
        buffer.add(seg)
    return buffer


def assert_same_contents(a: ReplayBuffer, b: ReplayBuffer) -> None:
    ca, cb = a.contents(), b.contents()
    for name in ca.fields:
        np.testing.assert_array_equal(np.concatenate(ca.fields[name]), np.concatenate(cb.fields[name]), err_msg=name)
    for name in ("lengths", "terminated", "bootstrap_values", "weights_versions"):
        np.testing.assert_array_equal(getattr(ca.segments, name), getattr(cb.segments, name), err_msg=name)


def test_round_trip_of_a_wrapped_ring_continues_the_same_sample_stream(tmp_path):
    original = atari_buffer(330)  # 330 steps through 200 slots: the stored arc wraps the ring's end
    assert original.num_steps == 180 and original.contents().fields["obs"].__len__() == 2
    original.sample(3)
    ref = write_snapshot(snapshot_path(tmp_path, 330), original, run_id="run-a", env_steps=330)
    assert ref.name == "replay_000000330" and list_snapshots(tmp_path) == [tmp_path / ref.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == [ref.name]  # no temporaries left
    restored = ReplayBuffer(200, FRAME, 6, observation_dtype=np.uint8, unroll_steps=5, td_steps=5, seed=9)
    read_snapshot(tmp_path / ref.name, restored, run_id="run-a", env_steps=330, meta_sha256=ref.meta_sha256)
    restored.set_rng_state(original.rng_state())
    restored.check_invariants()
    assert_same_contents(original, restored)
    for _ in range(3):
        a, b = original.sample(8), restored.sample(8)
        for name in a.__slots__:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_weights_versions_round_trip_and_a_version_1_snapshot_reads_them_as_0(tmp_path):
    original = atari_buffer(230)  # the oldest segment was evicted: versions 7, 14, 21, 28
    assert original.segment_table().weights_versions.tolist() == [7, 14, 21, 28]
    ref = write_snapshot(snapshot_path(tmp_path, 230), original, run_id="r", env_steps=230)
    restored = ReplayBuffer(200, FRAME, 6, observation_dtype=np.uint8, unroll_steps=5, td_steps=5)
    read_snapshot(tmp_path / ref.name, restored, run_id="r", env_steps=230, meta_sha256=ref.meta_sha256)
    assert restored.segment_table().weights_versions.tolist() == [7, 14, 21, 28]
    # A snapshot written before versions existed: no such file, meta version 1.
    path = tmp_path / ref.name
    (path / "segment_weights_version.npy").unlink()
    meta = json.loads((path / "meta.json").read_text())
    meta["version"] = 1
    del meta["sha256"]["segment_weights_version"]
    meta_bytes = json.dumps(meta).encode()
    (path / "meta.json").write_bytes(meta_bytes)
    old = ReplayBuffer(200, FRAME, 6, observation_dtype=np.uint8, unroll_steps=5, td_steps=5)
    read_snapshot(path, old, run_id="r", env_steps=230, meta_sha256=hashlib.sha256(meta_bytes).hexdigest())
    assert old.segment_table().weights_versions.tolist() == [0, 0, 0, 0]
    np.testing.assert_array_equal(old.segment_table().lengths, original.segment_table().lengths)


def test_snapshots_are_streamed_without_an_in_memory_copy(tmp_path):
    buffer = atari_buffer(150)  # 1.8 MiB of frames
    frames = buffer.num_steps * int(np.prod(FRAME))
    tracemalloc.start()
    ref = write_snapshot(tmp_path / "replay_000000001", buffer, run_id="r", env_steps=1)
    write_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    read_snapshot(tmp_path / ref.name, buffer, run_id="r", env_steps=1, meta_sha256=ref.meta_sha256)
    read_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert write_peak < frames / 4 and read_peak < frames / 4, (write_peak, read_peak, frames)
    size = sum(p.stat().st_size for p in (tmp_path / ref.name).iterdir())
    assert size < 1.01 * buffer.num_steps * (int(np.prod(FRAME)) + 4 * (6 + 3)) + 4096  # fields + headers


def test_a_snapshot_of_another_run_or_step_is_refused_naming_both(tmp_path):
    buffer = atari_buffer(60)
    ref = write_snapshot(tmp_path / "replay_000000060", buffer, run_id="run-a", env_steps=60)
    target = ReplayBuffer(200, FRAME, 6, observation_dtype=np.uint8)
    with pytest.raises(ReplaySnapshotError, match=r"of run run-a at 60 env steps.*checkpoint is of run run-a at 40"):
        read_snapshot(tmp_path / ref.name, target, run_id="run-a", env_steps=40, meta_sha256=ref.meta_sha256)
    with pytest.raises(ReplaySnapshotError, match=r"of run run-a at 60 env steps.*checkpoint is of run run-b at 60"):
        read_snapshot(tmp_path / ref.name, target, run_id="run-b", env_steps=60, meta_sha256=ref.meta_sha256)
    assert target.num_steps == 0


@pytest.mark.parametrize(("damage", "left"), [("obs", 0), ("truncate", 0), ("segment_lengths", 50), ("meta", 50)])
def test_damaged_snapshots_are_refused_and_leave_replay_empty_or_untouched(tmp_path, damage, left):
    buffer = atari_buffer(60)
    ref = write_snapshot(tmp_path / "replay_000000060", buffer, run_id="r", env_steps=60)
    path = tmp_path / ref.name
    if damage == "meta":
        meta = json.loads((path / "meta.json").read_text())
        meta["num_steps"] = 59
        (path / "meta.json").write_text(json.dumps(meta))
        message = "meta.json fails its SHA-256"
    elif damage == "truncate":
        data = (path / "rewards.npy").read_bytes()
        (path / "rewards.npy").write_bytes(data[:-4])
        message = "rewards.npy is truncated"
    else:
        file = path / f"{damage}.npy"
        data = bytearray(file.read_bytes())
        data[-1] ^= 0x01
        file.write_bytes(bytes(data))
        message = f"{damage}.npy fails its SHA-256"
    # A failure found before the stored steps are touched leaves them; one found while streaming
    # the fields into the ring leaves it empty, never half-loaded.
    target = atari_buffer(50, seed=1)
    with pytest.raises(ReplaySnapshotError, match=message):
        read_snapshot(path, target, run_id="r", env_steps=60, meta_sha256=ref.meta_sha256)
    assert target.num_steps == left
    target.check_invariants()


def test_a_snapshot_that_does_not_fit_is_refused(tmp_path):
    ref = write_snapshot(tmp_path / "replay_000000001", atari_buffer(120), run_id="r", env_steps=1)
    with pytest.raises(ReplaySnapshotError, match="holds 120 steps; this run's replay_capacity is 100"):
        read_snapshot(tmp_path / ref.name, ReplayBuffer(100, FRAME, 6, observation_dtype=np.uint8),
                      run_id="r", env_steps=1, meta_sha256=ref.meta_sha256)
    with pytest.raises(ReplaySnapshotError, match=r"holds observations \(3, 64, 64\) uint8 and 6 actions"):
        read_snapshot(tmp_path / ref.name, ReplayBuffer(200, FRAME, 18, observation_dtype=np.uint8),
                      run_id="r", env_steps=1, meta_sha256=ref.meta_sha256)


def test_rewriting_a_snapshot_replaces_it_whole(tmp_path, monkeypatch):
    path = tmp_path / "replay_000000005"
    write_snapshot(path, atari_buffer(60), run_id="r", env_steps=5)
    newer = atari_buffer(110, seed=3)
    ref = write_snapshot(path, newer, run_id="r", env_steps=5)  # same name: replaced
    restored = ReplayBuffer(200, FRAME, 6, observation_dtype=np.uint8)
    read_snapshot(path, restored, run_id="r", env_steps=5, meta_sha256=ref.meta_sha256)
    assert_same_contents(newer, restored)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]

    import zerokv.rl.snapshot as snapshot

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(snapshot, "_write_bytes", crash)  # fails after the fields, before meta.json
    with pytest.raises(OSError, match="disk full"):
        write_snapshot(path, atari_buffer(60), run_id="r", env_steps=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # the old one, intact
    read_snapshot(path, restored, run_id="r", env_steps=5, meta_sha256=ref.meta_sha256)
