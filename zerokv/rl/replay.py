"""The replay buffer: whole game segments in flat ring arrays, sampled with one gather per field.

`ReplayBuffer` keeps closed `GameSegment`s, samples start positions t (uniformly over all stored
steps, or each a segment's first step: `ReplaySampling`) and returns a `Batch` of K+1 =
unroll_steps+1 consecutive positions t..t+K per row.
Positions past the segment end are padded and masked out. Observations stay in the env's dtype
(uint8 frames: 12 KiB a 3x64x64 step instead of 48 KiB in float32); the learner turns a batch
into floats on its own device (`zerokv.rl.observations`).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import DTypeLike

from zerokv.checks import check_choice, check_float, check_int, check_positive_int
from zerokv.rl.replay_records import Batch, Histories, Positions, ReplayContents, SegmentTable
from zerokv.rl.segment import GameSegment, Step, n_step_bootstrap, n_step_value_targets

__all__ = ["REPLAY_SAMPLINGS", "Batch", "GameSegment", "Histories", "Positions", "ReplayBuffer", "ReplayContents",
           "ReplaySampling", "SegmentTable", "Step", "check_sampling", "n_step_bootstrap", "n_step_value_targets"]

ReplaySampling = Literal["uniform", "segment_start"]
"""Where a sampled row starts: "uniform" over every stored step, or "segment_start": at the first
step of a stored segment drawn uniformly (segments weighted alike, whatever their length), so a row
unrolled over a whole segment holds its first step and its last; with segments of whole episodes
(segment_length >= the episode), each row is an episode from its reset (LightZero's
sample_type='episode', which memory tasks need: the cue is seen at an episode's first steps)."""
REPLAY_SAMPLINGS: tuple[str, ...] = get_args(ReplaySampling)


def check_sampling(sampling: str, *, unroll_steps: int, segment_length: int) -> str:
    """``sampling`` if it is a `ReplaySampling` and, for "segment_start", rows of unroll_steps + 1
    positions cover segments of up to ``segment_length`` steps (else later steps would never be
    trained); otherwise a ValueError naming the numbers."""
    check_choice("replay_sampling", sampling, REPLAY_SAMPLINGS)
    if sampling == "segment_start" and unroll_steps + 1 < segment_length:
        raise ValueError(f"replay_sampling='segment_start' trains the first unroll_steps + 1 = {unroll_steps + 1} "
                         f"steps of each segment, fewer than segment_length={segment_length}: use "
                         f"unroll_steps >= {segment_length - 1} or replay_sampling='uniform'")
    return sampling

SNAPSHOT_FIELDS = ("obs", "actions", "rewards", "root_values", "policies")
"""Per-step arrays a snapshot must hold; the others are derived from them and the segment table.
A continuous buffer holds `sampled_actions` too (`ReplayBuffer.snapshot_fields`)."""


@dataclass(frozen=True, slots=True)
class _Segment:
    start: int
    """Ring slot of its first step."""
    length: int
    terminated: bool
    bootstrap_value: float
    weights_version: int


class ReplayBuffer:
    """FIFO store of closed `GameSegment`s holding at most `capacity_steps` steps.

    Storage: one preallocated ring of `capacity_steps` slots per field (observation in its own
    dtype, action, reward, root value, policy) plus derived per-step fields: the n-step target
    parts `known`/`scale` (`n_step_bootstrap`), and each step's index in its segment (`offset`)
    and steps after it (`left`), which let `sample` find every row's positions, masks and
    bootstrap states with array arithmetic and one gather per field, no per-row loop.
    A sampled value target is `known + scale * root_value[bootstrap slot]`, so rewriting root
    values (reanalysis) updates the targets with nothing to recompute.

    Invariant (`check_invariants` asserts it; the tests call it after every operation):

    - the segments occupy one contiguous arc of the ring, oldest first: segment i starts at slot
      `(start_0 + sum of earlier lengths) % capacity`, and `_tail` is the slot after the arc;
    - `num_steps == sum of segment lengths <= capacity_steps`;
    - a stored slot holding step t of segment i of length L has `offset == t`, `left == L-1-t`,
      and `known`/`scale` equal to `n_step_bootstrap` of segment i's rewards and bootstrap value.

    Adding a segment evicts whole oldest segments until it fits.
    """

    def __init__(
        self,
        capacity_steps: int,
        observation_shape: tuple[int, ...],
        action_space_size: int,
        *,
        observation_dtype: DTypeLike = np.float32,
        unroll_steps: int = 5,
        td_steps: int = 5,
        discount: float = 0.997,
        seed: int = 0,
        sampling: ReplaySampling = "uniform",
        action_dim: int = 0,
    ) -> None:
        for name, value in (("capacity_steps", capacity_steps), ("action_space_size", action_space_size),
                            ("td_steps", td_steps)):
            check_positive_int(name, value, owner="ReplayBuffer")
        check_int("unroll_steps", unroll_steps, low=0, owner="ReplayBuffer")
        self.action_dim = check_int("action_dim", action_dim, low=0, owner="ReplayBuffer")
        check_float("discount", discount, low=0.0, high=1.0, owner="ReplayBuffer")
        self.sampling = check_choice("sampling", sampling, REPLAY_SAMPLINGS, owner="ReplayBuffer")
        self.capacity_steps = capacity_steps
        self.observation_shape = tuple(observation_shape)
        self.observation_dtype = np.dtype(observation_dtype)
        self.action_space_size = action_space_size
        self.unroll_steps = unroll_steps
        self.td_steps = td_steps
        self.discount = discount
        self._rng = np.random.default_rng(seed)
        c = capacity_steps
        # np.zeros maps pages lazily: an empty 100k-step Atari ring costs nothing until written.
        self._obs = np.zeros((c, *self.observation_shape), self.observation_dtype)
        d = self.action_dim
        # Actions in their own dtype and shape: int32 indices, or float32 vectors [D] in [-1, 1].
        self._actions = np.zeros((c, d), np.float32) if d else np.zeros(c, np.int32)
        self._sampled_actions = np.zeros((c, action_space_size, d), np.float32) if d else None
        self._rewards = np.zeros(c, np.float32)
        self._root_values = np.zeros(c, np.float32)
        self._policies = np.zeros((c, action_space_size), np.float32)
        self._known = np.zeros(c, np.float32)
        self._scale = np.zeros(c, np.float32)
        self._offset = np.zeros(c, np.int32)
        self._left = np.zeros(c, np.int32)
        self._segments: deque[_Segment] = deque()  # oldest first
        self._num_steps = 0
        self._tail = 0  # the slot the next segment starts at

    # ------------------------------------------------------------------ size
    @property
    def num_steps(self) -> int:
        """Steps stored, i.e. valid start positions for `sample`."""
        return self._num_steps

    @property
    def num_segments(self) -> int:
        return len(self._segments)

    @property
    def snapshot_fields(self) -> tuple[str, ...]:
        """The per-step arrays a snapshot of this buffer holds."""
        return SNAPSHOT_FIELDS + (("sampled_actions",) if self.action_dim else ())

    @property
    def bytes_per_step(self) -> int:
        """Bytes of one stored step over every per-step array (frame, action, reward, root value,
        policy, target parts, offsets)."""
        arrays = (self._obs, self._actions, self._rewards, self._root_values, self._policies,
                  self._known, self._scale, self._offset, self._left)
        if self._sampled_actions is not None:
            arrays += (self._sampled_actions,)
        return sum(a.itemsize * int(np.prod(a.shape[1:], dtype=np.int64)) for a in arrays)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored steps (`num_steps * bytes_per_step`)."""
        return self._num_steps * self.bytes_per_step

    # ------------------------------------------------------------------ writing
    def add(self, segment: GameSegment) -> None:
        """Stores a closed, non-empty segment, then evicts oldest segments beyond capacity."""
        self._check_segment(segment)
        length = len(segment)
        while self._num_steps + length > self.capacity_steps:
            self._num_steps -= self._segments.popleft().length
        start = self._tail
        for name, values in (("obs", segment.obs), ("actions", segment.actions),
                             ("rewards", segment.rewards), ("root_values", segment.root_values),
                             ("policies", segment.policies), ("sampled_actions", segment.sampled_actions)):
            if values is not None:
                self._write(getattr(self, f"_{name}"), start, values)
        self._derive(start, length, segment.rewards, segment.bootstrap_value)
        self._segments.append(_Segment(start, length, segment.terminated, segment.bootstrap_value,
                                       segment.weights_version))
        self._num_steps += length
        self._tail = (start + length) % self.capacity_steps

    def _check_segment(self, segment: GameSegment) -> None:
        if not segment.closed:
            raise ValueError("segment is not closed; call GameSegment.close first")
        if len(segment) == 0:
            raise ValueError("segment has 0 steps")
        if segment.observation_shape != self.observation_shape:
            raise ValueError(f"segment observation_shape {segment.observation_shape} != "
                             f"buffer observation_shape {self.observation_shape}")
        if segment.obs.dtype != self.observation_dtype:
            raise ValueError(f"segment observation dtype {segment.obs.dtype} != "
                             f"buffer observation_dtype {self.observation_dtype}")
        if segment.action_space_size != self.action_space_size:
            raise ValueError(f"segment action_space_size {segment.action_space_size} != "
                             f"buffer action_space_size {self.action_space_size}")
        if segment.action_dim != self.action_dim:
            raise ValueError(f"segment action_dim {segment.action_dim} != buffer action_dim {self.action_dim} "
                             "(0: discrete actions)")
        if len(segment) > self.capacity_steps:
            raise ValueError(f"segment of {len(segment)} steps exceeds capacity_steps={self.capacity_steps}")

    def _write(self, ring: np.ndarray, start: int, values: np.ndarray) -> None:
        """ring[start : start+len] = values, wrapping around the end of the ring."""
        first = min(len(values), self.capacity_steps - start)
        ring[start:start + first] = values[:first]
        ring[:len(values) - first] = values[first:]

    def _derive(self, start: int, length: int, rewards: np.ndarray, bootstrap_value: float) -> None:
        """Fills the derived per-step fields of the segment stored at `start`."""
        known, scale = n_step_bootstrap(rewards, bootstrap_value, self.td_steps, self.discount)
        t = np.arange(length)
        for ring, values in ((self._known, known), (self._scale, scale), (self._offset, t),
                             (self._left, length - 1 - t)):
            self._write(ring, start, values)

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size: int) -> Batch:
        """`batch_size` rows whose start positions are drawn (with replacement) as `sampling`
        says: uniformly over all stored steps, or at the first steps of uniformly drawn segments.
        Shapes are given on `Batch`."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self._check_not_empty()
        c, num_actions = self.capacity_steps, self.action_space_size
        if self.sampling == "uniform":
            start = (self._segments[0].start + self._rng.integers(self._num_steps, size=batch_size)) % c
        # start: [B] ring slot of each row's t
        else:  # "segment_start": the drawn segments' first steps
            starts = np.fromiter((s.start for s in self._segments), np.int64, len(self._segments))
            start = starts[self._rng.integers(len(starts), size=batch_size)]
        if self.action_dim:
            pad_actions = self._rng.uniform(-1.0, 1.0, size=(batch_size, self.unroll_steps + 1, self.action_dim))
        else:
            pad_actions = self._rng.integers(num_actions, size=(batch_size, self.unroll_steps + 1))
        k = np.arange(self.unroll_steps + 1)                          # [K+1]
        left = self._left[start][:, None]                             # [B, 1] steps after t
        real = k <= left                                              # [B, K+1]
        idx = (start[:, None] + np.minimum(k, left)) % c              # past the end: the last step
        boot = (start[:, None] + np.minimum(k + self.td_steps, left)) % c  # o_m of each target
        known = np.where(real, self._known[idx], np.float32(0))
        scale = np.where(real, self._scale[idx], np.float32(0))
        if self.action_dim:
            actions = np.where(real[..., None], self._actions[idx], pad_actions).astype(np.float32)
        else:
            actions = np.where(real, self._actions[idx], pad_actions).astype(np.int64)
        return Batch(
            obs=self._obs[idx],
            actions=actions,
            rewards=np.where(real, self._rewards[idx], np.float32(0)),
            value_targets=known + scale * self._root_values[boot],
            policy_targets=np.where(real[..., None], self._policies[idx], np.float32(1.0 / num_actions)),
            mask=real.astype(np.float32),
            weights=np.ones(batch_size, np.float32),
            bootstrap_obs=self._obs[boot], value_known=known, bootstrap_scale=scale,
            sampled_actions=None if self._sampled_actions is None else self._sampled_actions[idx],
        )

    def _check_not_empty(self) -> None:
        if self._num_steps == 0:
            raise ValueError("cannot sample from an empty ReplayBuffer")

    # ------------------------------------------------------------------ reanalysis
    def sample_positions(self, count: int) -> Positions:
        """`count` distinct stored positions drawn uniformly (all of them if fewer are stored),
        oldest first."""
        if count < 1:
            raise ValueError(f"count={count} must be >= 1")
        self._check_not_empty()
        arc = np.sort(self._rng.choice(self._num_steps, size=min(count, self._num_steps), replace=False))
        slots = (self._segments[0].start + arc) % self.capacity_steps
        return Positions(slots.astype(np.int64), self._offset[slots].astype(np.int64))

    def histories(self, positions: Positions, history_steps: int) -> Histories:
        """Each position's observation with up to `history_steps` real steps before it (see
        `Histories`), gathered in one indexing per field."""
        h, slots = history_steps, positions.slots
        real_back = np.minimum(h, self._offset[slots])[:, None]       # [n, 1] real steps before
        back = h - np.arange(h + 1)                                    # [H+1] steps back per column
        real = back <= real_back                                       # [n, H+1]
        idx = (slots[:, None] - np.minimum(back, real_back)) % self.capacity_steps
        obs = self._obs[idx]
        obs[~real] = 0
        # Column j < H holds the action taken after column j's observation: real where that one is.
        if self.action_dim:
            actions = np.where(real[:, :-1, None], self._actions[idx[:, :-1]], 0).astype(np.float32)
        else:
            actions = np.where(real[:, :-1], self._actions[idx[:, :-1]], 0).astype(np.int64)
        return Histories(obs, actions, real_back[:, 0].astype(np.int64) + 1)

    def update_targets(self, positions: Positions, policies: np.ndarray, root_values: np.ndarray) -> float:
        """Replace the stored search policies `[n, A]` and root values `[n]` of these positions
        (e.g. with reanalysed ones); the value targets follow, since they are computed from the
        stored root values when sampled.

        Returns the mean total-variation distance between the old and new policies.
        """
        slots = positions.slots
        policies = np.asarray(policies, np.float32)
        tv = 0.5 * float(np.abs(self._policies[slots] - policies).sum())
        self._policies[slots] = policies
        self._root_values[slots] = np.asarray(root_values, np.float32)
        return tv / max(1, len(slots))

    # ------------------------------------------------------------------ snapshots
    def contents(self) -> ReplayContents:
        """The stored steps as views (no copy): what `zerokv.rl.snapshot` writes."""
        views: dict[str, tuple[np.ndarray, ...]] = {}
        start = self._segments[0].start if self._segments else 0
        first = min(self._num_steps, self.capacity_steps - start)
        for name in self.snapshot_fields:
            ring = getattr(self, f"_{name}")
            parts = (ring[start:start + first], ring[:self._num_steps - first])
            views[name] = tuple(p for p in parts if len(p)) or (ring[:0],)
        return ReplayContents(views, self.segment_table())

    def segment_table(self) -> SegmentTable:
        segs = self._segments
        return SegmentTable(np.array([s.length for s in segs], np.int64),
                            np.array([s.terminated for s in segs], bool),
                            np.array([s.bootstrap_value for s in segs], np.float32),
                            np.array([s.weights_version for s in segs], np.int64))

    def load_contents(self, segments: SegmentTable, fill: Callable[[str, np.ndarray], None]) -> None:
        """Replaces the contents: `segments` oldest first, laid out from slot 0; `fill(name,
        view)` writes each field of `SNAPSHOT_FIELDS` into `view` (`[num_steps, ...]`, part of the
        ring itself, so a loader can stream into it). The rng is left as it is."""
        lengths = np.asarray(segments.lengths, np.int64)
        total = int(lengths.sum())
        if total > self.capacity_steps or (lengths < 1).any():
            raise ValueError(f"{len(lengths)} segments of {total} steps (shortest "
                             f"{lengths.min(initial=0)}) do not fit capacity_steps={self.capacity_steps}")
        self._segments.clear()
        self._num_steps = self._tail = 0
        for name in self.snapshot_fields:
            fill(name, getattr(self, f"_{name}")[:total])
        start = 0
        for length, terminated, bootstrap, version in zip(
                lengths.tolist(), segments.terminated.tolist(), segments.bootstrap_values.tolist(),
                segments.weights_versions.tolist(), strict=True):
            bootstrap = 0.0 if terminated else float(bootstrap)
            self._derive(start, length, self._rewards[start:start + length], bootstrap)
            self._segments.append(_Segment(start, length, bool(terminated), bootstrap, int(version)))
            start += length
        self._num_steps = total
        self._tail = total % self.capacity_steps

    def clear(self) -> None:
        """Forgets every stored step (the rng is kept)."""
        self._segments.clear()
        self._num_steps = self._tail = 0

    def rng_state(self) -> str:
        """The sampling rng's state as JSON text (a checkpoint can hold it)."""
        return json.dumps(self._rng.bit_generator.state)

    def set_rng_state(self, text: str) -> None:
        self._rng.bit_generator.state = json.loads(text)

    # ------------------------------------------------------------------ invariant
    def check_invariants(self) -> None:
        """Raise AssertionError if any invariant of the class docstring is broken."""
        c = self.capacity_steps
        total = sum(s.length for s in self._segments)
        assert total == self._num_steps <= c, f"num_steps {self._num_steps}, segments hold {total}, capacity {c}"
        slot = self._segments[0].start if self._segments else self._tail
        for i, seg in enumerate(self._segments):
            assert seg.start == slot, f"segment {i} starts at {seg.start}, expected {slot} (arc broken)"
            assert seg.length >= 1 and (not seg.terminated or seg.bootstrap_value == 0.0), f"segment {i}: {seg}"
            slots = (seg.start + np.arange(seg.length)) % c
            t = np.arange(seg.length)
            assert (self._offset[slots] == t).all(), f"segment {i}: offsets {self._offset[slots]}"
            assert (self._left[slots] == seg.length - 1 - t).all(), f"segment {i}: left {self._left[slots]}"
            known, scale = n_step_bootstrap(self._rewards[slots], seg.bootstrap_value, self.td_steps, self.discount)
            assert (self._known[slots] == known).all() and (self._scale[slots] == scale).all(), (
                f"segment {i}: n-step parts differ from its rewards'")
            slot = (seg.start + seg.length) % c
        assert slot == self._tail, f"tail {self._tail}, arc ends at {slot}"
