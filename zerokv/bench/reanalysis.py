"""``zerokv bench --reanalyze N``: roots/s of reanalysing N replayed positions at once vs 8 at a time.

For each config, the `paged` backend reanalyses the same N roots (random observations, each with
:attr:`WorldModelConfig.root_history_steps` steps of history, the same weights, no root noise) in
chunks of 8 — the reference's way: one full search per env_num roots — and then all N in one
:class:`~zerokv.search.Reanalyzer` arena, where each of the ``num_simulations`` recurrent calls
carries every root. Reported per chunk size: roots/s, the speed-up over chunks of 8, recurrent
calls and rows per call, and how far the wide search's answers are from the chunked ones (largest
root-value difference; share of roots with identical visit counts) — batching must not change
them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from zerokv.bench.configs import Budget, model_config
from zerokv.bench.report import table
from zerokv.bench.run import MatmulProbe
from zerokv.model.config import DTYPES, WorldModelConfig
from zerokv.model.world_model import WorldModel
from zerokv.search import Reanalyzer, SearchConfig

REFERENCE_CHUNK = 8
"""Roots per search in the reference's reanalysis (its env_num)."""


def make_histories(cfg: WorldModelConfig, roots: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``roots`` random positions with full histories: obs ``[N, H+1, *obs_shape]``, actions ``[N, H]``."""
    rng = np.random.default_rng(seed)
    h = cfg.root_history_steps
    obs = rng.random((roots, h + 1, *cfg.observation_shape), dtype=np.float32)
    return obs, rng.integers(cfg.action_space_size, size=(roots, h))


def check_roots(roots) -> int:
    """``roots`` if it is an int of at least the reference's chunk, else a ValueError saying so."""
    if isinstance(roots, bool) or not isinstance(roots, int) or roots < REFERENCE_CHUNK:
        raise ValueError(f"--reanalyze {roots!r}; must be an int >= {REFERENCE_CHUNK} (the reference's chunk)")
    return roots


def matmul_floor_seconds(cfg: WorldModelConfig, roots: int, roots_per_call: int, dtype: str) -> float:
    """Seconds the recurrent calls of reanalysing ``roots`` roots ``roots_per_call`` at a time need at
    the least: each call's matmul FLOPs (:func:`~zerokv.bench.run.recurrent_flops`) at this machine's
    ``dtype`` matmul rate at that many rows (:class:`~zerokv.bench.run.MatmulProbe`). The history
    pass and everything but the matmuls are left out, so a run can only be slower."""
    seconds, rates = 0.0, {}
    for start in range(0, roots, roots_per_call):
        rows = min(roots_per_call, roots - start)
        if rows not in rates:
            probe = MatmulProbe(dataclasses.replace(cfg, env_num=rows), dtype=DTYPES[dtype])
            rates[rows] = max(probe.sample() for _ in range(3)) * 1e9 / probe.flops  # calls per second
        seconds += cfg.num_simulations / rates[rows]
    return seconds


def run_reanalysis(
    configs: Mapping[str, WorldModelConfig], roots: int, budget: Budget, *, seed: int = 0,
    dtypes: Sequence[str] = ("float32", "bfloat16"),
) -> list[dict]:
    """One record per (config, dtype, roots per call): chunks of 8, then all ``roots`` at once.

    Every record is compared with the float32 model's chunks of 8 (the reference's way), which
    come first; a bfloat16 model is a copy of the float32 weights (see ``zerokv bench --precision``).
    """
    check_roots(roots)
    records = []
    for name, base in configs.items():
        cfg = model_config(base, "paged", budget)
        torch.manual_seed(seed)
        f32 = WorldModel(cfg).eval()
        search = SearchConfig(num_simulations=cfg.num_simulations)
        obs, actions = make_histories(cfg, roots, seed + 11)
        ref = None
        for dtype in dtypes:
            wm = f32 if dtype == cfg.dtype else f32.copy_with(dtype=dtype)
            for chunk in (REFERENCE_CHUNK, roots):
                reanalyzer = Reanalyzer(wm, search, roots_per_call=chunk)
                reanalyzer(obs[:chunk], actions[:chunk], rng=np.random.default_rng(seed), add_noise=False)  # warm-up
                t0 = time.perf_counter()
                out = reanalyzer(obs, actions, rng=np.random.default_rng(seed), add_noise=False)
                seconds = time.perf_counter() - t0
                ref = out if ref is None else ref
                records.append({
                    "config": name, "dtype": dtype, "roots": roots, "roots_per_call": chunk, "seconds": seconds,
                    "roots_per_s": roots / seconds, "model_calls": out.model_calls,
                    "rows_per_call": roots * cfg.num_simulations / out.model_calls,
                    "max_root_value_diff": float(np.abs(out.root_value - ref.root_value).max()),
                    "same_visits": float((out.visit_counts == ref.visit_counts).all(axis=1).mean()),
                    "policy_tv": float(0.5 * np.abs(out.search_policy - ref.search_policy).sum(1).mean()),
                    "matmul_floor_s": matmul_floor_seconds(cfg, roots, chunk, dtype),
                })
        base_rate = next(r["roots_per_s"] for r in records if r["config"] == name)
        base_seconds = next(r["seconds"] for r in records if r["config"] == name)
        for rec in records:
            if rec["config"] == name:
                rec["speedup"] = rec["roots_per_s"] / base_rate
                rec["vs_floor"] = rec["seconds"] / rec["matmul_floor_s"]
                rec["speedup_bound"] = base_seconds / rec["matmul_floor_s"]  # at the matmul floor
    return records


def render_reanalysis(records: list[dict]) -> str:
    header = ["config", "dtype", "roots/call", "roots/s", "×", "calls", "rows/call", "matmul floor s", "s / floor",
              "× at floor", "max |Δ root value|", "same visits", "policy TV"]
    rows = [[r["config"], r["dtype"], str(r["roots_per_call"]), f"{r['roots_per_s']:.1f}", f"{r['speedup']:.2f}×",
             str(r["model_calls"]), f"{r['rows_per_call']:.0f}", f"{r['matmul_floor_s']:.2f}",
             f"{r['vs_floor']:.2f}", f"{r['speedup_bound']:.1f}×", f"{r['max_root_value_diff']:.1e}",
             f"{100 * r['same_visits']:.0f}%", f"{r['policy_tv']:.3f}"] for r in records]
    n = records[0]["roots"] if records else 0
    return (f"Reanalysis of {n} replayed positions (paged backend, no root noise; × and differences against "
            f"float32 in chunks of {REFERENCE_CHUNK}, the reference's way; matmul floor: the recurrent calls' "
            f"matmul FLOPs at this machine's rate for that dtype and row count; × at floor: the speed-up "
            f"if this run reached its floor):\n" + table(header, rows))
