"""The replay buffer's records for reanalysis and snapshots: positions, their histories, the
segment table and the stored contents (`zerokv.rl.replay.ReplayBuffer` makes and reads them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Histories", "Positions", "ReplayContents", "SegmentTable"]


@dataclass(frozen=True, slots=True)
class Positions:
    """Distinct stored positions (e.g. for reanalysis); valid until the next `add`."""

    slots: np.ndarray
    """`[n]` int64 ring slots of the positions."""
    steps: np.ndarray
    """`[n]` int64: each position's step index t within its segment."""


@dataclass(frozen=True, slots=True)
class Histories:
    """Each position's observation with up to H real steps before it, right-aligned."""

    obs: np.ndarray
    """`[n, H+1, *obs_shape]` in the buffer's observation dtype: row i's last `lengths[i]`
    entries are real (its segment may start fewer than H steps back), zeros before; the
    position's own observation is last."""
    actions: np.ndarray
    """`[n, H]` int64: the actions between those observations (0 where not real)."""
    lengths: np.ndarray
    """`[n]` int64: real observations per row."""


@dataclass(frozen=True, slots=True)
class SegmentTable:
    """The stored segments, oldest first (S segments)."""

    lengths: np.ndarray
    """`[S]` int64 steps per segment."""
    terminated: np.ndarray
    """`[S]` bool."""
    bootstrap_values: np.ndarray
    """`[S]` float32 value of the state after each segment's last step (0 when terminated)."""
    weights_versions: np.ndarray
    """`[S]` int64 version of the weights each segment was collected with (`GameSegment`)."""


@dataclass(frozen=True, slots=True)
class ReplayContents:
    """What a snapshot needs, without copying: the stored steps oldest first, per field as one
    or two contiguous views of the ring (two when the stored arc wraps around its end)."""

    fields: dict[str, tuple[np.ndarray, ...]]
    """Name in `SNAPSHOT_FIELDS` → views whose concatenation is `[num_steps, ...]`."""
    segments: SegmentTable
