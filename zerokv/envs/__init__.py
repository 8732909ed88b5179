"""zerokv's own gymnasium envs: the long-term memory tasks VisualMatch and KeyToDoor.

Importing this package registers ``zerokv/VisualMatch-v0`` and ``zerokv/KeyToDoor-v0`` with gymnasium
(and does nothing else); ``gymnasium.make("zerokv/VisualMatch-v0", memory_length=60)`` then builds
one. ``zerokv.rl.make_env`` imports it for every ``zerokv/`` id.
"""

from gymnasium.envs.registration import register, registry

from zerokv.envs.memory import KeyToDoorEnv, MemoryEnv, VisualMatchEnv

__all__ = ["DEFAULT_MEMORY_LENGTH", "ENV_IDS", "KeyToDoorEnv", "MemoryEnv", "VisualMatchEnv", "check_memory_fit",
           "episode_steps", "is_memory_env"]

NAMESPACE = "zerokv/"
"""Prefix of every env id registered here."""
ENV_IDS: dict[str, str] = {
    "zerokv/VisualMatch-v0": "zerokv.envs.memory:VisualMatchEnv",
    "zerokv/KeyToDoor-v0": "zerokv.envs.memory:KeyToDoorEnv",
}
"""Registered ids and their entry points (options such as ``memory_length`` go to ``gymnasium.make``)."""

for _env_id, _entry in ENV_IDS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry)

_CLASSES = {"zerokv/VisualMatch-v0": VisualMatchEnv, "zerokv/KeyToDoor-v0": KeyToDoorEnv}
DEFAULT_MEMORY_LENGTH = 30
"""The envs' ``memory_length`` when none is given (LightZero's env default)."""


def is_memory_env(env_id: str) -> bool:
    """True for the ids registered here (they take a ``memory_length``)."""
    return env_id in ENV_IDS


def episode_steps(env_id: str, memory_length: int | None = None) -> int:
    """Steps of every episode of ``env_id``: explore + ``memory_length`` + 15 reward steps."""
    if not is_memory_env(env_id):
        raise ValueError(f"env={env_id!r} is not a memory task; allowed: {', '.join(ENV_IDS)}")
    cls = _CLASSES[env_id]
    memory = DEFAULT_MEMORY_LENGTH if memory_length is None else memory_length
    return cls(memory_length=memory).episode_steps


def check_memory_fit(env_id: str, memory_length: int | None, *, context_length: int, unroll_steps: int,
                     history_steps: int | None = None) -> None:
    """Refuse a memory task whose whole episode does not fit the model: the search context must hold
    every step of an episode (2 tokens a step), training must unroll over the whole episode
    (UniZero's setting: unroll = episode length) and, given ``history_steps``, a root context
    rebuilt after a weight update mid-episode must start at the episode's reset. Each error names
    both numbers."""
    steps = episode_steps(env_id, memory_length)
    if 2 * steps > context_length:
        raise ValueError(
            f"memory_length={memory_length} makes {env_id} episodes of {steps} steps = {2 * steps} tokens, more "
            f"than context_length={context_length} tokens: the search could not see the first phase from the "
            f"last; use context_length >= {2 * steps} or a shorter memory_length"
        )
    if unroll_steps < steps:
        raise ValueError(
            f"memory_length={memory_length} makes {env_id} episodes of {steps} steps, longer than the training "
            f"context unroll_steps={unroll_steps}: training must unroll over whole episodes; use unroll_steps "
            f">= {steps} or a shorter memory_length"
        )
    if history_steps is not None and history_steps < steps:
        raise ValueError(
            f"memory_length={memory_length} makes {env_id} episodes of {steps} steps, more than history_steps="
            f"{history_steps}: a root context rebuilt after a weight update mid-episode would lose the first "
            f"phase; use history_steps >= {steps} or a shorter memory_length"
        )
