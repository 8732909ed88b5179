"""A random real past for every env, so that a timed search starts with a full context window."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zerokv.model.config import WorldModelConfig


@dataclass(frozen=True, slots=True)
class Prefill:
    """A real past for every env, the same for every backend (long-context runs).

    observations ``[env_num, T, *observation_shape]``, actions ``[env_num, T-1]`` between them, and
    ``next_actions [env_num]``: the actions taken after the last observation (the first timed
    search's ``last_actions``).
    """

    observations: np.ndarray
    actions: np.ndarray
    next_actions: np.ndarray

    @classmethod
    def random(cls, cfg: WorldModelConfig, steps: int, seed: int) -> Prefill:
        rng = np.random.default_rng(seed)
        obs = rng.random((cfg.env_num, steps, *cfg.observation_shape), dtype=np.float32)
        actions = rng.integers(0, cfg.action_space_size, size=(cfg.env_num, steps))
        return cls(obs, actions[:, :-1], actions[:, -1])
