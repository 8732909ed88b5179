"""Environment construction: any gymnasium env with `Discrete` actions and a `Box` observation.

Every env made here returns float32 observations of shape `EnvSpec.observation_shape`:

- rank-1 `Box` (CartPole, LunarLander, ...): `(D,)`, cast to float32;
- Atari (`ALE/...` ids or ids containing "NoFrameskip"): gymnasium's `AtariPreprocessing`
  (up to 30 no-ops at reset, frame skip with max-pooling of the last two frames, resize to
  64x64, RGB kept) on top of sticky actions in the emulator, then `(3, 64, 64)` float32 in [0, 1];
- other rank-3 `Box` envs: cast to float32 unchanged, so they must already be `(C, H, W)`.

ale-py is an optional extra (`pip install zerokv[atari]`); it is imported, and its envs registered
with gymnasium, only when an Atari id is first made.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import gymnasium
import numpy as np
from gymnasium import spaces

__all__ = ["EnvSpec", "env_spec", "is_atari", "make_env", "make_vector_env"]

ATARI_SCREEN_SIZE = 64
"""Side of the square Atari frame after preprocessing."""
ATARI_NOOP_MAX = 30
"""Most no-op actions taken at reset (random start state, as in the DQN protocol)."""
EXAMPLE_ENV_ID = "CartPole-v1"
"""Named in error messages as a known-good id."""


@dataclass(frozen=True, slots=True)
class EnvSpec:
    """What the model needs to know about an env, after preprocessing."""

    env_id: str
    """The gymnasium id, e.g. "CartPole-v1" or "ALE/Pong-v5"."""
    observation_shape: tuple[int, ...]
    """`(D,)` for vector observations or `(C, H, W)` for images; always float32."""
    action_space_size: int
    """Number of discrete actions A; actions are `0..A-1`."""
    reward_threshold: float | None = None
    """The return at which gymnasium calls the env solved (475 for CartPole-v1), if registered."""


def is_atari(env_id: str) -> bool:
    """True for ids that get Atari preprocessing: `ALE/...` or containing "NoFrameskip"."""
    return env_id.startswith("ALE/") or "NoFrameskip" in env_id


class _ChwUnitFloat(gymnasium.ObservationWrapper):
    """uint8 `(H, W, C)` frames in [0, 255] -> float32 `(C, H, W)` in [0, 1]."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        h, w, c = env.observation_space.shape
        self.observation_space = spaces.Box(0.0, 1.0, (c, h, w), np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        chw = np.ascontiguousarray(observation.transpose(2, 0, 1), dtype=np.float32)  # (C, H, W)
        return chw * np.float32(1.0 / 255.0)


def _register_ale(env_id: str) -> None:
    """Imports ale-py (the emulator) and opencv (used by AtariPreprocessing), the `atari` extra."""
    try:
        import ale_py
        import cv2  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"env {env_id!r} is an Atari env and needs the optional extra ale-py (with opencv): "
            f"pip install zerokv[atari]  (missing: {e.name})"
        ) from e
    gymnasium.register_envs(ale_py)


def _make_raw(env_id: str, **kwargs: object) -> gymnasium.Env:
    try:
        return gymnasium.make(env_id, **kwargs)
    except (gymnasium.error.UnregisteredEnv, gymnasium.error.DeprecatedEnv) as e:
        raise ValueError(
            f"unknown env id {env_id!r} ({e}); use a registered gymnasium id "
            f"such as {EXAMPLE_ENV_ID!r} or, with zerokv[atari], 'ALE/Pong-v5'"
        ) from e


def _check_spaces(env_id: str, env: gymnasium.Env) -> None:
    """Raises ValueError (after closing `env`) unless it has Discrete actions and a rank-1/3 Box."""
    act, obs = env.action_space, env.observation_space
    problem = None
    if not isinstance(act, spaces.Discrete) or int(act.start) != 0:
        problem = f"action space {act}; zerokv needs gymnasium.spaces.Discrete(n) starting at 0"
    elif not isinstance(obs, spaces.Box):
        problem = f"observation space {obs}; zerokv needs a gymnasium.spaces.Box"
    elif len(obs.shape) not in (1, 3):
        problem = (
            f"observation shape {obs.shape} (rank {len(obs.shape)}); zerokv needs a Box of "
            "rank 1 (D,) or rank 3 (C, H, W)"
        )
    if problem is not None:
        env.close()
        raise ValueError(f"env {env_id!r} has {problem}")


