"""Evaluator: greedy search (no root noise, temperature 0) on envs separate from the collector's.

Evaluation plays the raw game, as LightZero's evaluator does: no reward clipping, no episode end
at a lost life. ``max_steps`` caps every episode (a whole Atari game can run for tens of
thousands of steps); a capped episode counts the return it reached.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from zerokv.checks import check_positive_int
from zerokv.model.config import WorldModelConfig
from zerokv.model.world_model import NO_ACTION, WorldModel
from zerokv.rl.envs import DEFAULT_ENV_OPTIONS, EnvOptions, make_vector_env
from zerokv.rl.observations import observations_as_float
from zerokv.search import SearchConfig, plan


def evaluate(
    model_state: dict, model_config: WorldModelConfig, env_id: str, *, episodes: int, seed: int,
    search: SearchConfig, env_options: EnvOptions = DEFAULT_ENV_OPTIONS, max_steps: int | None = None,
) -> list[float]:
    """Returns of ``episodes`` greedy episodes, one env per episode, all searched together, each
    cut after ``max_steps`` agent steps if given.

    ``model_state`` (float32 weights) is cast to ``model_config.dtype`` on loading.
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes}; must be >= 1")
    if max_steps is not None:
        check_positive_int("max_steps", max_steps, note=" (or None: the env's own limit)")
    cfg = dataclasses.replace(model_config, env_num=episodes, cache_validation_mode=False)
    with torch.random.fork_rng():  # building a model draws init weights: keep training's RNG untouched
        model = WorldModel(cfg).eval()
    model.load_state_dict(model_state)
    envs = make_vector_env(env_id, episodes, seed, options=env_options)
    try:
        obs, _ = envs.reset(seed=[seed + 7919 * i for i in range(episodes)])
        returns = np.zeros(episodes)
        steps = np.zeros(episodes, np.int64)
        active = np.ones(episodes, bool)
        last = np.full(episodes, NO_ACTION)
        rng = np.random.default_rng(seed)
        while active.any():
            rows = np.flatnonzero(active)
            out = plan(model, observations_as_float(obs[rows], cfg.device), config=search, rng=rng,
                       env_ids=rows.tolist(), last_actions=last[rows].tolist(), add_noise=False, temperature=0.0)
            actions = np.zeros(episodes, np.int64)
            actions[rows] = out.action
            obs, rewards, terminated, truncated, _ = envs.step(actions)
            returns[rows] += rewards[rows]
            steps[rows] += 1
            last[rows] = out.action
            active[rows] &= ~(terminated[rows] | truncated[rows])
            if max_steps is not None:
                active &= steps < max_steps
        return returns.tolist()
    finally:
        envs.close()
