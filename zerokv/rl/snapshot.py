"""Replay snapshots: one `.npy` file per field in a directory, streamed and published atomically.

Layout of `replay_{step:09d}/`, beside the training checkpoints:

    meta.json             run id, env steps, shapes and dtypes, the SHA-256 of every file below
    obs.npy actions.npy rewards.npy root_values.npy policies.npy    [N, ...] stored steps, oldest first
    segment_lengths.npy segment_terminated.npy segment_bootstrap.npy segment_weights_version.npy
                          [S] the segment table (a version-1 snapshot has no weights versions: 0)

`write_snapshot` streams every field from the replay ring's own memory (one or two contiguous
views, no copy of the buffer) into a hidden temporary directory `.replay_*.tmp`, hashing as it
writes, fsyncs every file, then renames the directory into place: a crash leaves the previous
snapshot or the new one, and at worst a `.tmp` orphan that the next start removes. The training
checkpoint records the snapshot's name and the SHA-256 of its meta.json (`SnapshotRef`), which
holds the hashes of the rest: the chain is as tamper-evident as the checkpoint itself.

`read_snapshot` refuses a snapshot of another run or step, naming both, before anything else;
then checks meta.json against the recorded hash and streams each file straight into the ring
while hashing it. `.npy` headers are parsed by numpy's format reader: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from tokenize import TokenError

import numpy as np

from zerokv.errors import ReplaySnapshotError
from zerokv.io import TEMP_SUFFIX, HashingFile, fsync_directory
from zerokv.rl.replay import ReplayBuffer, SegmentTable

__all__ = ["ReplaySnapshotError", "SnapshotRef", "list_snapshots", "read_snapshot", "restore_replay", "snapshot_path",
           "write_snapshot"]

SNAPSHOT_VERSION = 2
"""2: the segment table records each segment's weights version."""
_NAME_RE = re.compile(r"replay_(\d{9})")
_CHUNK = 16 << 20
"""Bytes per write/read call when streaming a field."""
_SEGMENT_FIELDS = {"segment_lengths": np.int64, "segment_terminated": np.bool_, "segment_bootstrap": np.float32,
                   "segment_weights_version": np.int64}
_ADDED_IN_2 = "segment_weights_version"
"""Absent from version-1 snapshots, whose segments read as collected with weights version 0."""




@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """What a training checkpoint records of the replay snapshot written with it."""

    name: str
    """Directory name beside the checkpoint, e.g. "replay_000005000"."""
    meta_sha256: str
    """SHA-256 of the snapshot's meta.json."""

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "meta_sha256": self.meta_sha256}


def snapshot_path(directory: str | os.PathLike[str], step: int) -> Path:
    """`directory / "replay_{step:09d}"`."""
    return Path(directory) / f"replay_{step:09d}"