def make_env(
    env_id: str,
    seed: int | None = None,
    *,
    atari_sticky_prob: float = 0.25,
    atari_frame_skip: int = 4,
) -> gymnasium.Env:
    """Makes one preprocessed env whose observations are float32 of `env_spec(env_id)` shape.

    With a `seed`, the env is reset once here with `reset(seed=seed)` and its action space is
    seeded, so every later plain `reset()` / `action_space.sample()` is reproducible.
    `atari_sticky_prob` (ALE `repeat_action_probability`) and `atari_frame_skip` apply to Atari
    ids only.
    """
    if not 0.0 <= atari_sticky_prob <= 1.0:
        raise ValueError(f"atari_sticky_prob={atari_sticky_prob} must lie in [0, 1]")
    if atari_frame_skip < 1:
        raise ValueError(f"atari_frame_skip={atari_frame_skip} must be >= 1")
    if is_atari(env_id):
        _register_ale(env_id)
        # Frame skipping is done by AtariPreprocessing (with max-pooling), so the emulator
        # itself must not skip.
        env = _make_raw(env_id, frameskip=1, repeat_action_probability=atari_sticky_prob)
        _check_spaces(env_id, env)
        env = gymnasium.wrappers.AtariPreprocessing(
            env,
            noop_max=ATARI_NOOP_MAX,
            frame_skip=atari_frame_skip,
            screen_size=ATARI_SCREEN_SIZE,
            terminal_on_life_loss=False,
            grayscale_obs=False,
            scale_obs=False,
        )
        env = _ChwUnitFloat(env)
    else:
        env = _make_raw(env_id)
        _check_spaces(env_id, env)
        env = gymnasium.wrappers.DtypeObservation(env, np.float32)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


@functools.cache
def env_spec(env_id: str) -> EnvSpec:
    """The `EnvSpec` of `make_env(env_id)` (made once and closed; cached per id)."""
    env = make_env(env_id)
    try:
        assert isinstance(env.action_space, spaces.Discrete)
        return EnvSpec(
            env_id=env_id,
            observation_shape=tuple(int(d) for d in env.observation_space.shape),
            action_space_size=int(env.action_space.n),
            reward_threshold=None if env.spec is None else env.spec.reward_threshold,
        )
    finally:
        env.close()


def make_vector_env(
    env_id: str,
    num_envs: int,
    seed: int | None = None,
    *,
    atari_sticky_prob: float = 0.25,
    atari_frame_skip: int = 4,
) -> gymnasium.vector.SyncVectorEnv:
    """`num_envs` copies of `make_env(env_id, seed + i)` stepped in-process.

    Autoreset mode is SAME_STEP (gymnasium >= 1.1), not gymnasium's default NEXT_STEP: when a
    sub-env ends, `step` returns its reset observation in `obs` already, and the last
    observation of the finished episode in `info["final_obs"][i]` (with `info["_final_obs"][i]`
    True, and its info in `info["final_info"]`). No step is ever spent on a dummy reset action.
    Observations are batched: `[num_envs, *observation_shape]` float32.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs={num_envs} must be >= 1")
    if not hasattr(gymnasium.vector, "AutoresetMode"):
        raise ImportError(
            f"make_vector_env needs gymnasium>=1.1 for AutoresetMode.SAME_STEP; "
            f"found gymnasium {gymnasium.__version__}"
        )
    env_fns = [
        functools.partial(
            make_env,
            env_id,
            None if seed is None else seed + i,
            atari_sticky_prob=atari_sticky_prob,
            atari_frame_skip=atari_frame_skip,
        )
        for i in range(num_envs)
    ]
    return gymnasium.vector.SyncVectorEnv(
        env_fns, autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP
    )
