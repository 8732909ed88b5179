"""The run directory (`--out`): one trainer at a time, one run per directory, checked up front.

`RunDir.open` runs before any model is built:

- it creates `--out` and probes that it, `checkpoints/` and `tb/` are writable, so an unusable
  path fails at once with one line, not at the first save after training ran;
- it takes an exclusive `flock` on `OUT/.lock` (holding the owner's pid): a second trainer on the
  same directory is refused, naming the first one's pid. The kernel drops the lock when its
  process dies, so the lock of a killed trainer is stale by construction and simply taken over
  (the dead pid is reported);
- a directory that already holds a run is refused without `--resume` (continue it) or
  `--overwrite` (delete zerokv's files in it; other files are never deleted);
- the temporaries of saves a killed trainer left behind are removed.

`resume_config` turns the flags of a `--resume` into the run's saved config: a field the user did
not set keeps its saved value; one the user set takes the new value if it is in
`RESUMABLE_FIELDS` (`resume_changes` lists what changed) and is refused by name otherwise.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import shutil
from collections.abc import Collection
from pathlib import Path

from zerokv.errors import RunDirError
from zerokv.io import TEMP_SUFFIX, atomic_write_bytes
from zerokv.rl.checkpoint import remove_orphans
from zerokv.rl.config import TrainConfig
from zerokv.rl.envs import check_env_id

__all__ = ["RESUMABLE_FIELDS", "RunDir", "RunDirError", "resume_changes", "resume_config"]

LOCK_NAME = ".lock"
RUN_ENTRIES = ("checkpoints", "tb", "progress.csv", "config.json", "best.pt", "wandb", "curve.png")
"""What a run writes into --out (and all that --overwrite deletes): `wandb` with --track,
`curve.png` from `zerokv plot RUN_DIR`."""
RESUMABLE_FIELDS = ("total_env_steps", "eval_every", "eval_episodes", "eval_max_steps", "stop_return",
                    "checkpoint_every", "keep_checkpoints", "save_replay", "threads", "progress", "vector_env",
                    "track", "wandb_project", "wandb_entity",
                    "ray_address", "collector_cpus", "collector_gpus", "collector_restarts", "collector_timeout")
"""Flags that may differ from the saved config on --resume: budgets, evaluation and checkpoint
schedules, threads, how envs are stepped, the progress bar, tracking, and where and how the
collectors run (not how many). None of them changes what the run learns."""
_NOT_COMPARED = ("resume", "config", "preset", "out", "overwrite", "allow_env_import")
"""How this invocation was made, not what the run is."""




class RunDir:
    """`--out` of one training run; `open` before building the run, `close` when done."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self._lock_file = None
        self.notes: list[str] = []
        """What `open` did that the user should hear about (stale lock, orphans removed)."""

    # ------------------------------------------------------------------ opening
    def open(self, *, resume: bool, overwrite: bool) -> None:
        """Creates, locks and checks the directory (see the module doc). Raises `RunDirError`."""
        self._create(self.path)
        self._lock()
        try:
            previous = self._run_entries()
            if previous and not resume and overwrite:
                self._delete_run()
            for directory in (self.path, self.checkpoints, self.path / "tb"):
                self._create(directory)
                self._probe(directory)
            if previous and not resume and not overwrite:
                raise RunDirError(
                    f"--out {self.path} already holds a run ({', '.join(previous)}): pass --resume to "
                    "continue it, or --overwrite to delete it and start afresh")
            for directory in (self.path, self.checkpoints):
                removed = remove_orphans(directory)
                if removed:
                    self.notes.append(f"removed {len(removed)} unfinished save(s) of a killed run in {directory}: "
                                      + ", ".join(removed))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Releases the lock (the lock file stays: deleting it could let two trainers lock two
        different files of the same name)."""
        if self._lock_file is not None:
            self._lock_file.truncate(0)
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _create(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise RunDirError(f"--out {self.path}: {directory} exists and is not a directory") from None
        except OSError as e:
            raise RunDirError(f"--out {self.path}: cannot create {directory}: {e.strerror or e}") from None
        if not directory.is_dir():
            raise RunDirError(f"--out {self.path}: {directory} exists and is not a directory")

    def _probe(self, directory: Path) -> None:
        """Writes and deletes a file: the only sure test of writability (os.access is not)."""
        probe = directory / f".write-probe.{os.getpid()}{TEMP_SUFFIX}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.close(fd)
            probe.unlink()
        except OSError as e:
            raise RunDirError(f"--out {self.path}: {directory} is not writable: {e.strerror or e}") from None

    def _lock(self) -> None:
        lock_path = self.path / LOCK_NAME
        try:
            f = open(lock_path, "a+")  # noqa: SIM115  (held open until close())
        except OSError as e:
            raise RunDirError(f"--out {self.path}: cannot create {lock_path}: {e.strerror or e}") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.seek(0)
            owner = f.read().strip() or "unknown"
            f.close()
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirError(f"--out {self.path} is in use by another trainer (pid {owner}); wait for it "
                                  "to end or choose another --out") from None
            raise RunDirError(f"--out {self.path}: cannot lock {lock_path}: {e.strerror or e}") from None
        f.seek(0)
        stale = f.read().strip()
        if stale and stale != str(os.getpid()):
            self.notes.append(f"took over the lock of pid {stale}, which no longer holds it (a killed trainer)")
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lock_file = f

    def _run_entries(self) -> list[str]:
        """Names in --out other than the lock and empty directories (a start that failed, e.g. on
        a bad env id, leaves those); sorted, directories end in /."""
        return sorted(e.name + ("/" if e.is_dir() else "") for e in self.path.iterdir()
                      if e.name != LOCK_NAME and not _empty_dir(e))

    def _delete_run(self) -> None:
        others = [e for e in self._run_entries() if e.rstrip("/") not in RUN_ENTRIES
                  and not (e.startswith(".") and e.rstrip("/").endswith(TEMP_SUFFIX))]
        if others:
            raise RunDirError(f"--overwrite: --out {self.path} also holds {', '.join(others)}, which are not "
                              "zerokv's; move them or choose another --out (nothing was deleted)")
        for name in RUN_ENTRIES:
            entry = self.path / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.exists() or entry.is_symlink():
                entry.unlink()
        remove_orphans(self.path)
        self.notes.append(f"--overwrite: deleted the previous run in {self.path}")

    def write_config(self, config: dict) -> None:
        """`config.json`, replaced atomically."""
        atomic_write_bytes(self.path / "config.json", json.dumps(config, indent=2, sort_keys=True).encode())


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and all(_empty_dir(p) for p in path.iterdir())


def resume_config(saved: dict, given: TrainConfig, explicit: Collection[str] | None = None) -> TrainConfig:
    """The config a `--resume` runs with: the saved one, with what the user chose on this command line.

    `explicit` names the fields the user set for this invocation (flags on the command line and
    the keys of a `--config`/`--preset`; the CLI knows them from argv). A field not in it keeps
    its saved value, whatever `given` holds: a resume without flags changes nothing. A field in
    it takes `given`'s value if it is in `RESUMABLE_FIELDS` or equals the saved value; otherwise
    the resume is refused with a `RunDirError` naming every such flag, its saved value and the
    allowed list. `explicit=None` (a `TrainConfig` built in Python) counts the fields that differ
    from the defaults as set. A field the checkpoint predates takes `given`'s value.
    """
    defaults = TrainConfig()
    default_of = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(TrainConfig)}
    if explicit is None:
        explicit = {name for name, value in default_of.items() if getattr(given, name) != value}
    merged, refused = {}, []
    for f in dataclasses.fields(TrainConfig):
        name, value = f.name, getattr(given, f.name)
        if name in _NOT_COMPARED or name not in saved:
            merged[name] = value
        elif name not in explicit or value == saved[name]:
            merged[name] = saved[name]
        elif name in RESUMABLE_FIELDS:
            merged[name] = value
        else:
            refused.append(f"{name}={value!r} (the run has {saved[name]!r})")
    if refused:
        raise RunDirError(f"--resume: {given.out} was trained with other settings: {'; '.join(refused)}. "
                          f"Only {', '.join(RESUMABLE_FIELDS)} may change on resume")
    # the saved env is data: honoured as a module:EnvName import only when typed again or allowed
    check_env_id(merged["env"], source=f"the checkpoint of {given.out}",
                 allow_import=given.allow_env_import or given.env == merged["env"])
    return TrainConfig(**merged)


def resume_changes(saved: dict, resumed: TrainConfig) -> list[str]:
    """One line per field whose value on resume differs from the saved config (what the user
    changed, each printed when the run starts)."""
    return [f"--resume: {f.name} changed from {saved[f.name]!r} to {getattr(resumed, f.name)!r}"
            for f in dataclasses.fields(TrainConfig)
            if f.name in saved and f.name not in _NOT_COMPARED and saved[f.name] != getattr(resumed, f.name)]
