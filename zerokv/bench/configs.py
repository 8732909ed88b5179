"""What the benchmark runs: the named world-model configs, the backends, and the quick budget.

Everything here is data. A new backend (e.g. "paged") joins the benchmark by joining
``zerokv.model.config.CACHE_BACKENDS``; a new config by joining :data:`CONFIGS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from zerokv.checks import check_positive_int
from zerokv.model.config import CACHE_BACKENDS, WorldModelConfig

REFERENCE = "none"
"""The exact reference every other backend's outputs are compared with (recompute, no cache)."""
BASELINE = "legacy"
"""The "old" column of the comparison table: the seeds' hand-managed pools."""


def _atari(embed_dim: int) -> WorldModelConfig:
    # UniZero's Atari settings (DESIGN.md §6); cache_backend is replaced per backend.
    return WorldModelConfig(
        observation_shape=(3, 64, 64), action_space_size=6, embed_dim=embed_dim, num_layers=2,
        num_heads=8, context_length=8, max_tokens=20, support_size=300, num_simulations=50,
        env_num=8,
    )


def _cartpole() -> WorldModelConfig:
    # The model `zerokv train` builds for CartPole-v1 with its default flags (zerokv/rl/config.py).
    return WorldModelConfig(
        observation_shape=(4,), action_space_size=2, embed_dim=64, num_layers=2, num_heads=2,
        context_length=8, max_tokens=22, support_size=50, num_simulations=25, env_num=8,
    )


CONFIGS: dict[str, WorldModelConfig] = {"small": _atari(256), "atari": _atari(768), "cartpole": _cartpole()}
"""Named configs: ``atari`` (embed 768), ``small`` (the same at embed 256) and ``cartpole`` (the
default training run's model: embed 64, 8 envs × 25 simulations; the soak's default)."""
DEFAULT_CONFIGS = "small,atari"
"""What ``zerokv bench`` measures unless ``--configs`` says otherwise."""
SOAK_CONFIGS = "cartpole"
"""What ``zerokv bench --soak N`` runs unless ``--configs`` says otherwise: a model small enough
for 10,000 searches per backend to take minutes."""


@dataclasses.dataclass(frozen=True, slots=True)
class Budget:
    """How much searching each (config, backend) pair gets (backends interleaved search by search)."""

    searches: int = 5
    """Timed searches (medians are taken over them)."""
    warmup: int = 2
    """Untimed full-size searches before timing (allocates pools, warms the allocator)."""
    simulations: int | None = None
    """Simulations per search; None keeps the config's own (50 for atari/small)."""

    def __post_init__(self) -> None:
        for name in ("searches", "warmup"):
            check_positive_int(name, getattr(self, name))
        if self.simulations is not None:
            check_positive_int("simulations", self.simulations, note=" (or None)")


QUICK = Budget(searches=2, warmup=1, simulations=10)
"""``--quick``: a smoke run of every config and backend (1 warm-up, 2 timed searches of 10
simulations): it checks that the bench runs, it measures nothing."""


def split_names(names: str | Sequence[str]) -> list[str]:
    """``"small, atari"`` or ``["small", "atari"]`` → ``["small", "atari"]`` (order kept, no repeats)."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for item in (str(i).strip() for i in items):
        if item and item not in out:
            out.append(item)
    return out


def resolve_configs(
    names: str | Sequence[str], registry: Mapping[str, WorldModelConfig] = CONFIGS
) -> dict[str, WorldModelConfig]:
    """Look the named configs up; an unknown or empty selection names what is allowed."""
    chosen = split_names(names)
    allowed = ", ".join(registry)
    if not chosen:
        raise ValueError(f"configs={names!r} selects nothing; allowed: {allowed}")
    unknown = [n for n in chosen if n not in registry]
    if unknown:
        raise ValueError(f"unknown config {unknown[0]!r}; allowed: {allowed}")
    return {n: registry[n] for n in chosen}


def resolve_backends(names: str | Sequence[str], *, with_reference: bool) -> list[str]:
    """Validate backend names; put the reference first when a diff against it is wanted."""
    chosen = split_names(names)
    allowed = ", ".join(CACHE_BACKENDS)
    if not chosen:
        raise ValueError(f"backends={names!r} selects nothing; allowed: {allowed}")
    unknown = [n for n in chosen if n not in CACHE_BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend {unknown[0]!r}; allowed: {allowed}")
    if with_reference and REFERENCE not in chosen:
        chosen.append(REFERENCE)
    # The reference runs first: the others are compared with its recorded outputs.
    return sorted(chosen, key=lambda n: n != REFERENCE)


def model_config(base: WorldModelConfig, backend: str, budget: Budget) -> WorldModelConfig:
    """``base`` with ``backend`` and the budget's simulations (which also size the pools)."""
    sims = base.num_simulations if budget.simulations is None else budget.simulations
    return dataclasses.replace(
        base, cache_backend=backend, use_new_cache_manager=None, cache_validation_mode=False,
        num_simulations=sims,
    )
