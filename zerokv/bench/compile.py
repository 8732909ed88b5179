"""``zerokv bench --compile``: the compiled recurrent step against the eager one, in one run.

For each config, a float32 eager model (`paged` backend) and a copy of the same weights with
``compile=True`` (:mod:`zerokv.model.compiled`) search the same fixed positions with the same
root noise, interleaved position by position (the order alternating), after one warm-up search
each — the compiled model's compiles its graph. Reported per model: searches/s and the speed-up
over eager, the mean recurrent call (ms) and its multiple of the FLOP floor (this machine's
float32 matmul rate at env_num rows, sampled between positions), the compile seconds, graphs
and dynamo recompiles, the warm-up search's seconds, the largest output difference from a
float32 ``none`` model (no cache) expanding the same nodes, and the positions whose visit counts
equal the eager search's.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from zerokv.bench.configs import REFERENCE, Budget, model_config
from zerokv.bench.precision import ModelRun
from zerokv.bench.recording import NETWORK_OUTPUTS, RecordingModel
from zerokv.bench.report import table
from zerokv.bench.run import MatmulProbe, make_observations, recurrent_flops, rotated
from zerokv.model.config import WorldModelConfig
from zerokv.model.world_model import WorldModel
from zerokv.search import SearchConfig

LABELS = ("eager", "compiled")


def run_compile_config(name: str, base: WorldModelConfig, budget: Budget, *, seed: int = 0) -> list[dict]:
    """Eager vs compiled search on one config: one record per model."""
    cfg = model_config(base, "paged", budget)
    torch.manual_seed(seed)  # the bench's weights
    eager = WorldModel(cfg).eval()
    compiled, reference = eager.copy_with(compile=True), eager.copy_with(cache_backend=REFERENCE)
    runs = [ModelRun("eager", RecordingModel(eager, record=True)),
            ModelRun("compiled", RecordingModel(compiled, record=True))]
    search = SearchConfig(num_simulations=cfg.num_simulations)
    positions = make_observations(cfg, budget.warmup + budget.searches, seed + 7)
    noise_seed, warm_seconds = seed + 1000, {}
    for run in runs:
        t0 = time.perf_counter()
        for i, obs in enumerate(positions[: budget.warmup]):
            run.search(obs, search, noise_seed + 10_000 + i)
        warm_seconds[run.label] = time.perf_counter() - t0
    probe = MatmulProbe(cfg)
    for i, obs in enumerate(positions[budget.warmup:]):
        gc.collect()  # outside the timed searches
        probe.sample()
        for run in rotated(runs, i):
            run.timed_search(obs, search, noise_seed + i)
            run.compare(reference)  # untimed
    probe.sample()
    rate = float(statistics.median(probe.rates))
    floor_ms = 1e3 * recurrent_flops(cfg)["total"] / (rate * 1e9)
    base_speed = statistics.median(1.0 / s for s in runs[0].seconds)
    base_visits = np.concatenate(runs[0].visits)
    report = compiled.compile_report
    records = []
    for run in runs:
        speed = float(statistics.median(1.0 / s for s in run.seconds))
        call = float(statistics.median(run.call_ms))
        visits = np.concatenate(run.visits)
        is_compiled = run.label == "compiled"
        records.append({
            "config": name, "label": run.label, "env_num": cfg.env_num, "num_simulations": cfg.num_simulations,
            "positions": int(visits.shape[0]), "searches_per_s": speed, "speedup": speed / base_speed,
            "recurrent_ms": call, "floor_ms": floor_ms, "vs_floor": call / floor_ms, "matmul_gflops": rate,
            "warmup_s": warm_seconds[run.label],
            "compile_s": report.compile_seconds if is_compiled else 0.0,
            "graphs": sorted(report.graphs) if is_compiled else [],
            "recompiles": report.recompiles if is_compiled else 0,
            "compile_failed": report.failed if is_compiled else None,
            "visits_equal_eager": float((visits == base_visits).all(axis=1).mean()),
            "max_abs_diff_vs_none": max(run.worst[k] for k in NETWORK_OUTPUTS),
            "diff_by_output": dict(run.worst),
        })
    del runs, eager, compiled, reference
    gc.collect()
    return records


def run_compile(configs: Mapping[str, WorldModelConfig], budget: Budget, *, seed: int = 0) -> list[dict]:
    """Records of every config: eager, then compiled."""
    records = []
    for name, base in configs.items():
        records += run_compile_config(name, base, budget, seed=seed)
    return records


def render_compile(records: Sequence[dict]) -> str:
    """One table and the notes needed to read it."""
    rows = [[r["config"], r["label"], f"{r['searches_per_s']:.2f}", f"{r['speedup']:.2f}×",
             f"{r['recurrent_ms']:.2f}", f"{r['floor_ms']:.2f}", f"{r['vs_floor']:.2f}×",
             f"{r['warmup_s']:.1f}", f"{r['compile_s']:.1f}", ",".join(map(str, r["graphs"])) or "—",
             str(r["recompiles"]), f"{r['max_abs_diff_vs_none']:.1e}", f"{100 * r['visits_equal_eager']:.0f}%"]
            for r in records]
    first = records[0] if records else {}
    failed = [f"{r['config']}: {r['compile_failed']}" for r in records if r["compile_failed"]]
    return (
        f"Compile: torch.compile'd recurrent step vs eager (paged backend, float32, {first.get('positions', 0)} "
        "fixed positions per config = searches × envs, the same weights and root noise; medians over searches)\n"
        + table(["config", "step", "searches/s", "×", "recurrent ms", "floor ms", "/ floor", "warm-up s",
                 "compile s", "graphs (rows)", "recompiles", "max|Δ| vs none", "visits = eager"], rows)
        + "\nnote: floor = the call's FLOPs at this machine's float32 matmul rate at env_num rows; warm-up s = "
        "the untimed first searches, compilation included; max|Δ| over every root and recurrent call against a "
        "float32 'none' model (no cache) expanding the same nodes"
        + ("\nnote: compilation failed, eager used: " + "; ".join(failed) if failed else "")
    )
