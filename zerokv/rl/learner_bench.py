"""Learner benchmark: updates/s at an Atari-sized preset and where one update's time goes.

    python -m zerokv.rl.learner_bench --dtypes float32,bfloat16 --updates 10

Builds the ``atari`` world model (3×64×64 observations, embed 768, 2 layers, 8 heads, support
601 bins, 6 actions) and a replay buffer of random frames cut into segments as the collector
cuts them, then runs :meth:`Learner.update` on the same pre-sampled batches for every learner
dtype, interleaved update by update (the order alternating each round), and prints per dtype the
median milliseconds of each part of an update and the updates/s (1 / median update time):

* forward: ``encoder`` (the conv net on the B·(K+1) observations), ``transformer`` (its
  2·(K+1) tokens per row), ``heads`` (the rest of ``forward_sequence``: four heads, action
  embedding);
* ``target``: the momentum target encoder on o_1..o_K; ``bootstrap``: the fresh value targets;
  ``losses``;
* backward: ``bwd heads`` (losses and heads, up to the transformer's output gradient),
  ``bwd transformer``, ``bwd encoder`` (split by gradient hooks on the transformer's and the
  encoder's outputs);
* ``optimizer``: gradient clipping, the AdamW step; ``momentum``: the target encoder's update.

Sampling a batch is timed on its own (``sample``): it is not part of ``Learner.update``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import tyro

from zerokv.checks import check_choice, check_positive_int
from zerokv.model.config import DTYPES, WorldModelConfig
from zerokv.model.world_model import WorldModel
from zerokv.rl.learner import Learner, PhaseTimer
from zerokv.rl.replay import GameSegment, ReplayBuffer

PARTS = ("encoder", "transformer", "heads", "target", "bootstrap", "losses", "bwd heads",
         "bwd transformer", "bwd encoder", "optimizer", "momentum")
"""The parts of one update, in the order they run (they sum to the update's time, up to the
few untimed tensor conversions)."""


@dataclass
class LearnerBench:
    """Time ``Learner.update`` at an Atari-sized preset (UniZero's Atari settings)."""

    dtypes: str = "float32,bfloat16"
    """Learner dtypes to compare, comma-separated ("float32", "bfloat16"), interleaved."""
    updates: int = 10
    """Timed updates per dtype (medians are taken over them)."""
    warmup: int = 2
    """Untimed updates per dtype first."""
    batch_size: int = 64
    """Sequences per update."""
    unroll_steps: int = 10
    """K: steps per sequence after the first."""
    td_steps: int = 5
    """n of the n-step value targets (UniZero's Atari config: 5); sets how many positions have a
    bootstrap term to re-evaluate."""
    embed_dim: int = 768
    """Token width."""
    fresh_value_targets: bool = True
    """Re-evaluate the bootstrap values with the current network (the trainer's default)."""
    segment_length: int = 50
    """Steps per stored segment (the collector's default)."""
    replay_steps: int = 1_000
    """Random-frame steps stored in the replay buffer."""
    threads: int = 2
    """torch.set_num_threads."""
    seed: int = 0
    """Seed of the weights, frames and sampling."""

    def __post_init__(self) -> None:
        for name in ("updates", "warmup", "batch_size", "unroll_steps", "td_steps", "embed_dim",
                     "segment_length", "replay_steps", "threads"):
            check_positive_int(name, getattr(self, name), owner="LearnerBench")
        for dtype in self.dtype_list:
            check_choice("dtypes", dtype, DTYPES, owner="LearnerBench")

    @property
    def dtype_list(self) -> list[str]:
        return [d.strip() for d in self.dtypes.split(",") if d.strip()]


@dataclass(frozen=True, slots=True)
class LearnerTiming:
    """One learner dtype's medians over the timed updates."""

    dtype: str
    update_ms: float
    """Median wall milliseconds of a whole ``Learner.update``."""
    parts_ms: dict[str, float] = field(default_factory=dict)
    """Median milliseconds of each of :data:`PARTS`."""

    @property
    def updates_per_second(self) -> float:
        return 1000.0 / self.update_ms


def atari_model_config(bench: LearnerBench) -> WorldModelConfig:
    """The ``atari`` world model, with room for the training sequence's 2·(K+1) tokens."""
    return WorldModelConfig(
        observation_shape=(3, 64, 64), action_space_size=6, embed_dim=bench.embed_dim, num_layers=2,
        num_heads=8, context_length=8, max_tokens=max(8, 2 * (bench.unroll_steps + 1)), support_size=300,
    )


def random_replay(bench: LearnerBench, cfg: WorldModelConfig) -> ReplayBuffer:
    """A buffer of ``replay_steps`` random frames (multiples of 1/255, like preprocessed Atari
    frames) in segments of ``segment_length`` that end by a cut (so they bootstrap)."""
    rng = np.random.default_rng(bench.seed)
    replay = ReplayBuffer(bench.replay_steps, cfg.observation_shape, cfg.action_space_size,
                          unroll_steps=bench.unroll_steps, td_steps=bench.td_steps, discount=0.997,
                          seed=bench.seed)
    a = cfg.action_space_size
    for start in range(0, bench.replay_steps, bench.segment_length):
        t = min(bench.segment_length, bench.replay_steps - start)
        frames = rng.integers(0, 256, size=(t, *cfg.observation_shape), dtype=np.uint8)
        replay.add(GameSegment.from_arrays(
            frames.astype(np.float32) / np.float32(255.0), rng.integers(a, size=t),
            rng.choice(np.float32([-1.0, 0.0, 0.0, 0.0, 1.0]), size=t), rng.normal(size=t).astype(np.float32),
            rng.dirichlet(np.ones(a), size=t).astype(np.float32), terminated=False, bootstrap_value=0.0,
        ))
    return replay


class _PartClock:
    """Times the model's parts inside one update through module and gradient hooks."""

    def __init__(self, learner: Learner) -> None:
        self.timer = learner.timer = PhaseTimer()
        self.marks: dict[str, float] = {}
        model = learner.model
        for name, module in (("encoder", model.encoder), ("transformer", model.transformer)):
            module.register_forward_pre_hook(self._pre(name))
            module.register_forward_hook(self._post(name))

    def reset(self) -> None:
        self.timer.seconds.clear()
        self.timer.started.clear()
        self.marks.clear()

    def _pre(self, name: str):
        def hook(module, args):
            if self.timer.current == "forward":
                self.marks[name + "_start"] = time.perf_counter()
        return hook

    def _post(self, name: str):
        def hook(module, args, output):
            if self.timer.current != "forward":
                return
            self.marks[name] = time.perf_counter() - self.marks[name + "_start"]
            if output.requires_grad:  # the gradient reaching this output: the parts after it are done
                output.register_hook(lambda grad: self.marks.__setitem__("grad_" + name, time.perf_counter()))
        return hook

    def parts(self) -> dict[str, float]:
        """Seconds per part of the update just run."""
        s, m = self.timer.seconds, self.marks
        backward_start = self.timer.started["backward"]
        backward_end = backward_start + s["backward"]
        return {
            "encoder": m["encoder"], "transformer": m["transformer"],
            "heads": s["forward"] - m["encoder"] - m["transformer"],
            "target": s["target"], "bootstrap": s["bootstrap"], "losses": s["losses"],
            "bwd heads": m["grad_transformer"] - backward_start,
            "bwd transformer": m["grad_encoder"] - m["grad_transformer"],
            "bwd encoder": backward_end - m["grad_encoder"],
            "optimizer": s["optimizer"], "momentum": s["momentum"],
        }


def _timed_update(learner: Learner, clock: _PartClock, batch) -> tuple[float, dict[str, float]]:
    clock.reset()
    start = time.perf_counter()
    learner.update(batch)
    return time.perf_counter() - start, clock.parts()


def run(bench: LearnerBench) -> tuple[list[LearnerTiming], float]:
    """Interleaved timings of every dtype, and the median seconds of ``replay.sample``."""
    torch.set_num_threads(bench.threads)
    cfg = atari_model_config(bench)
    replay = random_replay(bench, cfg)
    learners, clocks = {}, {}
    for dtype in bench.dtype_list:
        torch.manual_seed(bench.seed)  # the same initial weights for every dtype
        learner = Learner(WorldModel(cfg), learning_rate=1e-4, weight_decay=1e-4, grad_clip=5.0,
                          target_update_rate=0.05, fresh_value_targets=bench.fresh_value_targets,
                          td_steps=bench.td_steps, dtype=dtype)
        learners[dtype], clocks[dtype] = learner, _PartClock(learner)
    totals = {d: [] for d in learners}
    parts = {d: {p: [] for p in PARTS} for d in learners}
    sample_seconds = []
    for round_ in range(bench.warmup + bench.updates):
        start = time.perf_counter()
        batch = replay.sample(bench.batch_size)
        sample_seconds.append(time.perf_counter() - start)
        order = list(learners) if round_ % 2 == 0 else list(reversed(learners))
        for dtype in order:
            total, split = _timed_update(learners[dtype], clocks[dtype], batch)
            if round_ >= bench.warmup:
                totals[dtype].append(total)
                for p in PARTS:
                    parts[dtype][p].append(split[p])
    timings = [
        LearnerTiming(d, 1000 * statistics.median(totals[d]),
                      {p: 1000 * statistics.median(parts[d][p]) for p in PARTS})
        for d in learners
    ]
    return timings, statistics.median(sample_seconds)


def report(bench: LearnerBench, timings: Sequence[LearnerTiming], sample_seconds: float) -> str:
    """The table: one column per dtype, one row per part, then update ms, updates/s, ratio."""
    base = timings[0].update_ms
    width = max(len(p) for p in PARTS) + 2
    lines = [f"learner at atari (embed {bench.embed_dim}, batch {bench.batch_size} × (K={bench.unroll_steps} + 1), "
             f"td {bench.td_steps}, fresh value targets {'on' if bench.fresh_value_targets else 'off'}, "
             f"{bench.threads} threads): medians of {bench.updates} interleaved updates, ms",
             f"{'part':<{width}}" + "".join(f"{t.dtype:>12}" for t in timings)]
    for p in PARTS:
        lines.append(f"{p:<{width}}" + "".join(f"{t.parts_ms[p]:12.1f}" for t in timings))
    lines.append(f"{'update':<{width}}" + "".join(f"{t.update_ms:12.1f}" for t in timings))
    lines.append(f"{'updates/s':<{width}}" + "".join(f"{t.updates_per_second:12.3f}" for t in timings))
    lines.append(f"{'ratio':<{width}}" + "".join(f"{base / t.update_ms:11.2f}×" for t in timings))
    lines.append(f"replay.sample({bench.batch_size}): {1000 * sample_seconds:.1f} ms (not part of the update)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    bench = tyro.cli(LearnerBench, args=argv, prog="python -m zerokv.rl.learner_bench")
    timings, sample_seconds = run(bench)
    print(report(bench, timings, sample_seconds))


if __name__ == "__main__":
    main()