def list_snapshots(directory: str | os.PathLike[str]) -> list[Path]:
    """The `replay_*` snapshot directories in `directory`, by step ascending."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir()
             if p.is_dir() and (m := _NAME_RE.fullmatch(p.name)) is not None]
    return [p for _, p in sorted(found)]


# ---------------------------------------------------------------------------------- writing
def write_snapshot(path: str | os.PathLike[str], replay: ReplayBuffer, *, run_id: str, env_steps: int) -> SnapshotRef:
    """Writes `replay`'s stored steps to the directory `path` atomically (see the module doc);
    an existing snapshot at `path` is replaced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        contents = replay.contents()
        files = {name: _write_npy(tmp / f"{name}.npy", views) for name, views in contents.fields.items()}
        table = contents.segments
        columns = (table.lengths, table.terminated, table.bootstrap_values, table.weights_versions)
        for name, values in zip(_SEGMENT_FIELDS, columns, strict=True):
            files[name] = _write_npy(tmp / f"{name}.npy", (values,))
        meta = {
            "version": SNAPSHOT_VERSION, "run_id": run_id, "env_steps": int(env_steps),
            "observation_shape": list(replay.observation_shape),
            "observation_dtype": replay.observation_dtype.str, "action_space_size": replay.action_space_size,
            "num_steps": replay.num_steps, "num_segments": replay.num_segments, "sha256": files,
        }
        meta_bytes = json.dumps(meta, indent=1, sort_keys=True).encode()
        _write_bytes(tmp / "meta.json", meta_bytes)
        fsync_directory(tmp)
        _publish(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_directory(path.parent)
    return SnapshotRef(path.name, hashlib.sha256(meta_bytes).hexdigest())


def _write_npy(path: Path, views: tuple[np.ndarray, ...]) -> str:
    """An `.npy` file of the concatenation of `views` (same dtype and trailing shape), written
    view by view without concatenating; returns its SHA-256."""
    first = views[0]
    shape = (sum(len(v) for v in views), *first.shape[1:])
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        writer = HashingFile(f, digest)
        header = {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(writer, header)
        for view in views:
            if not view.size:
                continue
            data = memoryview(np.ascontiguousarray(view)).cast("B")  # a view of the ring, not a copy
            for offset in range(0, len(data), _CHUNK):
                writer.write(data[offset:offset + _CHUNK])
        f.flush()
        os.fsync(f.fileno())
    return digest.hexdigest()


def _write_bytes(path: Path, data: bytes) -> None:
    """A file inside the unpublished temporary directory (the directory's rename publishes it)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _publish(tmp: Path, path: Path) -> None:
    """Renames the finished directory `tmp` to `path`, moving an existing `path` aside first (a
    directory cannot be renamed over a non-empty one)."""
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.old{TEMP_SUFFIX}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------- reading
def read_snapshot(
    path: str | os.PathLike[str], replay: ReplayBuffer, *, run_id: str, env_steps: int, meta_sha256: str,
) -> None:
    """Loads the snapshot at `path` into `replay` (its contents are replaced; its rng is kept).

    Raises `ReplaySnapshotError` if the snapshot is of another run or step than (`run_id`,
    `env_steps`), if any file is missing, damaged or of the wrong shape, or if it does not fit
    `replay`. An error found before the fields are read leaves `replay` as it was; one found
    while streaming them into the ring leaves it empty.
    """
    path = Path(path)
    meta_file = path / "meta.json"
    try:
        meta_bytes = meta_file.read_bytes()
        meta = json.loads(meta_bytes)
    except (OSError, ValueError) as e:
        raise ReplaySnapshotError(f"replay snapshot {path}: cannot read meta.json ({e})") from e
    if (meta.get("run_id"), meta.get("env_steps")) != (run_id, env_steps):
        raise ReplaySnapshotError(
            f"replay snapshot {path} is of run {meta.get('run_id')} at {meta.get('env_steps')} env "
            f"steps, but the checkpoint is of run {run_id} at {env_steps} env steps; delete the "
            "snapshot to resume with replay refilled by collecting")
    if hashlib.sha256(meta_bytes).hexdigest() != meta_sha256:
        raise ReplaySnapshotError(f"replay snapshot {meta_file} fails its SHA-256 check: corrupted or tampered")
    _check_fits(path, meta, replay)
    hashes = meta["sha256"]
    columns = {name: _read_npy(path / f"{name}.npy", hashes.get(name), np.dtype(dtype), None)
               for name, dtype in _SEGMENT_FIELDS.items() if name != _ADDED_IN_2 or meta.get("version", 1) >= 2}
    columns.setdefault(_ADDED_IN_2, np.zeros(meta["num_segments"], np.int64))
    table = SegmentTable(*(columns[name] for name in _SEGMENT_FIELDS))

    def fill(name: str, view: np.ndarray) -> None:
        _read_npy(path / f"{name}.npy", hashes.get(name), view.dtype, view)

    try:
        replay.load_contents(table, fill)
    except BaseException:
        replay.clear()
        raise


def _check_fits(path: Path, meta: dict, replay: ReplayBuffer) -> None:
    theirs = (tuple(meta["observation_shape"]), np.dtype(meta["observation_dtype"]), meta["action_space_size"])
    ours = (replay.observation_shape, replay.observation_dtype, replay.action_space_size)
    if theirs != ours:
        raise ReplaySnapshotError(f"replay snapshot {path} holds observations {theirs[0]} {theirs[1]} and "
                            f"{theirs[2]} actions; this run's replay has {ours[0]} {ours[1]} and {ours[2]}")
    if meta["num_steps"] > replay.capacity_steps:
        raise ReplaySnapshotError(f"replay snapshot {path} holds {meta['num_steps']} steps; this run's "
                            f"replay_capacity is {replay.capacity_steps}")


def _read_npy(path: Path, sha256: str | None, dtype: np.dtype, into: np.ndarray | None) -> np.ndarray:
    """Reads an `.npy` file of `dtype` into `into` (exactly its shape) or a new array (any
    1-d length), verifying its SHA-256 as it streams."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            reader = HashingFile(f, digest)
            version = np.lib.format.read_magic(reader)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, file_dtype = read_header(reader)
            if fortran or file_dtype != dtype or (into is not None and shape != into.shape) or (
                    into is None and len(shape) != 1):
                want = "1-d" if into is None else into.shape
                raise ReplaySnapshotError(f"replay snapshot file {path} holds {file_dtype} {shape}; expected {dtype} {want}")
            out = np.empty(shape, dtype) if into is None else into
            data = memoryview(out).cast("B") if out.nbytes else memoryview(b"")
            got = 0
            while got < len(data):
                n = reader.readinto(data[got:got + _CHUNK])
                if not n:
                    raise ReplaySnapshotError(f"replay snapshot file {path} is truncated: {got} of {len(data)} data bytes")
                got += n
            if f.read(1):
                raise ReplaySnapshotError(f"replay snapshot file {path} has trailing bytes")
    except OSError as e:
        raise ReplaySnapshotError(f"replay snapshot file {path} cannot be read: {e}") from e
    except (ValueError, SyntaxError, TokenError) as e:  # numpy parses the header with ast: a damaged one is a syntax error
        if isinstance(e, ReplaySnapshotError):
            raise
        raise ReplaySnapshotError(f"replay snapshot file {path} is not a valid .npy file: {e}") from e
    if digest.hexdigest() != sha256:
        raise ReplaySnapshotError(f"replay snapshot file {path} fails its SHA-256 check: corrupted or tampered")
    return out


def restore_replay(directory: Path, replay: ReplayBuffer, saved: dict, *, run_id: str,
                   env_steps: int) -> tuple[str, int | None]:
    """Loads a training checkpoint's replay snapshot (``saved``: its ``"replay"`` entry) from the
    checkpoint ``directory`` into ``replay``; returns a note for the log and None, or, when the
    snapshot was not saved or is missing, the note and the steps replay held (to refill by
    collecting). A snapshot of another run or step is refused (`ReplaySnapshotError` names both)."""
    ref = saved["snapshot"]
    if ref is not None and (directory / ref["name"]).is_dir():
        read_snapshot(directory / ref["name"], replay, run_id=run_id, env_steps=env_steps,
                      meta_sha256=ref["meta_sha256"])
        return f"replay: {replay.num_steps} steps from {ref['name']}", None
    others = list_snapshots(directory)
    if others:  # never train on another step's replay: this names it and the checkpoint
        read_snapshot(others[-1], replay, run_id=run_id, env_steps=env_steps,
                      meta_sha256=ref["meta_sha256"] if ref else "")
    why = "was not saved (--no-save-replay)" if ref is None else f"{ref['name']} is missing"
    return f"replay: the snapshot {why}", int(saved["num_steps"])
