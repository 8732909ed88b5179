"""Game segments and a replay buffer that samples UniZero training targets.

A `GameSegment` is one env's run of T consecutive steps, appended by the collector as it acts:
step j holds the observation o_j, the action a_j taken after it, the reward r_j received after
a_j, the search's root value v_j and its visit-count policy pi_j. It ends either at a terminal
state (nothing to bootstrap from) or because the episode was truncated or the segment cut, in
which case the collector passes the value of the state after the last step.

`ReplayBuffer` keeps whole segments, samples start positions t uniformly over all stored steps
and returns a `Batch` of K+1 = unroll_steps+1 consecutive positions t..t+K per row. Positions
past the segment end are padded and masked out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

__all__ = ["Batch", "GameSegment", "ReplayBuffer", "n_step_bootstrap", "n_step_value_targets"]


_ARRAY_FIELDS = ("obs", "actions", "rewards", "root_values", "policies")
"""A closed `GameSegment`'s per-step arrays, in `append`'s argument order."""


class GameSegment:
    """One env's trajectory piece, built by `append` per step then frozen by `close`.

    Once closed, it holds (T = number of steps, A = action_space_size): `obs [T, *obs_shape]`
    float32, `actions [T]` int64, `rewards [T]` float32, `root_values [T]` float32,
    `policies [T, A]` float32, `terminated`, and `bootstrap_value`: the value of the state
    after step T-1 (0.0 when terminated).
    """

    __slots__ = ("observation_shape", "action_space_size", *_ARRAY_FIELDS, "terminated",
                 "bootstrap_value", "closed", "_rows")

    def __init__(self, observation_shape: tuple[int, ...], action_space_size: int) -> None:
        if action_space_size < 1:
            raise ValueError(f"action_space_size={action_space_size} must be >= 1")
        self.observation_shape = tuple(observation_shape)
        self.action_space_size = action_space_size
        self.closed = False
        # Steps appended while open: (obs, action, reward, root_value, policy); cleared by close.
        self._rows: list[tuple[np.ndarray, int, float, float, np.ndarray]] = []
        self._freeze([], [], [], [], [], terminated=False, bootstrap_value=0.0)
        self.closed = False  # _freeze closes; the empty arrays above only give shapes

    def __len__(self) -> int:
        return len(self.actions) if self.closed else len(self._rows)

    def append(
        self, obs: np.ndarray, action: int, reward: float, root_value: float,
        search_policy: np.ndarray,
    ) -> None:
        """Records one step: `obs [*obs_shape]`, the action taken after it, the reward it
        earned, and the search's root value and policy `[A]` at `obs`."""
        if self.closed:
            raise RuntimeError("append on a closed GameSegment")
        obs = np.array(obs, np.float32)  # copies: the caller may reuse its buffers
        policy = np.array(search_policy, np.float32)
        if obs.shape != self.observation_shape:
            raise ValueError(f"obs shape {obs.shape} != observation_shape {self.observation_shape}")
        if policy.shape != (self.action_space_size,):
            raise ValueError(f"search_policy shape {policy.shape} != ({self.action_space_size},)")
        if not 0 <= int(action) < self.action_space_size:
            raise ValueError(f"action={action} outside 0..{self.action_space_size - 1}")
        self._rows.append((obs, int(action), float(reward), float(root_value), policy))

    def open_steps(self) -> list[tuple[np.ndarray, int, float, float, np.ndarray]]:
        """The steps appended so far to an open segment, in `append`'s argument order."""
        return list(self._rows)

    def close(self, terminated: bool, bootstrap_value: float = 0.0) -> None:
        """Freezes the segment into arrays. `bootstrap_value` is the value of the state after
        the last step, used only when not `terminated` (truncated or cut)."""
        if self.closed:
            raise RuntimeError("close on a closed GameSegment")
        rows, self._rows = self._rows, []
        self._freeze(*([r[i] for r in rows] for i in range(5)), terminated, bootstrap_value)

    @classmethod
    def from_arrays(
        cls, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, root_values: np.ndarray,
        policies: np.ndarray, terminated: bool, bootstrap_value: float,
    ) -> GameSegment:
        """A closed segment from whole arrays shaped as on the class (e.g. from `state_dict`)."""
        seg = cls(tuple(obs.shape[1:]), policies.shape[1])
        seg._freeze(obs, actions, rewards, root_values, policies, terminated, bootstrap_value)
        return seg

    def _freeze(
        self, obs: ArrayLike, actions: ArrayLike, rewards: ArrayLike, root_values: ArrayLike,
        policies: ArrayLike, terminated: bool, bootstrap_value: float,
    ) -> None:
        """Stores the step arrays (lists of rows or whole arrays) and marks the segment closed."""
        num = len(np.asarray(actions))
        self.obs = np.asarray(obs, np.float32).reshape(num, *self.observation_shape)
        self.policies = np.asarray(policies, np.float32).reshape(num, self.action_space_size)
        self.actions = np.asarray(actions, np.int64)
        self.rewards = np.asarray(rewards, np.float32)
        self.root_values = np.asarray(root_values, np.float32)
        if self.rewards.shape != (num,) or self.root_values.shape != (num,):
            raise ValueError(f"rewards {self.rewards.shape}, root_values "
                             f"{self.root_values.shape}: need [{num}] like actions")
        self.terminated = bool(terminated)
        self.bootstrap_value = 0.0 if terminated else float(bootstrap_value)
        self.closed = True


