"""Small file mechanisms every writer shares: one atomic write, one hashing file wrapper.

`atomic_write` is how zerokv publishes a file (checkpoints, replay snapshots' files, cache
snapshots, progress.csv rewrites, config.json, benchmark results): the bytes go to a temporary
file ``.{name}.*.tmp`` in the target's directory, which is flushed and fsynced, then
``os.replace``d over the target, then the directory is fsynced so the rename survives a power
loss. A reader sees the old file or the new one, never a mix; on any failure the temporary file
is removed and the target is untouched. A killed process can leave a ``.{name}.*.tmp`` orphan
(``TEMP_SUFFIX``), which ``zerokv.rl.checkpoint.remove_orphans`` deletes at the next start.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["TEMP_SUFFIX", "HashingFile", "atomic_write", "atomic_write_bytes", "fsync_directory"]

TEMP_SUFFIX = ".tmp"
"""Every temporary file or directory of an unfinished write is named ``.{final name}.*.tmp``."""


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", *, newline: str | None = None,
                 what: str = "") -> Iterator[IO]:
    """Opens a temporary file beside ``path`` (``mode`` "wb" or "w"; the parent directory is
    created if needed) and yields it; when the block ends without an exception the file is
    flushed, fsynced and renamed over ``path``, and the directory is fsynced. The file may be
    seeked and rewritten inside the block (a header filled in last). An OSError (a full disk, a
    quota, an I/O error) becomes one line naming ``what`` (e.g. "checkpoint") and the path and
    saying what is left: the previous file unchanged, or nothing written."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode={mode!r}; must be 'wb' or 'w'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary files
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": newline}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, f"{what + ' ' if what else ''}{path} could not be written ({e.strerror or e}); "
                               f"{'the previous file there is unchanged' if path.exists() else 'nothing was written'}"
                      ) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """``data`` to ``path`` through `atomic_write`."""
    with atomic_write(path) as f:
        f.write(data)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Makes a rename inside ``directory`` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class HashingFile:
    """A binary file wrapper that hashes (``digest``, SHA-256 unless given) and counts (``size``)
    every byte written or read through it, e.g. around ``torch.save`` or a ``.npy`` header."""

    def __init__(self, file, digest=None) -> None:
        self.file = file
        self.digest = hashlib.sha256() if digest is None else digest
        self.size = 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.file.write(data)

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer) -> int:
        n = self.file.readinto(buffer)
        self.digest.update(buffer[:n])
        self.size += n
        return n

    def flush(self) -> None:
        self.file.flush()
