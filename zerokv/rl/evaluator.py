"""Evaluator: greedy search (no root noise, temperature 0) on envs separate from the collector's.

Evaluation plays the raw game, as LightZero's evaluator does: no reward clipping, no episode end
at a lost life. ``max_steps`` caps every episode (a whole Atari game can run for tens of
thousands of steps); a capped episode counts the return it reached.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from zerokv.checks import check_positive_int
from zerokv.model.config import WorldModelConfig
from zerokv.model.world_model import NO_ACTION, WorldModel
from zerokv.rl.envs import DEFAULT_ENV_OPTIONS, EnvOptions, VectorEnvMode, make_vector_env
from zerokv.rl.observations import observations_as_float
from zerokv.search import SearchConfig, plan


@dataclass(frozen=True, slots=True)
class EvalEpisodes:
    """What ``evaluate_episodes`` played: one entry per episode, in env order."""

    returns: list[float]
    """Raw return of each episode."""
    lengths: list[int]
    """Agent steps of each episode."""
    capped: list[bool]
    """True where the episode was cut at ``max_steps`` rather than ended by the env."""


def evaluate(
    model_state: dict, model_config: WorldModelConfig, env_id: str, *, episodes: int, seed: int,
    search: SearchConfig, env_options: EnvOptions = DEFAULT_ENV_OPTIONS, max_steps: int | None = None,
    vector_env: VectorEnvMode = "sync",
) -> list[float]:
    """Returns of ``episodes`` greedy episodes (``evaluate_episodes(...).returns``)."""
    return evaluate_episodes(model_state, model_config, env_id, episodes=episodes, seed=seed, search=search,
                             env_options=env_options, max_steps=max_steps, vector_env=vector_env).returns


def evaluate_episodes(
    model_state: dict, model_config: WorldModelConfig, env_id: str, *, episodes: int, seed: int,
    search: SearchConfig, env_options: EnvOptions = DEFAULT_ENV_OPTIONS, max_steps: int | None = None,
    vector_env: VectorEnvMode = "sync",
) -> EvalEpisodes:
    """``episodes`` greedy episodes, one env per episode, all searched together, each cut after
    ``max_steps`` agent steps if given.

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
    envs = make_vector_env(env_id, episodes, seed, options=env_options, mode=vector_env)
    try:
        obs, _ = envs.reset(seed=[seed + 7919 * i for i in range(episodes)])
        returns = np.zeros(episodes)
        steps = np.zeros(episodes, np.int64)
        active = np.ones(episodes, bool)
        ended = np.zeros(episodes, bool)  # by the env itself (not by max_steps)
        last: list = [NO_ACTION] * episodes  # per env: an int, or a float32 vector [D] (continuous)
        rng = np.random.default_rng(seed)
        while active.any():
            rows = np.flatnonzero(active)
            out = plan(model, observations_as_float(obs[rows], cfg.device), config=search, rng=rng,
                       env_ids=rows.tolist(), last_actions=[last[r] for r in rows], add_noise=False, temperature=0.0)
            actions = np.zeros((episodes, cfg.action_dim), np.float32) if cfg.continuous else np.zeros(episodes, np.int64)
            actions[rows] = out.action
            obs, rewards, terminated, truncated, _ = envs.step(actions)
            returns[rows] += rewards[rows]
            steps[rows] += 1
            for j, r in enumerate(rows.tolist()):
                last[r] = out.action[j]
            ended[rows] |= terminated[rows] | truncated[rows]
            active &= ~ended
            if max_steps is not None:
                active &= steps < max_steps
        return EvalEpisodes(returns.tolist(), [int(n) for n in steps], (~ended).tolist())
    finally:
        envs.close()
