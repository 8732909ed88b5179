"""Learner benchmark: updates/s at an Atari-sized preset and where one update's time goes.

    python -m zerokv.bench.learner --dtypes float32,bfloat16 --updates 10
    python -m zerokv.bench.learner --compile   # each dtype eager and torch.compile'd

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

With ``--compile`` every dtype also runs as a compiled learner (``Learner(compile=True)``,
labelled "<dtype>+compile"), interleaved with the rest; inside its compiled graphs the encoder,
transformer and heads cannot be told apart, so its parts are the learner's own phases (forward,
target, bootstrap, losses, backward, optimizer, momentum), and its first update — the compile —
is reported on its own (``compile s``: the first update's seconds less the median update's).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
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

PHASES = ("forward", "target", "bootstrap", "losses", "backward", "optimizer", "momentum")
"""The learner's own phases (:class:`~zerokv.rl.learner.PhaseTimer`): a compiled learner's parts."""
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
    compile: bool = False
    """Also time each dtype with the torch.compile'd update (forward, losses, backward)."""
    model: str = "atari"
    """Model preset: "atari" (3×64×64 frames, embed_dim, 6 actions) or "cartpole" (the CartPole
    training model: 4 features, embed 64, 2 heads, support 50, 2 actions; ignores embed_dim)."""

    def __post_init__(self) -> None:
        for name in ("updates", "warmup", "batch_size", "unroll_steps", "td_steps", "embed_dim",
                     "segment_length", "replay_steps", "threads"):
            check_positive_int(name, getattr(self, name), owner="LearnerBench")
        for dtype in self.dtype_list:
            check_choice("dtypes", dtype, DTYPES, owner="LearnerBench")
        check_choice("model", self.model, ("atari", "cartpole"), owner="LearnerBench")

    @property
    def variants(self) -> list[tuple[str, bool]]:
        """(dtype, compiled) of every learner timed, in the first round's order."""
        return [(d, c) for d in self.dtype_list for c in ((False, True) if self.compile else (False,))]

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
    """Median milliseconds of each of :data:`PARTS` (of :data:`PHASES` for a compiled learner)."""
    compile_s: float = 0.0
    """A compiled learner's first update less its median update (0 for eager)."""

    @property
    def updates_per_second(self) -> float:
        return 1000.0 / self.update_ms


def atari_model_config(bench: LearnerBench) -> WorldModelConfig:
    """The ``atari`` world model (or with ``model="cartpole"`` CartPole's), with room for the training
    sequence's 2·(K+1) tokens."""
    if bench.model == "cartpole":
        return WorldModelConfig(observation_shape=(4,), action_space_size=2, embed_dim=64, num_layers=2,
                                num_heads=2, context_length=8, max_tokens=max(8, 2 * (bench.unroll_steps + 1)),
                                support_size=50)
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


class _PhaseClock:
    """A compiled learner's parts: its own phases (the model's parts are fused inside its graphs)."""

    def __init__(self, learner: Learner) -> None:
        self.timer = learner.timer = PhaseTimer()

    def reset(self) -> None:
        self.timer.seconds.clear()

    def parts(self) -> dict[str, float]:
        return {p: self.timer.seconds[p] for p in PHASES}


def _label(dtype: str, compiled: bool) -> str:
    return f"{dtype}+compile" if compiled else dtype


def _timed_update(learner: Learner, clock, batch) -> tuple[float, dict[str, float]]:
    clock.reset()
    start = time.perf_counter()
    learner.update(batch)
    return time.perf_counter() - start, clock.parts()


def run(bench: LearnerBench) -> tuple[list[LearnerTiming], float]:
    """Interleaved timings of every variant (dtype, compiled), and the median seconds of ``replay.sample``."""
    torch.set_num_threads(bench.threads)
    cfg = atari_model_config(bench)
    replay = random_replay(bench, cfg)
    learners, clocks = {}, {}
    for dtype, compiled in bench.variants:
        torch.manual_seed(bench.seed)  # the same initial weights for every variant
        learner = Learner(WorldModel(cfg), learning_rate=1e-4, weight_decay=1e-4, grad_clip=5.0,
                          target_update_rate=0.05, fresh_value_targets=bench.fresh_value_targets,
                          td_steps=bench.td_steps, dtype=dtype, compile=compiled)
        label = _label(dtype, compiled)
        learners[label] = learner
        clocks[label] = _PhaseClock(learner) if compiled else _PartClock(learner)
    totals = {v: [] for v in learners}
    firsts: dict[str, float] = {}
    parts = {v: defaultdict(list) for v in learners}
    sample_seconds = []
    for round_ in range(bench.warmup + bench.updates):
        start = time.perf_counter()
        batch = replay.sample(bench.batch_size)
        sample_seconds.append(time.perf_counter() - start)
        order = list(learners) if round_ % 2 == 0 else list(reversed(learners))
        for label in order:
            total, split = _timed_update(learners[label], clocks[label], batch)
            firsts.setdefault(label, total)
            if round_ >= bench.warmup:
                totals[label].append(total)
                for p, seconds in split.items():
                    parts[label][p].append(seconds)
    timings = []
    for label, learner in learners.items():
        median = statistics.median(totals[label])
        timings.append(LearnerTiming(label, 1000 * median, {p: 1000 * statistics.median(v) for p, v in
                                                            parts[label].items()},
                                     firsts[label] - median if learner.parts.compiled else 0.0))
    return timings, statistics.median(sample_seconds)


def report(bench: LearnerBench, timings: Sequence[LearnerTiming], sample_seconds: float) -> str:
    """The table: one column per variant, one row per part, then update ms, updates/s, ratio."""
    base = timings[0].update_ms
    names = list(dict.fromkeys([*PARTS, *(PHASES if bench.compile else ())]))
    width = max(len(p) for p in names) + 2
    col = max(12, *(len(t.dtype) + 2 for t in timings))
    model = f"embed {bench.embed_dim}" if bench.model == "atari" else "CartPole's model, embed 64"
    lines = [f"learner at {bench.model} ({model}, batch {bench.batch_size} × (K={bench.unroll_steps} + 1), "
             f"td {bench.td_steps}, fresh value targets {'on' if bench.fresh_value_targets else 'off'}, "
             f"{bench.threads} threads): medians of {bench.updates} interleaved updates, ms",
             f"{'part':<{width}}" + "".join(f"{t.dtype:>{col}}" for t in timings)]
    for p in names:
        cells = [f"{t.parts_ms[p]:{col}.1f}" if p in t.parts_ms else f"{'—':>{col}}" for t in timings]
        lines.append(f"{p:<{width}}" + "".join(cells))
    lines.append(f"{'update':<{width}}" + "".join(f"{t.update_ms:{col}.1f}" for t in timings))
    lines.append(f"{'updates/s':<{width}}" + "".join(f"{t.updates_per_second:{col}.3f}" for t in timings))
    lines.append(f"{'ratio':<{width}}" + "".join(f"{base / t.update_ms:{col - 1}.2f}×" for t in timings))
    if bench.compile:
        lines.append(f"{'compile s':<{width}}" + "".join(f"{t.compile_s:{col}.1f}" for t in timings))
    lines.append(f"replay.sample({bench.batch_size}): {1000 * sample_seconds:.1f} ms (not part of the update)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    bench = tyro.cli(LearnerBench, args=argv, prog="python -m zerokv.bench.learner")
    timings, sample_seconds = run(bench)
    print(report(bench, timings, sample_seconds))


if __name__ == "__main__":
    main()
