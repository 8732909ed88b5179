"""Game segments and their n-step value targets.

A `GameSegment` is one env's run of T consecutive steps, appended by the collector as it acts:
step j holds the observation o_j, the action a_j taken after it, the reward r_j received after
a_j, the search's root value v_j and its visit-count policy pi_j. It ends either at a terminal
state (nothing to bootstrap from) or because the episode was truncated or the segment cut, in
which case the collector passes the value of the state after the last step.

Observations keep the env's dtype (uint8 frames or float32 vectors): the replay buffer stores
them as they are and `zerokv.rl.observations` turns them into the model's float input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

__all__ = ["GameSegment", "Step", "n_step_bootstrap", "n_step_value_targets"]


@dataclass(frozen=True, slots=True)
class Step:
    """One step appended to an open `GameSegment` (A = action_space_size: the number of discrete
    actions, or K sampled actions of a continuous search)."""

    obs: np.ndarray
    """`[*obs_shape]` in the segment's observation dtype: o_j."""
    action: int | np.ndarray
    """a_j, taken after o_j: an int, or a `[D]` float32 vector in [-1, 1] (continuous)."""
    reward: float
    """r_j, received after a_j."""
    root_value: float
    """The search's value of o_j."""
    policy: np.ndarray
    """`[A]` float32: the search's visit-count policy at o_j."""
    sampled_actions: np.ndarray | None = None
    """Continuous only: `[A, D]` float32, the root's sampled actions that `policy` is over."""


