"""Env stepping alone, sync vs async: env steps/s of ``make_vector_env`` in each ``--vector-env`` mode.

    python -m zerokv.bench.envs --env ALE/Pong-v5 --num-envs 8 --steps 2000 --chunk 200

Builds both vector envs (the same ids, seeds and preprocessing as training), warms each up, then
steps them with random actions in alternating chunks (sync, async, async, sync, …: each pair in
the other order, so drift on a shared machine hits both alike) until each has made ``--steps``
vector steps. Autoreset is on, as in training. Prints per mode the median env steps/s over its
chunks (env steps = vector steps × envs) and the ratio async / sync. No model, no search: this
is the ceiling the vector env puts on collection.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import tyro

from zerokv.checks import check_positive_int
from zerokv.rl.envs import VECTOR_ENV_MODES, make_vector_env


@dataclass
class EnvBench:
    """Env steps/s of the sync and async vector envs, interleaved in chunks."""

    env: str = "ALE/Pong-v5"
    """Gymnasium env id (Atari ids need zerokv[atari])."""
    num_envs: int = 8
    """Envs per vector env."""
    steps: int = 2000
    """Vector steps per mode (each steps all envs once)."""
    chunk: int = 200
    """Vector steps per timed chunk."""
    warmup: int = 50
    """Untimed vector steps per mode first."""
    seed: int = 0
    """Seed of the envs and the random actions."""

    def __post_init__(self) -> None:
        for name in ("num_envs", "steps", "chunk", "warmup"):
            check_positive_int(name, getattr(self, name), owner="EnvBench")


def _run(envs, rng: np.random.Generator, steps: int) -> float:
    """Seconds for ``steps`` vector steps with random actions."""
    n = envs.single_action_space.n
    actions = rng.integers(0, n, size=(steps, envs.num_envs))
    start = time.perf_counter()
    for a in actions:
        envs.step(a)
    return time.perf_counter() - start


def bench(args: EnvBench) -> dict[str, float]:
    """Median env steps/s per mode (and ``async/sync``)."""
    envs = {mode: make_vector_env(args.env, args.num_envs, args.seed, mode=mode) for mode in VECTOR_ENV_MODES}
    rates: dict[str, list[float]] = {mode: [] for mode in envs}
    try:
        rng = np.random.default_rng(args.seed)
        for e in envs.values():
            e.reset(seed=args.seed)
            _run(e, rng, args.warmup)
        chunks = -(-args.steps // args.chunk)
        for k in range(chunks):
            order = VECTOR_ENV_MODES if k % 2 == 0 else VECTOR_ENV_MODES[::-1]
            for mode in order:
                seconds = _run(envs[mode], rng, args.chunk)
                rates[mode].append(args.chunk * args.num_envs / seconds)
    finally:
        for e in envs.values():
            e.close()
    result = {mode: statistics.median(r) for mode, r in rates.items()}
    result["async/sync"] = result["async"] / result["sync"]
    print(f"{args.env}: {args.num_envs} envs, random actions, {chunks} interleaved chunks of {args.chunk} "
          f"vector steps per mode")
    for mode, r in rates.items():
        print(f"  {mode:5s}: median {result[mode]:9,.0f} env steps/s  (chunks: min {min(r):,.0f}, max {max(r):,.0f})")
    print(f"  async / sync: {result['async/sync']:.2f}x")
    return result


if __name__ == "__main__":
    bench(tyro.cli(EnvBench))
