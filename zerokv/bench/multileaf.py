"""``zerokv bench --multi-leaf K,...``: what expanding K leaves per env per call buys and costs.

For each config, the `paged` backend searches the same fixed positions (fresh roots, the same
weights and the same root noise per position) once per leaves-per-call value, the standard
one-leaf search first. Reported per K: searches/s, recurrent calls per search, rows per call, and
how far the search policy moved from the one-leaf search's on the same positions: mean
KL(one-leaf ‖ K-leaf) of the visit distributions, mean total variation, and how often the most
visited action agrees. The same figures for the one-leaf search under a *different* root-noise
draw (`noise`) give the scale: a change smaller than that is below the search's own noise.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from zerokv.bench.configs import Budget, model_config
from zerokv.bench.report import table
from zerokv.bench.run import make_observations
from zerokv.model.config import WorldModelConfig
from zerokv.model.world_model import WorldModel
from zerokv.search import SearchConfig, plan

SMOOTHING = 0.5
"""Visit counts are smoothed by this many pseudo-visits per legal action before the KL, so an
action one search never tried does not make the divergence infinite."""


def parse_leaves(text: str) -> list[int]:
    """"4,8" → [4, 8]; each an int >= 2 (1 is the baseline, always run)."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) < 2:
            raise ValueError(f"--multi-leaf value {part!r}; each must be an int >= 2 (1, the baseline, always runs)")
        values.append(int(part))
    if not values:
        raise ValueError(f"--multi-leaf {text!r} selects nothing; give e.g. 4,8")
    return sorted(set(values))


def policy_distance(base: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Mean KL(base ‖ other) (smoothed), total variation and top-action agreement of visit
    counts ``[P, A]`` searched on the same P positions."""
    p = (base + SMOOTHING) / (base + SMOOTHING).sum(axis=1, keepdims=True)
    q = (other + SMOOTHING) / (other + SMOOTHING).sum(axis=1, keepdims=True)
    kl = (p * np.log(p / q)).sum(axis=1)
    tv = 0.5 * np.abs(base / base.sum(1, keepdims=True) - other / other.sum(1, keepdims=True)).sum(axis=1)
    return {"kl": float(kl.mean()), "tv": float(tv.mean()),
            "top_action_agrees": float((base.argmax(1) == other.argmax(1)).mean())}


def _search_all(wm: WorldModel, positions, search: SearchConfig, noise_seed: int):
    """Search every position from a fresh root; returns (visit counts [P, A], seconds, calls, rows)."""
    visits, seconds, calls, rows = [], [], [], []
    for i, obs in enumerate(positions):
        wm.clear_caches()  # a fixed position: no history, the same for every K
        t0 = time.perf_counter()
        out = plan(wm, obs, config=search, rng=np.random.default_rng(noise_seed + i), add_noise=True,
                   temperature=1.0)
        seconds.append(time.perf_counter() - t0)
        visits.append(out.visit_counts)
        calls.append(out.model_calls)
        rows.append(wm.config.env_num * search.num_simulations / out.model_calls)
    return np.concatenate(visits), seconds, calls, rows


def run_multi_leaf(
    configs: Mapping[str, WorldModelConfig], leaves: Sequence[int], budget: Budget, *, seed: int = 0,
) -> list[dict]:
    """One record per (config, K) including K = 1 and the one-leaf ``noise`` reference."""
    records = []
    for name, base in configs.items():
        cfg = model_config(base, "paged", budget)
        torch.manual_seed(seed)
        wm = WorldModel(cfg).eval()
        positions = make_observations(cfg, budget.warmup + budget.searches, seed + 7)
        warm, timed = positions[: budget.warmup], positions[budget.warmup:]
        baseline = None
        runs = [(k, seed + 1000, str(k)) for k in (1, *leaves)] + [(1, seed + 5000, "1, other noise")]
        for k, noise_seed, label in runs:
            search = SearchConfig(num_simulations=cfg.num_simulations, leaves_per_call=k)
            _search_all(wm, warm, search, noise_seed + 10_000)
            visits, seconds, calls, rows = _search_all(wm, timed, search, noise_seed)
            if baseline is None:
                baseline = visits
            rec = {
                "config": name, "leaves_per_call": k, "label": label,
                "searches_per_s": float(statistics.median(1.0 / s for s in seconds)),
                "calls_per_search": float(statistics.mean(calls)),
                "rows_per_call": float(statistics.mean(rows)),
                "positions": int(visits.shape[0]),
                **policy_distance(baseline, visits),
            }
            records.append(rec)
        for rec in records:
            if rec["config"] == name:
                rec["speedup"] = rec["searches_per_s"] / records[-len(runs)]["searches_per_s"]
    return records


def render_multi_leaf(records: list[dict]) -> str:
    header = ["config", "leaves/call", "searches/s", "×", "calls/search", "rows/call", "KL(1‖K)", "TV",
              "top action ="]
    rows = [[r["config"], r["label"], f"{r['searches_per_s']:.2f}", f"{r['speedup']:.2f}×",
             f"{r['calls_per_search']:.1f}", f"{r['rows_per_call']:.1f}", f"{r['kl']:.4f}", f"{r['tv']:.3f}",
             f"{100 * r['top_action_agrees']:.0f}%"] for r in records]
    n = records[0]["positions"] if records else 0
    return (f"Multi-leaf search (paged backend, {n} fixed positions per config = searches × envs; "
            "distances to the one-leaf search with the same root noise):\n" + table(header, rows)
            + f"\nnote: KL over visit counts smoothed by {SMOOTHING} per action; '1, other noise' is the "
            "one-leaf search under another root-noise draw: the search's own variation")

