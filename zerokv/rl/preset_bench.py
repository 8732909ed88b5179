"""Speed of a training preset on this machine, and what 100k env steps would cost.

    python -m zerokv.rl.preset_bench --presets atari100k,atari100k-cpu --rounds 3

Builds each preset's trainer (its real envs, model, learner and replay; run directories in a
temporary folder; 20-step segments so replay fills fast), fills replay by collecting, then times, preset after preset within each
round (the order alternating each round, so a shared machine's load falls on all alike):
``collect`` collector steps (one batched search over all envs, then the env step; the
collector's own split), ``updates`` learner updates, and one weight refresh plus root-context
rebuild (what each iteration does after its updates). It prints per preset the medians and the
wall time of ``total_env_steps`` env steps they imply at the preset's replay ratio, evaluation
excluded (it is timed separately: ``eval_steps`` greedy steps of ``eval_episodes`` envs).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import tyro

from zerokv.checks import check_positive_int
from zerokv.presets import preset_path
from zerokv.rl.config import TrainConfig, load_overrides
from zerokv.rl.evaluator import evaluate
from zerokv.rl.factory import env_options, temperature
from zerokv.rl.trainer import Trainer

PARTS = ("search", "env", "update", "refresh", "step_cpu", "update_cpu")
"""What is timed: wall seconds of a search, an env step, an update, a refresh; CPU seconds (all
threads) of a collector step (search and env) and of an update."""


@dataclass
class PresetBench:
    """Time a preset's search, env, learner and per-iteration work, interleaved with others."""

    presets: str = "atari100k,atari100k-cpu"
    """Presets to compare, comma-separated."""
    rounds: int = 3
    """Interleaved rounds (medians are taken over them)."""
    collect: int = 4
    """Collector steps timed per round and preset."""
    updates: int = 4
    """Learner updates timed per round and preset."""
    eval_steps: int = 20
    """Greedy evaluation steps timed once per preset (0: skip)."""
    threads: int = 2
    """torch.set_num_threads."""

    def __post_init__(self) -> None:
        for name in ("rounds", "collect", "updates", "threads"):
            check_positive_int(name, getattr(self, name), owner="PresetBench")


@dataclass(slots=True)
class PresetTiming:
    """One preset's medians (seconds) and the wall time they imply."""

    preset: str
    search_s: float
    """One batched search over all envs."""
    env_s: float
    """One vector-env step (and resets)."""
    update_s: float
    """One learner update."""
    refresh_s: float
    """One weight refresh plus root-context rebuild (once per iteration)."""
    eval_step_s: float
    """One greedy evaluation step of eval_episodes envs (search included)."""
    cfg: TrainConfig
    step_cpu_s: float = float("nan")
    """CPU seconds (all threads) of one collector step, search and env."""
    update_cpu_s: float = float("nan")
    """CPU seconds (all threads) of one learner update."""

    def hours(self) -> float:
        """Wall hours of total_env_steps env steps, evaluation excluded."""
        c = self.cfg
        calls = c.total_env_steps / c.num_envs
        iterations = c.total_env_steps / c.iteration_env_steps
        seconds = (calls * (self.search_s + self.env_s) + c.replay_ratio * c.total_env_steps * self.update_s
                   + iterations * self.refresh_s)
        return seconds / 3600

    def cpu_hours(self) -> float:
        """CPU hours (all threads) of total_env_steps env steps' searches, env steps and updates:
        on a machine of its own with ``threads`` cores, the wall time lies between this divided
        by ``threads`` (perfect scaling) and this."""
        c = self.cfg
        return (c.total_env_steps / c.num_envs * self.step_cpu_s
                + c.replay_ratio * c.total_env_steps * self.update_cpu_s) / 3600

    def share(self) -> dict[str, float]:
        c = self.cfg
        parts = {"search": c.total_env_steps / c.num_envs * self.search_s,
                 "env": c.total_env_steps / c.num_envs * self.env_s,
                 "learner": c.replay_ratio * c.total_env_steps * self.update_s,
                 "refresh": c.total_env_steps / c.iteration_env_steps * self.refresh_s}
        total = sum(parts.values())
        return {k: v / total for k, v in parts.items()}


def _trainer(name: str, out: str, threads: int) -> Trainer:
    # Short segments so that replay holds sequences after a few steps; min_replay_steps 0.
    cfg = TrainConfig(**{**load_overrides(preset_path(name)), "preset": name, "out": out, "progress": False,
                         "segment_length": 20, "min_replay_steps": 0, "threads": threads})
    return Trainer(cfg)