class GameSegment:
    """One env's trajectory piece, built by `append` per step then frozen by `close`.

    Once closed, it holds (T = number of steps, A = action_space_size): `obs [T, *obs_shape]` in
    `observation_dtype`, `actions [T]` int64, `rewards [T]` float32, `root_values [T]` float32,
    `policies [T, A]` float32, `terminated`, and `bootstrap_value`: the value of the state after
    step T-1 (0.0 when terminated), rounded to float32.

    `weights_version` is the version of the weights that searched its first step (the oldest its
    steps saw): the learner's update count when they were published. The collector sets it;
    replay keeps it per segment, so `policy_lag` = learner updates − version can be logged.

    Continuous actions (`action_dim` D > 0): `actions [T, D]` float32 in [-1, 1], A is the K
    actions the search sampled at each root, `sampled_actions [T, K, D]` float32 holds them and
    `policies [T, K]` their visit shares; a_j is one of step j's samples. Discrete segments have
    `sampled_actions` None.
    """

    __slots__ = ("observation_shape", "observation_dtype", "action_space_size", "action_dim", "obs", "actions",
                 "rewards", "root_values", "policies", "sampled_actions", "terminated", "bootstrap_value",
                 "closed", "weights_version", "_steps")

    def __init__(self, observation_shape: tuple[int, ...], action_space_size: int,
                 observation_dtype: DTypeLike = np.float32, action_dim: int = 0) -> None:
        if action_space_size < 1:
            raise ValueError(f"action_space_size={action_space_size} must be >= 1")
        if action_dim < 0:
            raise ValueError(f"action_dim={action_dim} must be >= 0 (0: discrete actions)")
        self.observation_shape = tuple(observation_shape)
        self.observation_dtype = np.dtype(observation_dtype)
        self.action_space_size = action_space_size
        self.action_dim = int(action_dim)
        self.weights_version = 0
        self._steps: list[Step] = []  # appended while open; cleared by close
        self._freeze([], [], [], [], [], terminated=False, bootstrap_value=0.0, sampled_actions=[])
        self.closed = False  # _freeze closes; the empty arrays above only give shapes

    def __len__(self) -> int:
        return len(self.actions) if self.closed else len(self._steps)

    def append(
        self, obs: np.ndarray, action: int | np.ndarray, reward: float, root_value: float,
        search_policy: np.ndarray, sampled_actions: np.ndarray | None = None,
    ) -> None:
        """Records one step: `obs [*obs_shape]`, the action taken after it, the reward it
        earned, and the search's root value and policy `[A]` at `obs`.

        A float segment casts `obs` to its dtype; an integer (frame) segment takes only `obs` of
        its own dtype, since casting floats in [0, 1] to uint8 would silently zero them.
        """
        if self.closed:
            raise RuntimeError("append on a closed GameSegment")
        obs = np.asarray(obs)
        if self.observation_dtype.kind in "iu" and obs.dtype != self.observation_dtype:
            raise ValueError(f"obs dtype {obs.dtype} != observation_dtype {self.observation_dtype}")
        obs = np.array(obs, self.observation_dtype)  # copies: the caller may reuse its buffers
        policy = np.array(search_policy, np.float32)
        if obs.shape != self.observation_shape:
            raise ValueError(f"obs shape {obs.shape} != observation_shape {self.observation_shape}")
        if policy.shape != (self.action_space_size,):
            raise ValueError(f"search_policy shape {policy.shape} != ({self.action_space_size},)")
        if self.action_dim:
            action, sampled = self._continuous(action, sampled_actions)
            self._steps.append(Step(obs, action, float(reward), float(root_value), policy, sampled))
            return
        if not 0 <= int(action) < self.action_space_size:
            raise ValueError(f"action={action} outside 0..{self.action_space_size - 1}")
        self._steps.append(Step(obs, int(action), float(reward), float(root_value), policy))

    def _continuous(self, action, sampled_actions) -> tuple[np.ndarray, np.ndarray]:
        """A continuous step's checked action `[D]` and sampled actions `[A, D]`, float32 copies."""
        d = self.action_dim
        vec = np.array(action, np.float32).reshape(-1)
        if vec.shape != (d,) or not np.isfinite(vec).all() or np.abs(vec).max() > 1.0:
            raise ValueError(f"action={np.asarray(action).tolist()}; expected {d} finite entries in [-1, 1]")
        if sampled_actions is None:
            raise ValueError("a continuous segment's steps need the root's sampled_actions [A, D]")
        sampled = np.array(sampled_actions, np.float32)
        if sampled.shape != (self.action_space_size, d):
            raise ValueError(f"sampled_actions shape {sampled.shape} != ({self.action_space_size}, {d})")
        return vec, sampled

    def open_steps(self) -> list[Step]:
        """The steps appended so far to an open segment, oldest first."""
        return list(self._steps)

    def close(self, terminated: bool, bootstrap_value: float = 0.0) -> None:
        """Freezes the segment into arrays. `bootstrap_value` is the value of the state after
        the last step, used only when not `terminated` (truncated or cut)."""
        if self.closed:
            raise RuntimeError("close on a closed GameSegment")
        steps, self._steps = self._steps, []
        self._freeze([s.obs for s in steps], [s.action for s in steps], [s.reward for s in steps],
                     [s.root_value for s in steps], [s.policy for s in steps], terminated, bootstrap_value,
                     sampled_actions=[s.sampled_actions for s in steps])

    @classmethod
    def from_arrays(
        cls, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, root_values: np.ndarray,
        policies: np.ndarray, terminated: bool, bootstrap_value: float, weights_version: int = 0,
        sampled_actions: np.ndarray | None = None,
    ) -> GameSegment:
        """A closed segment from whole arrays shaped as on the class (`obs` keeps its dtype);
        continuous: `actions [T, D]` and `sampled_actions [T, A, D]`."""
        action_dim = int(np.shape(actions)[1]) if np.ndim(actions) == 2 else 0
        seg = cls(tuple(obs.shape[1:]), policies.shape[1], obs.dtype, action_dim=action_dim)
        seg.weights_version = int(weights_version)
        seg._freeze(obs, actions, rewards, root_values, policies, terminated, bootstrap_value,
                    sampled_actions=sampled_actions)
        return seg

    def _freeze(
        self, obs: ArrayLike, actions: ArrayLike, rewards: ArrayLike, root_values: ArrayLike,
        policies: ArrayLike, terminated: bool, bootstrap_value: float, sampled_actions: ArrayLike | None = None,
    ) -> None:
        """Stores the step arrays (lists of rows or whole arrays) and marks the segment closed."""
        num = len(actions)
        self.obs = np.asarray(obs, self.observation_dtype).reshape(num, *self.observation_shape)
        self.policies = np.asarray(policies, np.float32).reshape(num, self.action_space_size)
        if self.action_dim:
            d = self.action_dim
            self.actions = np.asarray(actions, np.float32).reshape(num, d)
            if sampled_actions is None:
                raise ValueError("a continuous segment needs sampled_actions [T, A, D]")
            self.sampled_actions = np.asarray(sampled_actions, np.float32).reshape(num, self.action_space_size, d)
        else:
            self.actions = np.asarray(actions, np.int64)
            self.sampled_actions = None
        self.rewards = np.asarray(rewards, np.float32)
        self.root_values = np.asarray(root_values, np.float32)
        if self.rewards.shape != (num,) or self.root_values.shape != (num,):
            raise ValueError(f"rewards {self.rewards.shape}, root_values "
                             f"{self.root_values.shape}: need [{num}] like actions")
        self.terminated = bool(terminated)
        # float32 like every stored value: a snapshot keeps it exactly, so targets stay bit-equal.
        self.bootstrap_value = 0.0 if terminated else float(np.float32(bootstrap_value))
        self.closed = True


