"""The replay buffer's typed records: a training `Batch`, sampled `Positions` and their
`Histories`, the `SegmentTable` and the `ReplayContents` a snapshot writes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Batch", "Histories", "Positions", "ReplayContents", "SegmentTable"]


@dataclass(slots=True)
class Batch:
    """A training batch of B rows of K+1 consecutive positions t..t+K (K = unroll_steps).

    Positions past their segment's end have mask 0 and are padded as noted per field.
    """

    obs: np.ndarray
    """`[B, K+1, *obs_shape]` in the buffer's observation dtype (uint8 frames or float32):
    o_t..o_{t+K}; past the end, the last observation."""
    actions: np.ndarray
    """`[B, K+1]` int64: a_{t+k} taken after o_{t+k}; past the end, a random valid action.
    Continuous: `[B, K+1, D]` float32 in [-1, 1] (past the end, uniform in [-1, 1])."""
    rewards: np.ndarray
    """`[B, K+1]` float32: r_{t+k} received after a_{t+k}; 0 past the end."""
    value_targets: np.ndarray
    """`[B, K+1]` float32: n-step targets z_{t+k} (see `n_step_value_targets`); 0 past the end."""
    policy_targets: np.ndarray
    """`[B, K+1, A]` float32: search policies pi_{t+k}; uniform past the end. Continuous: A is
    the K root samples of `sampled_actions`."""
    mask: np.ndarray
    """`[B, K+1]` float32: 1 for real steps, 0 past the end."""
    weights: np.ndarray
    """`[B]` float32 loss weights: all ones (uniform sampling)."""
    bootstrap_obs: np.ndarray | None = None
    """`[B, K+1, *obs_shape]` like `obs`: o_{m} of each position's n-step target (any observation
    where `bootstrap_scale` is 0), for re-estimating the bootstrap value with the current network."""
    value_known: np.ndarray | None = None
    """`[B, K+1]` float32: the n-step target without the in-segment bootstrap term; 0 past the end."""
    bootstrap_scale: np.ndarray | None = None
    """`[B, K+1]` float32: g^(m-j) where the bootstrap state is in the segment, else 0, so that
    value_targets = value_known + bootstrap_scale * (stored root value of o_m)."""
    sampled_actions: np.ndarray | None = None
    """Continuous only: `[B, K+1, A, D]` float32, the root's sampled actions at each position
    (what `policy_targets` weighs); past the end, the last real position's."""


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
    """`[n, H]` int64: the actions between those observations (0 where not real); continuous
    `[n, H, D]` float32."""
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
