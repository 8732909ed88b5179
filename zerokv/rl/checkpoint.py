"""Safe, atomic checkpoints: `torch.save` bytes behind a one-line header carrying their SHA-256.

File layout (one file, so one `os.replace` publishes it atomically, and no sidecar can disagree
with it after a crash between two renames):

    b"ZEROKV-CKPT 1 sha256=<64 hex digits> size=<payload bytes>\\n" + <torch.save zip bytes>

`save_checkpoint` streams `torch.save` into a temporary file in the target directory (hashing as
it writes, behind a fixed-width placeholder header that is rewritten once the hash is known: the
payload is never held in memory a second time), fsyncs it, then `os.replace`s it over `path` and
fsyncs the directory: a crash at any point leaves either the old file or the new one at `path`,
never a mix, plus at worst a `.{name}.*.tmp` orphan that `remove_orphans` deletes at the next
start. `load_checkpoint` checks the header, size and hash before
`torch.load(..., weights_only=True)`, so a truncated, corrupted or tampered file is refused with a
`CheckpointError` instead of being unpickled. Since the header precedes the zip, a plain
`torch.load(path)` cannot read these files; use `load_checkpoint`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from zerokv.errors import CheckpointError
from zerokv.io import TEMP_SUFFIX, HashingFile, atomic_write

__all__ = [
    "CheckpointError",
    "checkpoint_path",
    "checkpoint_steps",
    "policy_fields",
    "latest_checkpoint",
    "load_checkpoint",
    "prune_checkpoints",
    "remove_orphans",
    "save_checkpoint",
]

MAGIC = b"ZEROKV-CKPT"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 256
"""A header line longer than this is not ours (the real one is about 100 bytes)."""
_HEADER_RE = re.compile(rb"ZEROKV-CKPT (\d+) sha256=([0-9a-f]{64}) size=(\d+)\n")
_NAME_RE = re.compile(r"ckpt_(\d{9})\.pt")
_PLAIN_TYPES = (str, int, float, bool, type(None))
_SIZE_DIGITS = 20
"""The size field is zero-padded to this width, so the placeholder header has the final length."""




def checkpoint_path(directory: str | os.PathLike[str], step: int) -> Path:
    """`directory / "ckpt_{step:09d}.pt"`."""
    if not 0 <= step < 10**9:
        raise ValueError(f"step={step} must lie in [0, 10**9) to fit ckpt_{{step:09d}}.pt")
    return Path(directory) / f"ckpt_{step:09d}.pt"


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The `ckpt_{step:09d}.pt` in `directory` with the highest step, or None if there is none
    (or no such directory). Temporary files of unfinished saves never match."""
    steps = checkpoint_steps(directory)
    return checkpoint_path(directory, steps[-1]) if steps else None


def checkpoint_steps(directory: str | os.PathLike[str]) -> list[int]:
    """Steps of the `ckpt_{step:09d}.pt` files in `directory`, ascending ([] if none or no such
    directory)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    matches = (_NAME_RE.fullmatch(p.name) for p in directory.iterdir() if p.is_file())
    return sorted(int(m.group(1)) for m in matches if m is not None)


def prune_checkpoints(directory: str | os.PathLike[str], keep: int) -> list[Path]:
    """Deletes all but the `keep` newest `ckpt_*.pt` in `directory`; returns the deleted paths."""
    if keep < 1:
        raise ValueError(f"keep={keep} must be >= 1")
    old = [checkpoint_path(directory, s) for s in checkpoint_steps(directory)[:-keep]]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def remove_orphans(directory: str | os.PathLike[str]) -> list[str]:
    """Deletes the temporaries of unfinished saves in `directory` (files or directories named
    `.*.tmp`, left by a killed process); returns their names. Call it only while no save into
    `directory` can be under way (the run directory's lock is held)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    names = []
    for entry in directory.iterdir():
        if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            names.append(entry.name)
    return sorted(names)


def _check_payload(value: Any, where: str) -> None:
    """Raises ValueError unless `value` is tensors and plain python all the way down."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, _PLAIN_TYPES):
                raise ValueError(f"{where} has a key of type {type(key).__name__}: {key!r}")
            _check_payload(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_payload(item, f"{where}[{i}]")
    elif not isinstance(value, (torch.Tensor, *_PLAIN_TYPES)):
        raise ValueError(
            f"{where} is a {type(value).__module__}.{type(value).__qualname__}; a checkpoint "
            "holds only tensors, dicts, lists, tuples, str, int, float, bool and None"
        )


def _header(digest: str, size: int) -> bytes:
    return b"%s %d sha256=%s size=%0*d\n" % (MAGIC, FORMAT_VERSION, digest.encode(), _SIZE_DIGITS, size)


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Writes `payload` (tensors and plain python, nested) to `path` atomically with its SHA-256.

    Creates the parent directory if needed. On any failure the temporary file is removed and
    whatever was at `path` before is untouched.
    """
    path = Path(path)
    if not isinstance(payload, dict):
        raise ValueError(f"payload is a {type(payload).__name__}; it must be a dict")
    _check_payload(payload, "payload")
    with atomic_write(path, what="checkpoint") as f:
        f.write(_header("0" * 64, 0))  # placeholder of the final header's length
        body = HashingFile(f)
        torch.save(payload, body)
        f.seek(0)
        f.write(_header(body.digest.hexdigest(), body.size))


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Reads a file written by `save_checkpoint`, verifying its size and SHA-256 first.

    Raises `CheckpointError` naming `path` and the problem if the file is missing, is not a
    zerokv checkpoint, is truncated or has extra bytes, fails the hash check, or holds objects
    that `torch.load(weights_only=True)` refuses.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from e
    newline = data.find(b"\n", 0, MAX_HEADER_BYTES)
    match = _HEADER_RE.fullmatch(data[: newline + 1]) if newline >= 0 else None
    if match is None:
        raise CheckpointError(f"checkpoint {path} has no valid zerokv header (bad or empty file)")
    version, digest, size = int(match[1]), match[2].decode(), int(match[3])
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}; expected {FORMAT_VERSION}"
        )
    body = data[newline + 1 :]
    if len(body) != size:
        kind = "truncated" if len(body) < size else "has trailing bytes"
        raise CheckpointError(
            f"checkpoint {path} is {kind}: {len(body)} payload bytes, header says {size}"
        )
    if hashlib.sha256(body).hexdigest() != digest:
        raise CheckpointError(f"checkpoint {path} fails its SHA-256 check: corrupted or tampered")
    try:
        payload = torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
    except Exception as e:  # a valid hash over bytes torch cannot or will not load
        raise CheckpointError(f"checkpoint {path} cannot be loaded safely: {e}") from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(payload).__name__}, not a dict")
    return payload


def policy_fields(state: dict[str, Any], path: str | os.PathLike[str]) -> tuple[dict, dict, dict]:
    """``(weights, model_config, train_config)`` of a loaded training checkpoint, each checked to
    be a mapping (a CheckpointError names the missing or mistyped key)."""
    found = []
    for keys in (("learner", "model"), ("model_config",), ("config",)):
        value: Any = state
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                raise CheckpointError(f"checkpoint {path} has no {'/'.join(keys)} (a training checkpoint holds "
                                      "learner/model, model_config and config)")
            value = value[key]
        if not isinstance(value, dict):
            raise CheckpointError(f"checkpoint {path}: {'/'.join(keys)} is a {type(value).__name__}; expected a mapping")
        found.append(value)
    return found[0], found[1], found[2]
