"""Environment construction: any gymnasium env with `Discrete` or bounded rank-1 `Box` actions
(:mod:`zerokv.rl.action_spaces`: continuous actions are rescaled to [-1, 1]) and a `Box` observation
(DMC's dict observations, through shimmy's `dm_control/...` ids, are flattened).

Every env made here returns observations of shape `EnvSpec.observation_shape` and dtype
`EnvSpec.observation_dtype`:

- rank-1 `Box` (CartPole, LunarLander, ...): `(D,)`, cast to float32;
- Atari (`ALE/...` ids or ids containing "NoFrameskip"): gymnasium's `AtariPreprocessing`
  (up to 30 no-ops at reset, frame skip with max-pooling of the last two frames, resize to
  64x64, RGB kept) on top of the emulator's sticky actions, then `(3, 64, 64)` uint8 frames in
  [0, 255] (`zerokv.rl.observations` makes them the model's floats; replay keeps the uint8);
- other rank-3 `Box` envs: cast to float32 unchanged, so they must already be `(C, H, W)`.

`EnvOptions` holds the Atari emulator settings (frame skip, sticky-action probability, full
action space); reward clipping and terminal-on-life-loss are training-only and live in the
collector.

ale-py is an optional extra (`pip install zerokv[atari]`); it is imported, and its envs registered
with gymnasium, only when an Atari id is first made.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import gymnasium
import numpy as np
from gymnasium import spaces

import zerokv.envs  # registers zerokv's own ids: the memory tasks
from zerokv.checks import check_bool, check_choice, check_float, check_positive_int, install_hint
from zerokv.rl.action_spaces import (
    action_dim,
    action_space_problem,
    continuous_wrappers,
    repeat_actions,
)

__all__ = ["DEFAULT_ENV_OPTIONS", "VECTOR_ENV_MODES", "EnvOptions", "EnvSpec", "VectorEnvMode", "check_env_id", "env_spec",
           "is_atari", "make_env", "make_vector_env", "registered_sticky_prob", "replay_actions"]

ATARI_SCREEN_SIZE = 64
"""Side of the square Atari frame after preprocessing."""
ATARI_NOOP_MAX = 30
"""Most no-op actions taken at reset (random start state, as in the DQN protocol)."""
EXAMPLE_ENV_ID = "CartPole-v1"
"""Named in error messages as a known-good id."""
VectorEnvMode = Literal["sync", "async"]
"""How a vector env steps its envs: in turn in this process, or in parallel, one process each."""
VECTOR_ENV_MODES: tuple[str, ...] = get_args(VectorEnvMode)
ASYNC_CONTEXT = "spawn"
"""Start method of the async envs' worker processes: "spawn" starts each from a clean
interpreter. "fork" would copy the parent's torch and OpenMP thread state, which is not safe
to continue in a child."""


@dataclass(frozen=True, slots=True)
class EnvOptions:
    """Atari emulator settings; other envs ignore them. Defaults follow LightZero's UniZero Atari
    setup (frame skip 4, the minimal action set, and the id's own sticky actions: none for
    LightZero's `PongNoFrameskip-v4`)."""

    frame_skip: int = 4
    """Emulator frames per agent step (max-pooled over the last two)."""
    sticky_action_prob: float | None = None
    """Probability that the emulator repeats the previous action instead of the new one. None:
    the id's registered value (0.25 for `ALE/...-v5`, 0.0 for `...NoFrameskip-v4`)."""
    full_action_space: bool = False
    """All 18 Atari actions instead of the game's minimal set."""
    max_episode_frames: int | None = None
    """Emulator frames after which an episode is truncated (108,000 = 27,000 agent steps at
    frame skip 4: the Atari 100k protocol). None: the id's own limit."""
    memory_length: int | None = None
    """The memory tasks' (zerokv/VisualMatch-v0, zerokv/KeyToDoor-v0) distractor-phase length; None:
    the env's default (30). Other envs refuse a value."""
    action_repeat: int = 1
    """Non-Atari envs: each agent action is taken this many env steps, rewards summed (UniZero
    uses 2 on DMC; Atari's frame skip is `frame_skip`)."""

    def __post_init__(self) -> None:
        check_positive_int("frame_skip", self.frame_skip, owner="EnvOptions")
        check_positive_int("action_repeat", self.action_repeat, owner="EnvOptions")
        if self.max_episode_frames is not None:
            check_positive_int("max_episode_frames", self.max_episode_frames, owner="EnvOptions")
        if self.memory_length is not None:
            check_positive_int("memory_length", self.memory_length, owner="EnvOptions")
        if self.sticky_action_prob is not None:
            check_float("sticky_action_prob", self.sticky_action_prob, low=0.0, high=1.0, owner="EnvOptions")
        check_bool("full_action_space", self.full_action_space, owner="EnvOptions")


DEFAULT_ENV_OPTIONS = EnvOptions()
"""`EnvOptions()`, the default of every function that takes options."""


@dataclass(frozen=True, slots=True)
class EnvSpec:
    """What the model needs to know about an env, after preprocessing."""

    env_id: str
    """The gymnasium id, e.g. "CartPole-v1" or "ALE/Pong-v5"."""
    observation_shape: tuple[int, ...]
    """`(D,)` for vector observations or `(C, H, W)` for images."""
    action_space_size: int
    """Number of discrete actions A; actions are `0..A-1` (0 for continuous actions)."""
    reward_threshold: float | None = None
    """The return at which gymnasium calls the env solved (475 for CartPole-v1), if registered."""
    observation_dtype: str = "float32"
    """"float32", or "uint8" for Atari frames in [0, 255]."""
    action_dim: int = 0
    """0 for discrete actions; D for a continuous `Box((D,))`, rescaled to [-1, 1]^D."""


def is_atari(env_id: str) -> bool:
    """True for ids that get Atari preprocessing: `ALE/...` or containing "NoFrameskip"."""
    return env_id.startswith("ALE/") or "NoFrameskip" in env_id


class _ChwFrames(gymnasium.ObservationWrapper):
    """uint8 `(H, W, C)` frames -> uint8 `(C, H, W)`, values unchanged."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        h, w, c = env.observation_space.shape
        self.observation_space = spaces.Box(0, 255, (c, h, w), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(observation.transpose(2, 0, 1))  # (C, H, W)


def _register_ale(env_id: str) -> None:
    """Imports ale-py (the emulator) and opencv (used by AtariPreprocessing), the `atari` extra."""
    try:
        import ale_py
        import cv2  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"env {env_id!r} is an Atari env and needs the optional extra ale-py (with opencv): "
            f"{install_hint('atari')}  (missing: {e.name})"
        ) from e
    gymnasium.register_envs(ale_py)


def check_env_id(env_id: object, *, source: str, allow_import: bool = False) -> str:
    """``env_id`` if it is safe to make: an id read from a file (``source`` names it) is data, so it
    must be in gymnasium's registry (``gymnasium.envs.registry``, after registering ale-py's ids
    for an Atari id). gymnasium's ``module:EnvName`` form imports ``module``, that is runs its
    code: it is refused unless ``allow_import`` (the user typed the id on the command line with
    ``--env``, or passed ``--allow-env-import`` / ``allow_env_import=True``). Nothing is imported
    here but ale-py. Raises ValueError naming the id, where it came from and how to allow it."""
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"env id {env_id!r} in {source}; must be a non-empty string such as {EXAMPLE_ENV_ID!r}")
    if ":" in env_id:
        if allow_import:
            return env_id
        module = env_id.split(":", 1)[0]
        raise ValueError(
            f"env id {env_id!r} in {source} would import the module {module!r} (gymnasium's module:EnvName "
            "form runs its code); an env id read from a file is only looked up in gymnasium's registry. If you "
            f"trust that module, type the id on the command line (--env {env_id}) or pass --allow-env-import "
            "(allow_env_import=True in Python)"
        )
    if is_atari(env_id):
        _register_ale(env_id)
    if env_id.startswith("dm_control/"):
        _register_dmc(env_id)
    if env_id not in gymnasium.envs.registry:
        raise ValueError(f"env id {env_id!r} in {source} is not in gymnasium's registry; use a registered id such "
                         f"as {EXAMPLE_ENV_ID!r} or, with zerokv[atari], 'ALE/Pong-v5'")
    return env_id


def _register_dmc(env_id: str) -> None:
    """Imports shimmy (the `dmc` extra), which registers the `dm_control/...` ids with gymnasium."""
    try:
        import shimmy
    except ImportError as e:
        raise ImportError(f"env {env_id!r} is a DeepMind Control Suite env and needs the optional extra "
                          f"shimmy[dm-control]: {install_hint('dmc')}  (missing: {e.name})") from e
    gymnasium.register_envs(shimmy)


def _make_raw(env_id: str, **kwargs: object) -> gymnasium.Env:
    if env_id.startswith("dm_control/"):
        _register_dmc(env_id)
    if kwargs.get("render_mode") is None:
        kwargs.pop("render_mode", None)
    try:
        return gymnasium.make(env_id, **kwargs)
    except (gymnasium.error.UnregisteredEnv, gymnasium.error.DeprecatedEnv) as e:
        raise ValueError(
            f"unknown env id {env_id!r} ({e}); use a registered gymnasium id "
            f"such as {EXAMPLE_ENV_ID!r} or, with zerokv[atari], 'ALE/Pong-v5'"
        ) from e


def _check_spaces(env_id: str, env: gymnasium.Env) -> None:
    """Raises ValueError (after closing `env`) unless it has Discrete or bounded rank-1 Box actions
    and a rank-1/3 Box observation."""
    act, obs = env.action_space, env.observation_space
    problem = action_space_problem(act)
    if problem is not None:
        pass
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


def registered_sticky_prob(env_id: str) -> float:
    """The `repeat_action_probability` gymnasium registered for an Atari id (0.25 for
    `ALE/...-v5`, 0.0 for `...NoFrameskip-v4`)."""
    _register_ale(env_id)
    try:
        kwargs = gymnasium.spec(env_id).kwargs
    except gymnasium.error.Error as e:
        raise ValueError(f"unknown env id {env_id!r} ({e})") from e
    return float(kwargs.get("repeat_action_probability", 0.0))


def make_env(env_id: str, seed: int | None = None, *, options: EnvOptions = DEFAULT_ENV_OPTIONS,
             render_mode: str | None = None) -> gymnasium.Env:
    """Makes one preprocessed env whose observations are of `env_spec(env_id, options)`.

    `render_mode` ("human", "rgb_array", ...) is gymnasium's: `render()` shows or returns the
    env's own picture (for Atari the emulator's full-size screen, not the 64x64 observation).

    With a `seed`, the env is reset once here with `reset(seed=seed)` and its action space is
    seeded, so every later plain `reset()` / `action_space.sample()` is reproducible (for
    Atari, the seeded reset also seeds the emulator's sticky-action draws).
    """
    if is_atari(env_id):
        _register_ale(env_id)
        sticky = options.sticky_action_prob
        sticky = registered_sticky_prob(env_id) if sticky is None else sticky
        # Frame skipping is done by AtariPreprocessing (with max-pooling), so the emulator
        # itself must not skip.
        limit = {} if options.max_episode_frames is None else {"max_num_frames_per_episode": options.max_episode_frames}
        env = _make_raw(env_id, frameskip=1, repeat_action_probability=sticky,
                        full_action_space=options.full_action_space, render_mode=render_mode, **limit)
        _check_spaces(env_id, env)
        env = gymnasium.wrappers.AtariPreprocessing(
            env,
            noop_max=ATARI_NOOP_MAX,
            frame_skip=options.frame_skip,
            screen_size=ATARI_SCREEN_SIZE,
            terminal_on_life_loss=False,  # the collector's option: it must not reset the game
            grayscale_obs=False,
            scale_obs=False,
        )
        env = _ChwFrames(env)
    else:
        extra = {}
        if options.memory_length is not None:
            if not zerokv.envs.is_memory_env(env_id):
                raise ValueError(f"memory_length={options.memory_length} for env {env_id!r}: only the memory tasks "
                                 f"({', '.join(zerokv.envs.ENV_IDS)}) take one")
            extra["memory_length"] = options.memory_length
        env = _make_raw(env_id, render_mode=render_mode, **extra)
        if isinstance(env.action_space, spaces.Box) and action_space_problem(env.action_space) is None:
            env = continuous_wrappers(env)  # flattens DMC's dict observations before the check
        _check_spaces(env_id, env)
        env = gymnasium.wrappers.DtypeObservation(repeat_actions(env, options.action_repeat), np.float32)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


@functools.cache
def env_spec(env_id: str, options: EnvOptions = DEFAULT_ENV_OPTIONS) -> EnvSpec:
    """The `EnvSpec` of `make_env(env_id, options=options)` (made once and closed; cached)."""
    env = make_env(env_id, options=options)
    try:
        continuous = action_dim(env.action_space)
        return EnvSpec(
            env_id=env_id,
            observation_shape=tuple(int(d) for d in env.observation_space.shape),
            action_space_size=0 if continuous else int(env.action_space.n),
            action_dim=continuous,
            reward_threshold=None if env.spec is None else env.spec.reward_threshold,
            observation_dtype=np.dtype(env.observation_space.dtype).name,
        )
    finally:
        env.close()


class _Replayable(gymnasium.Wrapper):
    """Sub-env `vector_index` of a vector env, able to step itself through a list of actions on
    request (`replay_actions`): how one env of an async vector env, living in a worker process,
    is replayed alone. It remembers its last observation for that."""

    def __init__(self, env: gymnasium.Env, index: int) -> None:
        super().__init__(env)
        self.vector_index = index
        self._last_obs: np.ndarray | None = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._last_obs = obs
        return obs, info

    def step(self, action):
        obs, *rest = self.env.step(action)
        self._last_obs = obs
        return (obs, *rest)

    def replay(self, plans: dict[int, Sequence[int]], keep: int) -> tuple[list[np.ndarray], np.ndarray] | None:
        """Steps through `plans[self.vector_index]` if there is one (else None); returns the
        last `keep` observations before an action and the final observation."""
        actions = plans.get(self.vector_index)
        if actions is None:
            return None
        recent: deque[np.ndarray] = deque(maxlen=keep)
        for a in actions:
            recent.append(self._last_obs)
            self.step(np.asarray(a, np.float32) if np.ndim(a) else int(a))  # a continuous action is a vector
        return list(recent), self._last_obs


def replay_actions(envs: gymnasium.vector.VectorEnv, plans: dict[int, Sequence[int]], keep: int,
                   ) -> dict[int, tuple[list[np.ndarray], np.ndarray]]:
    """Steps env `i` of a `make_vector_env` vector env through `plans[i]` (the others stay as
    they are; in parallel in async mode), bypassing autoreset: `plans[i]` must not end the
    episode before its last action. Returns per env `(the last keep observations before an
    action, the final observation)`."""
    results = envs.call("replay", dict(plans), keep)
    return {i: results[i] for i in plans}


def make_vector_env(
    env_id: str, num_envs: int, seed: int | None = None, *, options: EnvOptions = DEFAULT_ENV_OPTIONS,
    mode: VectorEnvMode = "sync",
) -> gymnasium.vector.VectorEnv:
    """`num_envs` copies of `make_env(env_id, seed + i, options=options)`, stepped in this
    process (`mode="sync"`: `SyncVectorEnv`) or each in a worker process of its own
    (`"async"`: `AsyncVectorEnv`, started by `ASYNC_CONTEXT`). Both give the same observations.

    Autoreset mode is SAME_STEP (gymnasium >= 1.1), not gymnasium's default NEXT_STEP: when a
    sub-env ends, `step` returns its reset observation in `obs` already, and the last
    observation of the finished episode in `info["final_obs"][i]` (with `info["_final_obs"][i]`
    True, and its info in `info["final_info"]`). No step is ever spent on a dummy reset action.
    Observations are batched: `[num_envs, *observation_shape]` in the env's dtype.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs={num_envs} must be >= 1")
    if not hasattr(gymnasium.vector, "AutoresetMode"):
        raise ImportError(
            f"make_vector_env needs gymnasium>=1.1 for AutoresetMode.SAME_STEP; "
            f"found gymnasium {gymnasium.__version__}"
        )
    check_choice("mode", mode, VECTOR_ENV_MODES)
    env_fns = [
        functools.partial(_make_replayable, env_id, None if seed is None else seed + i, options, i)
        for i in range(num_envs)
    ]
    autoreset = gymnasium.vector.AutoresetMode.SAME_STEP
    if mode == "async":
        return gymnasium.vector.AsyncVectorEnv(env_fns, autoreset_mode=autoreset, context=ASYNC_CONTEXT)
    return gymnasium.vector.SyncVectorEnv(env_fns, autoreset_mode=autoreset)


def _make_replayable(env_id: str, seed: int | None, options: EnvOptions, index: int) -> gymnasium.Env:
    return _Replayable(make_env(env_id, seed, options=options), index)
