"""zerokv's exceptions: one base, one name per failure.

Every error zerokv raises on purpose derives from `ZeroKVError`, and also from the builtin that
fits it (``ValueError`` for bad files and values, ``RuntimeError`` for a broken invariant), so
``except ValueError`` keeps working. Both kinds of snapshot refusal derive from `SnapshotError`.
"""

from __future__ import annotations

__all__ = ["CacheSnapshotError", "CacheValidationError", "CheckpointError", "PretrainedError",
           "ReplaySnapshotError", "RunDirError", "SnapshotError", "ZeroKVError"]


class ZeroKVError(Exception):
    """Base of every error zerokv raises on purpose."""


class CacheValidationError(ZeroKVError, RuntimeError):
    """A cached forward disagreed with the recompute reference (``cache_validation_mode``)."""


class SnapshotError(ZeroKVError, ValueError):
    """A snapshot that cannot be loaded: `CacheSnapshotError` or `ReplaySnapshotError`."""


class CacheSnapshotError(SnapshotError):
    """A cache snapshot that cannot be loaded into this model: damaged, or taken from another model."""


class ReplaySnapshotError(SnapshotError):
    """A replay snapshot is missing, damaged, or belongs to another run or step."""


class CheckpointError(ZeroKVError, ValueError):
    """A checkpoint file is missing, truncated, corrupted or tampered with."""


class PretrainedError(ZeroKVError, ValueError):
    """An exported model directory is missing a file, or its files do not fit together."""


class RunDirError(ZeroKVError, ValueError):
    """--out cannot be used for this run (one line, naming the path and what to do)."""