def n_step_bootstrap(
    rewards: np.ndarray, bootstrap_value: float, td_steps: int, discount: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The parts of an n-step target that do not depend on the stored root values.

    Returns `(known [T], scale [T])` float32 with z_j = known_j + scale_j * v_{m_j},
    m_j = min(j+n, T). Where m_j < T (the bootstrap state o_{m_j} is in the segment) `known` is
    the discounted reward sum sum_{i<n} g^i r_{j+i} and `scale` = g^(m_j-j), so v_{m_j} can be
    the stored root value or a fresh estimate of the current network; where m_j = T, `known`
    also holds the segment's `bootstrap_value` term g^(T-j) v_T and `scale` is 0. The sum runs
    in float64 (this is the only place it is written).
    """
    num = len(rewards)
    rewards_ext = np.append(np.asarray(rewards, np.float64), np.zeros(td_steps))  # [T+n]: 0 past the end
    j = np.arange(num)
    m = np.minimum(j + td_steps, num)  # bootstrap index per position
    known = np.zeros(num)
    for i in range(td_steps):
        known += discount**i * rewards_ext[j + i]
    scale = np.where(m < num, discount ** (m - j), 0.0)
    known += np.where(m == num, discount ** (m - j) * bootstrap_value, 0.0)
    return known.astype(np.float32), scale.astype(np.float32)


def n_step_value_targets(
    rewards: np.ndarray, root_values: np.ndarray, bootstrap_value: float, td_steps: int,
    discount: float,
) -> np.ndarray:
    """`[T]` float32 n-step targets z_j = sum_{i=j}^{m-1} g^(i-j) r_i + g^(m-j) v_m, m=min(j+n,T).

    `rewards`, `root_values`: `[T]`. v_T is `bootstrap_value` (pass 0.0 for a terminated
    segment), so a target whose n steps run past the end sums the rewards left and bootstraps
    from the state after the last step, discounted by the steps actually taken. Computed as
    `known + scale * v_m` in float32 from `n_step_bootstrap`, exactly as the replay buffer
    computes it when sampling.
    """
    num = len(rewards)
    known, scale = n_step_bootstrap(rewards, bootstrap_value, td_steps, discount)
    boot = np.minimum(np.arange(num) + td_steps, num - 1)  # any in-segment index where scale is 0
    return known + scale * np.asarray(root_values, np.float32)[boot]
