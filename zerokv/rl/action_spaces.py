"""Action spaces zerokv accepts, and the wrappers that give continuous ones the model's form.

- `Discrete(n)` starting at 0: actions `0 … n-1`, as they are.
- A bounded rank-1 `Box` (Pendulum-v1, LunarLanderContinuous-v3, MuJoCo, DMC through shimmy):
  the model acts in [-1, 1]^D; `RescaleAction` maps that onto the env's bounds, so the model,
  replay and search never see the bounds. Infinite bounds, rank > 1 and Dict/Tuple action spaces
  are refused by name.

`action_repeat` (> 1) repeats each agent action that many env steps, summing the rewards and
stopping at an episode's end (UniZero uses 2 on DMC). DMC's dict observations are flattened
into one float vector (state observations).
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

__all__ = ["ActionRepeat", "action_dim", "action_space_problem", "continuous_wrappers", "repeat_actions"]


def action_space_problem(act: spaces.Space) -> str | None:
    """Why zerokv cannot act in ``act`` (None: it can)."""
    if isinstance(act, spaces.Discrete):
        return None if int(act.start) == 0 else f"action space {act}; a Discrete(n) space must start at 0"
    if not isinstance(act, spaces.Box):
        return (f"action space {act}; zerokv needs gymnasium.spaces.Discrete(n) or a bounded rank-1 "
                "gymnasium.spaces.Box (Dict, Tuple and MultiDiscrete action spaces are not supported)")
    if len(act.shape) != 1:
        return (f"action space {act} of rank {len(act.shape)}; a continuous action space must be a rank-1 "
                "Box (D,)")
    if not (np.isfinite(act.low).all() and np.isfinite(act.high).all()):
        return (f"action space {act} with infinite bounds (low={act.low.tolist()}, high={act.high.tolist()}); "
                "a continuous action space needs finite bounds (the policy is squashed into them)")
    if not (act.high > act.low).all():
        return f"action space {act}: every high must exceed its low"
    return None


def action_dim(act: spaces.Space) -> int:
    """0 for a `Discrete` space, D for a bounded `Box((D,))` (checked by :func:`action_space_problem`)."""
    return int(act.shape[0]) if isinstance(act, spaces.Box) else 0


class ActionRepeat(gymnasium.Wrapper):
    """Each action is taken ``repeat`` times (rewards summed, stopping at the episode's end)."""

    def __init__(self, env: gymnasium.Env, repeat: int) -> None:
        super().__init__(env)
        self.repeat = repeat

    def step(self, action):
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


def continuous_wrappers(env: gymnasium.Env) -> gymnasium.Env:
    """``env`` (a bounded Box action space) acting in [-1, 1]^D, with dict observations flattened."""
    if isinstance(env.observation_space, spaces.Dict):
        env = gymnasium.wrappers.FlattenObservation(env)
    low, high = -np.ones(env.action_space.shape, np.float32), np.ones(env.action_space.shape, np.float32)
    return gymnasium.wrappers.RescaleAction(_ClipToBounds(env), low, high)


class _ClipToBounds(gymnasium.ActionWrapper):
    """Clips actions into the env's bounds (float32 rounding of the rescale can put one a hair
    outside), keeping the bounded action space (gymnasium's ClipAction makes it unbounded)."""

    def action(self, action):
        return np.clip(action, self.action_space.low, self.action_space.high)


def repeat_actions(env: gymnasium.Env, repeat: int) -> gymnasium.Env:
    """``env`` with each action repeated ``repeat`` times (1: ``env`` itself)."""
    return env if repeat == 1 else ActionRepeat(env, repeat)