def n_step_value_targets(
    rewards: np.ndarray, root_values: np.ndarray, bootstrap_value: float, td_steps: int,
    discount: float,
) -> np.ndarray:
    """`[T]` float32 n-step targets z_j = sum_{i=j}^{m-1} g^(i-j) r_i + g^(m-j) v_m, m=min(j+n,T).

    `rewards`, `root_values`: `[T]`. v_T is `bootstrap_value` (pass 0.0 for a terminated
    segment), so a target whose n steps run past the end sums the rewards left and bootstraps
    from the state after the last step, discounted by the steps actually taken.
    """
    num = len(rewards)
    values_ext = np.append(np.asarray(root_values, np.float64), bootstrap_value)  # [T+1]
    rewards_ext = np.append(np.asarray(rewards, np.float64), np.zeros(td_steps))  # [T+n]
    j = np.arange(num)
    m = np.minimum(j + td_steps, num)  # bootstrap index per position
    targets = discount ** (m - j) * values_ext[m]
    for i in range(td_steps):  # rewards_ext is 0 past the end, so the sum stops there
        targets += discount**i * rewards_ext[j + i]
    return targets.astype(np.float32)


def n_step_bootstrap(
    rewards: np.ndarray, bootstrap_value: float, td_steps: int, discount: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The parts of `n_step_value_targets` that do not depend on the stored root values.

    Returns `(known [T], scale [T])` float32: z_j = known_j + scale_j * v_{m_j}, m_j = min(j+n, T).
    Where m_j < T (the bootstrap state o_{m_j} is in the segment) `known` is the discounted
    reward sum and `scale` = g^(m_j-j), so v_{m_j} can be re-estimated with the current network
    at sampling time; where m_j = T, `known` also holds the segment's `bootstrap_value` term and
    `scale` is 0.
    """
    num = len(rewards)
    rewards_ext = np.append(np.asarray(rewards, np.float64), np.zeros(td_steps))
    j = np.arange(num)
    m = np.minimum(j + td_steps, num)
    known = np.zeros(num)
    for i in range(td_steps):
        known += discount**i * rewards_ext[j + i]
    scale = np.where(m < num, discount ** (m - j), 0.0)
    known += np.where(m == num, discount ** (m - j) * bootstrap_value, 0.0)
    return known.astype(np.float32), scale.astype(np.float32)


@dataclass(slots=True)
class Batch:
    """A training batch of B rows of K+1 consecutive positions t..t+K (K = unroll_steps).

    Positions past their segment's end have mask 0 and are padded as noted per field.
    """

    obs: np.ndarray
    """`[B, K+1, *obs_shape]` float32: o_t..o_{t+K}; past the end, the last observation."""
    actions: np.ndarray
    """`[B, K+1]` int64: a_{t+k} taken after o_{t+k}; past the end, a random valid action."""
    rewards: np.ndarray
    """`[B, K+1]` float32: r_{t+k} received after a_{t+k}; 0 past the end."""
    value_targets: np.ndarray
    """`[B, K+1]` float32: n-step targets z_{t+k} (see `n_step_value_targets`); 0 past the end."""
    policy_targets: np.ndarray
    """`[B, K+1, A]` float32: search policies pi_{t+k}; uniform past the end."""
    mask: np.ndarray
    """`[B, K+1]` float32: 1 for real steps, 0 past the end."""
    weights: np.ndarray
    """`[B]` float32 loss weights: all ones (uniform sampling)."""
    bootstrap_obs: np.ndarray | None = None
    """`[B, K+1, *obs_shape]` float32: o_{m} of each position's n-step target (any observation
    where `bootstrap_scale` is 0), for re-estimating the bootstrap value with the current network."""
    value_known: np.ndarray | None = None
    """`[B, K+1]` float32: the n-step target without the in-segment bootstrap term; 0 past the end."""
    bootstrap_scale: np.ndarray | None = None
    """`[B, K+1]` float32: g^(m-j) where the bootstrap state is in the segment, else 0, so that
    value_targets = value_known + bootstrap_scale * (stored root value of o_m)."""


class ReplayBuffer:
    """FIFO store of closed `GameSegment`s holding at most `capacity_steps` steps.

    Invariant: `num_steps == sum(len(s) for s in segments) <= capacity_steps`; adding a
    segment evicts whole oldest segments until it holds. Value targets depend only on a
    segment and on (td_steps, discount), so they are computed once per segment at `add`.
    """

    def __init__(
        self,
        capacity_steps: int,
        observation_shape: tuple[int, ...],
        action_space_size: int,
        *,
        unroll_steps: int = 5,
        td_steps: int = 5,
        discount: float = 0.997,
        seed: int = 0,
    ) -> None:
        if capacity_steps < 1:
            raise ValueError(f"capacity_steps={capacity_steps} must be >= 1")
        if action_space_size < 1:
            raise ValueError(f"action_space_size={action_space_size} must be >= 1")
        if unroll_steps < 0:
            raise ValueError(f"unroll_steps={unroll_steps} must be >= 0")
        if td_steps < 1:
            raise ValueError(f"td_steps={td_steps} must be >= 1")
        if not 0.0 <= discount <= 1.0:
            raise ValueError(f"discount={discount} must lie in [0, 1]")
        self.capacity_steps = capacity_steps
        self.observation_shape = tuple(observation_shape)
        self.action_space_size = action_space_size
        self.unroll_steps = unroll_steps
        self.td_steps = td_steps
        self.discount = discount
        self._rng = np.random.default_rng(seed)
        # Oldest first; _value_targets[i] ([T_i] float32) belongs to _segments[i].
        self._segments: deque[GameSegment] = deque()
        self._value_targets: deque[np.ndarray] = deque()
        # (known [T], scale [T]) of `n_step_bootstrap`, per segment like _value_targets.
        self._bootstrap: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._num_steps = 0
        # Flat index one past each segment's last step (cumulative lengths); None when stale.
        self._ends: np.ndarray | None = None

    @property
    def num_steps(self) -> int:
        """Steps stored, i.e. valid start positions for `sample`."""
        return self._num_steps

    @property
    def num_segments(self) -> int:
        return len(self._segments)

    def add(self, segment: GameSegment) -> None:
        """Stores a closed, non-empty segment, then evicts oldest segments beyond capacity."""
        if not segment.closed:
            raise ValueError("segment is not closed; call GameSegment.close first")
        if len(segment) == 0:
            raise ValueError("segment has 0 steps")
        if segment.observation_shape != self.observation_shape:
            raise ValueError(
                f"segment observation_shape {segment.observation_shape} != "
                f"buffer observation_shape {self.observation_shape}"
            )
        if segment.action_space_size != self.action_space_size:
            raise ValueError(
                f"segment action_space_size {segment.action_space_size} != "
                f"buffer action_space_size {self.action_space_size}"
            )
        if len(segment) > self.capacity_steps:
            raise ValueError(
                f"segment of {len(segment)} steps exceeds capacity_steps={self.capacity_steps}"
            )
        self._segments.append(segment)
        self._value_targets.append(
            n_step_value_targets(segment.rewards, segment.root_values, segment.bootstrap_value,
                                 self.td_steps, self.discount)
        )
        self._bootstrap.append(
            n_step_bootstrap(segment.rewards, segment.bootstrap_value, self.td_steps, self.discount)
        )
        self._num_steps += len(segment)
        while self._num_steps > self.capacity_steps:
            self._num_steps -= len(self._segments.popleft())
            self._value_targets.popleft()
            self._bootstrap.popleft()
        self._ends = None

    def sample(self, batch_size: int) -> Batch:
        """`batch_size` rows with start positions drawn uniformly (with replacement) over all
        stored steps. Shapes are given on `Batch`."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if self._num_steps == 0:
            raise ValueError("cannot sample from an empty ReplayBuffer")
        ends = self._segment_ends()
        k1, num_actions = self.unroll_steps + 1, self.action_space_size
        flat = self._rng.integers(self._num_steps, size=batch_size)
        seg_ids = np.searchsorted(ends, flat, side="right")
        starts = flat - ends[seg_ids] + [len(self._segments[i]) for i in seg_ids]

        obs = np.empty((batch_size, k1, *self.observation_shape), np.float32)
        actions = np.empty((batch_size, k1), np.int64)
        rewards = np.zeros((batch_size, k1), np.float32)
        value_targets = np.zeros((batch_size, k1), np.float32)
        policy_targets = np.full((batch_size, k1, num_actions), 1.0 / num_actions, np.float32)
        mask = np.zeros((batch_size, k1), np.float32)
        bootstrap_obs = np.empty_like(obs)
        value_known = np.zeros((batch_size, k1), np.float32)
        bootstrap_scale = np.zeros((batch_size, k1), np.float32)
        for b, (i, t) in enumerate(zip(seg_ids.tolist(), starts.tolist(), strict=True)):
            seg = self._segments[i]
            n = min(k1, len(seg) - t)  # real positions in this row
            end = t + n
            obs[b, :n] = seg.obs[t:end]
            obs[b, n:] = seg.obs[-1]
            actions[b, :n] = seg.actions[t:end]
            actions[b, n:] = self._rng.integers(num_actions, size=k1 - n)
            rewards[b, :n] = seg.rewards[t:end]
            value_targets[b, :n] = self._value_targets[i][t:end]
            policy_targets[b, :n] = seg.policies[t:end]
            mask[b, :n] = 1.0
            known, scale = self._bootstrap[i]
            boot = np.minimum(np.arange(t, t + k1) + self.td_steps, len(seg) - 1)
            bootstrap_obs[b] = seg.obs[boot]
            value_known[b, :n] = known[t:end]
            bootstrap_scale[b, :n] = scale[t:end]
        return Batch(obs, actions, rewards, value_targets, policy_targets, mask,
                     weights=np.ones(batch_size, np.float32), bootstrap_obs=bootstrap_obs,
                     value_known=value_known, bootstrap_scale=bootstrap_scale)

    # ------------------------------------------------------------------ reanalysis
    def sample_positions(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` distinct stored positions drawn uniformly (all of them if fewer are stored).

        Returns `(segment_index [n], step [n])` int64, valid until the next `add` (which may evict).
        """
        if count < 1:
            raise ValueError(f"count={count} must be >= 1")
        if self._num_steps == 0:
            raise ValueError("cannot sample from an empty ReplayBuffer")
        ends = self._segment_ends()
        flat = np.sort(self._rng.choice(self._num_steps, size=min(count, self._num_steps), replace=False))
        seg_ids = np.searchsorted(ends, flat, side="right")
        return seg_ids, flat - (ends[seg_ids] - [len(self._segments[i]) for i in seg_ids])

    def histories(
        self, seg_ids: np.ndarray, steps: np.ndarray, history_steps: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each position's observation with up to `history_steps` real steps before it.

        Returns `(obs [n, H+1, *obs_shape], actions [n, H], lengths [n])`, right-aligned: row i's
        last `lengths[i]` observations are real (the segment may start later than H steps back)
        and its position's own observation is last; the actions are those between them.
        """
        h, n = history_steps, len(seg_ids)
        obs = np.zeros((n, h + 1, *self.observation_shape), np.float32)
        actions = np.zeros((n, h), np.int64)
        lengths = np.empty(n, np.int64)
        for row, (i, t) in enumerate(zip(np.asarray(seg_ids).tolist(), np.asarray(steps).tolist(), strict=True)):
            seg, k = self._segments[i], min(h, t)
            obs[row, h - k:] = seg.obs[t - k : t + 1]
            actions[row, h - k:] = seg.actions[t - k : t]
            lengths[row] = k + 1
        return obs, actions, lengths

    def update_targets(
        self, seg_ids: np.ndarray, steps: np.ndarray, policies: np.ndarray, root_values: np.ndarray,
    ) -> float:
        """Replace the stored search policies `[n, A]` and root values `[n]` of these positions
        (e.g. with reanalysed ones) and refresh the affected segments' value targets.

        Returns the mean total-variation distance between the old and new policies.
        """
        seg_ids, steps = np.asarray(seg_ids), np.asarray(steps)
        tv = 0.0
        for i in np.unique(seg_ids).tolist():
            rows = np.flatnonzero(seg_ids == i)
            seg, t = self._segments[i], steps[rows]
            tv += 0.5 * float(np.abs(seg.policies[t] - policies[rows]).sum())
            seg.policies[t] = policies[rows]
            seg.root_values[t] = root_values[rows]
            self._value_targets[i] = n_step_value_targets(
                seg.rewards, seg.root_values, seg.bootstrap_value, self.td_steps, self.discount
            )
        return tv / max(1, len(seg_ids))

    def _segment_ends(self) -> np.ndarray:
        """Flat index one past each segment's last step (cumulative lengths), cached until `add`."""
        if self._ends is None:
            self._ends = np.cumsum([len(s) for s in self._segments])
        return self._ends

    def state_dict(self) -> dict[str, Any]:
        """Segments, settings and rng state as tensors and plain python, so the dict can sit in
        a checkpoint read with `torch.load(weights_only=True)`."""
        return {
            "observation_shape": list(self.observation_shape),
            "action_space_size": self.action_space_size,
            "rng_state": self._rng.bit_generator.state,
            "segments": [
                {f: torch.from_numpy(getattr(seg, f)) for f in _ARRAY_FIELDS}
                | {"terminated": seg.terminated, "bootstrap_value": seg.bootstrap_value}
                for seg in self._segments
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replaces the contents and rng state with `state` from `state_dict`. Shapes must
        match; this buffer's own capacity, td_steps and discount apply (value targets are
        recomputed with them)."""
        shape = tuple(state["observation_shape"])
        if shape != self.observation_shape or state["action_space_size"] != self.action_space_size:
            raise ValueError(
                f"state has observation_shape {shape}, action_space_size "
                f"{state['action_space_size']}; this buffer has {self.observation_shape}, "
                f"{self.action_space_size}"
            )
        self._segments.clear()
        self._value_targets.clear()
        self._bootstrap.clear()
        self._num_steps = 0
        self._ends = None
        for seg in state["segments"]:
            arrays = {f: seg[f].numpy() for f in _ARRAY_FIELDS}
            self.add(GameSegment.from_arrays(**arrays, terminated=bool(seg["terminated"]),
                                             bootstrap_value=float(seg["bootstrap_value"])))
        self._rng.bit_generator.state = state["rng_state"]