def run(bench: PresetBench) -> list[PresetTiming]:
    names = [p.strip() for p in bench.presets.split(",") if p.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {n: _trainer(n, f"{tmp}/{n}", bench.threads) for n in names}
        try:
            times: dict[str, dict[str, list[float]]] = {n: {k: [] for k in PARTS}
                                                        for n in names}
            for t in trainers.values():
                while t.replay.num_steps < t.cfg.batch_size:  # a first segment per env
                    t.collector.step(temperature(t.cfg, 0))
            for round_ in range(bench.rounds):
                order = names if round_ % 2 == 0 else names[::-1]
                for n in order:
                    _time_round(trainers[n], bench, times[n])
            out = []
            for n, t in trainers.items():
                eval_s = _time_eval(t, bench.eval_steps) if bench.eval_steps else float("nan")
                med = {k: statistics.median(v) for k, v in times[n].items()}
                out.append(PresetTiming(n, med["search"], med["env"], med["update"], med["refresh"], eval_s, t.cfg,
                                        med["step_cpu"], med["update_cpu"]))
            return out
        finally:
            for t in trainers.values():
                t.close()


def _time_round(t: Trainer, bench: PresetBench, times: dict[str, list[float]]) -> None:
    for _ in range(bench.collect):
        cpu = time.process_time()
        r = t.collector.step(temperature(t.cfg, 0))
        times["step_cpu"].append(time.process_time() - cpu)
        times["search"].append(r.search_seconds)
        times["env"].append(r.env_seconds)
    for _ in range(bench.updates):
        batch = t.replay.sample(t.cfg.batch_size)
        start, cpu = time.perf_counter(), time.process_time()
        t.learner.update(batch)
        times["update"].append(time.perf_counter() - start)
        times["update_cpu"].append(time.process_time() - cpu)
    start = time.perf_counter()
    t._refresh_search_model()
    t.collector.rebuild_contexts()
    times["refresh"].append(time.perf_counter() - start)


def _time_eval(t: Trainer, steps: int) -> float:
    """Seconds per greedy step of ``eval_episodes`` envs (whole calls of ``steps`` steps, the
    envs' creation and reset included)."""
    c = t.cfg
    start = time.perf_counter()
    evaluate(t.model.state_dict(), t.search_model.config, c.env, episodes=c.eval_episodes, seed=0, search=t.search,
             env_options=env_options(c), max_steps=steps, vector_env=c.vector_env)
    return (time.perf_counter() - start) / steps


def report(bench: PresetBench, timings: Sequence[PresetTiming]) -> str:
    base = timings[0]
    lines = [f"presets, medians of {bench.rounds} interleaved rounds ({bench.collect} searches, {bench.updates} "
             f"updates each), {bench.threads} threads; seconds"]
    header = f"{'':<28}" + "".join(f"{t.preset:>16}" for t in timings)
    lines.append(header)
    rows = [("search (all envs, 1 call)", "search_s"), ("env step (all envs)", "env_s"),
            ("learner update", "update_s"), ("refresh + rebuild / iter", "refresh_s"),
            ("eval step (eval envs)", "eval_step_s"), ("CPU s: collector step", "step_cpu_s"),
            ("CPU s: learner update", "update_cpu_s")]
    for label, attr in rows:
        lines.append(f"{label:<28}" + "".join(f"{getattr(t, attr):16.3f}" for t in timings))
    lines.append(f"{'env steps/s (no eval)':<28}"
                 + "".join(f"{t.cfg.total_env_steps / (3600 * t.hours()):16.2f}" for t in timings))
    lines.append(f"{'hours per budget (no eval)':<28}" + "".join(f"{t.hours():16.2f}" for t in timings))
    lines.append(f"{'speed-up':<28}" + "".join(f"{base.hours() / t.hours():15.2f}×" for t in timings))
    lines.append(f"{'CPU hours per budget':<28}" + "".join(f"{t.cpu_hours():16.2f}" for t in timings))
    for t in timings:
        share = ", ".join(f"{k} {100 * v:.0f}%" for k, v in t.share().items())
        lines.append(f"{t.preset}: {t.cfg.total_env_steps} env steps, replay ratio {t.cfg.replay_ratio}: {share}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    bench = tyro.cli(PresetBench, args=argv, prog="python -m zerokv.rl.preset_bench")
    torch.set_num_threads(bench.threads)
    np.seterr(all="ignore")
    print(report(bench, run(bench)))


if __name__ == "__main__":
    main()
