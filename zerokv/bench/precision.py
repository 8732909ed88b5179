"""``zerokv bench --precision``: what a bfloat16 search model buys and what it changes.

For each config, a float32 model (`paged` backend) and a bfloat16 copy of the same weights
(:meth:`~zerokv.WorldModel.load_weights_from`) search the same fixed positions (fresh roots, the
same root noise per position), interleaved position by position — the order alternating — so a
shared machine's drift hits both alike. Reported per model:

* speed: searches/s and the speedup over float32; the mean recurrent call (ms), also as a multiple
  of the FLOP floor at this machine's float32 *and* bfloat16 matmul rates (:class:`MatmulProbe` at
  env_num rows in each dtype, sampled between positions);
* output difference: every root and recurrent call of each search is replayed on a float32
  ``none`` model (no cache: the exact reference) with the same weights — the same roots and action
  paths, so the same nodes — and the largest |difference| per network output is kept (policy,
  value and reward logits, latent) and, relatively (|a−b| / max(1, |b|)), per scalar (value,
  reward). The float32 search's figures are the exactness floor (~1e-6);
* search policy: KL(float32 ‖ model), total variation and top-action agreement of the visit
  counts on the same positions (:func:`~zerokv.bench.multileaf.policy_distance`), and the same
  for the float32 search under another root-noise draw, the scale of the search's own variation.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from zerokv.bench.configs import REFERENCE, Budget, model_config
from zerokv.bench.multileaf import policy_distance
from zerokv.bench.recording import NETWORK_OUTPUTS, RecordingModel, compare_traces, replay
from zerokv.bench.report import table
from zerokv.bench.run import MatmulProbe, make_observations, recurrent_flops, rotated
from zerokv.model.config import WorldModelConfig
from zerokv.model.world_model import WorldModel
from zerokv.search import SearchConfig, plan

DTYPES = ("float32", "bfloat16")
"""The models compared, in their first search's order (float32 is the baseline)."""
OTHER_NOISE = "float32, other noise"
"""Label of the float32 search under another root-noise draw (the policy-change scale)."""


@dataclass(slots=True)
class ModelRun:
    """One dtype's model on one config: its samples, visit counts and worst differences."""

    label: str
    model: RecordingModel  # records each search's calls (one search per trace)
    seconds: list[float] = field(default_factory=list)  # per timed search
    call_ms: list[float] = field(default_factory=list)  # per timed search: mean recurrent call
    visits: list[np.ndarray] = field(default_factory=list)  # per timed search [B, A]
    worst: dict[str, float] = field(default_factory=dict)  # max |diff| vs the reference per output
    rel: dict[str, float] = field(default_factory=dict)  # max relative diff per scalar

    def search(self, obs: np.ndarray, search: SearchConfig, noise_seed: int) -> np.ndarray:
        """A fixed position from a fresh root; returns its visit counts [B, A]."""
        self.model.wm.clear_caches()
        self.model.start_search(new_trace=True)
        return plan(self.model, obs, config=search, rng=np.random.default_rng(noise_seed), add_noise=True,
                    temperature=1.0).visit_counts

    def timed_search(self, obs: np.ndarray, search: SearchConfig, noise_seed: int) -> None:
        t0 = time.perf_counter()
        self.visits.append(self.search(obs, search, noise_seed))
        self.seconds.append(time.perf_counter() - t0)
        self.call_ms.append(1e3 * self.model.recurrent_seconds / max(1, self.model.calls))

    def compare(self, reference: WorldModel) -> None:
        """Fold the last search's differences from ``reference`` into ``worst`` and ``rel``."""
        diff = compare_traces(replay(reference, self.model.trace), self.model.trace)
        for k, v in diff.abs_by_output.items():
            self.worst[k] = max(self.worst.get(k, 0.0), v)
        for k, v in diff.rel_by_scalar.items():
            self.rel[k] = max(self.rel.get(k, 0.0), v)


def warm_up(runs: Sequence[ModelRun], cfg: WorldModelConfig, budget: Budget,
            seed: int) -> tuple[SearchConfig, list[np.ndarray], int]:
    """The fixed positions every model searches: warms each run up on the first
    ``budget.warmup`` and returns (the search config, the timed positions, their first noise seed;
    timed position i uses noise seed + i)."""
    search = SearchConfig(num_simulations=cfg.num_simulations)
    positions = make_observations(cfg, budget.warmup + budget.searches, seed + 7)
    warm, timed = positions[: budget.warmup], positions[budget.warmup:]
    noise_seed = seed + 1000
    for run in runs:
        for i, obs in enumerate(warm):
            run.search(obs, search, noise_seed + 10_000 + i)
    return search, list(timed), noise_seed


def run_precision_config(name: str, base: WorldModelConfig, budget: Budget, *, seed: int = 0) -> list[dict]:
    """Float32 vs bfloat16 search on one config: one record per model and one for the noise scale."""
    cfg = model_config(base, "paged", budget)
    torch.manual_seed(seed)  # the bench's weights
    fp32 = WorldModel(cfg).eval()
    bf16, reference = fp32.copy_with(dtype="bfloat16"), fp32.copy_with(cache_backend=REFERENCE)
    runs = [ModelRun("float32", RecordingModel(fp32, record=True)),
            ModelRun("bfloat16", RecordingModel(bf16, record=True))]
    search, timed, noise_seed = warm_up(runs, cfg, budget, seed)
    probes = {"float32": MatmulProbe(cfg), "bfloat16": MatmulProbe(cfg, dtype=torch.bfloat16)}
    for i, obs in enumerate(timed):
        gc.collect()  # outside the timed searches
        for probe in probes.values():
            probe.sample()
        for run in rotated(runs, i):
            run.timed_search(obs, search, noise_seed + i)
            run.compare(reference)  # untimed
    for probe in probes.values():
        probe.sample()
    other = ModelRun(OTHER_NOISE, RecordingModel(fp32, record=False))
    for i, obs in enumerate(timed):
        other.visits.append(other.search(obs, search, seed + 5000 + i))
    flops = recurrent_flops(cfg)["total"]
    rates = {d: float(statistics.median(p.rates)) for d, p in probes.items()}
    floors = {d: 1e3 * flops / (r * 1e9) for d, r in rates.items()}
    baseline = np.concatenate(runs[0].visits)
    base_speed = statistics.median(1.0 / s for s in runs[0].seconds)
    records = []
    for run in [*runs, other]:
        rec = {"config": name, "label": run.label, "positions": int(baseline.shape[0]),
               "env_num": cfg.env_num, "num_simulations": cfg.num_simulations,
               **{f"{d}_matmul_gflops": rates[d] for d in DTYPES},
               **{f"{d}_floor_ms": floors[d] for d in DTYPES},
               **policy_distance(baseline, np.concatenate(run.visits))}
        rec.update(_speed(run, base_speed, floors) if run.seconds else _speed_unmeasured())
        rec.update(_accuracy(run) if run.worst else _accuracy_unmeasured())
        records.append(rec)
    del runs, other, fp32, bf16, reference
    gc.collect()
    return records


def _speed(run: ModelRun, base_speed: float, floors: dict[str, float]) -> dict:
    speed = float(statistics.median(1.0 / s for s in run.seconds))
    call = float(statistics.median(run.call_ms))
    return {"searches_per_s": speed, "speedup": speed / base_speed, "recurrent_ms": call,
            **{f"vs_{d}_floor": call / floors[d] for d in DTYPES}}


def _speed_unmeasured() -> dict:
    return dict.fromkeys(("searches_per_s", "speedup", "recurrent_ms", *(f"vs_{d}_floor" for d in DTYPES)),
                         math.nan)


def _accuracy(run: ModelRun) -> dict:
    return {"diff_by_output": dict(run.worst), "rel_diff_by_output": dict(run.rel),
            "max_abs_diff_vs_none": max(run.worst[k] for k in NETWORK_OUTPUTS),
            "max_rel_diff_scalars_vs_none": max(run.rel.values())}


def _accuracy_unmeasured() -> dict:
    return {"diff_by_output": None, "rel_diff_by_output": None, "max_abs_diff_vs_none": math.nan,
            "max_rel_diff_scalars_vs_none": math.nan}


def run_precision(configs: Mapping[str, WorldModelConfig], budget: Budget, *, seed: int = 0) -> list[dict]:
    """Records of every config: float32, bfloat16, and float32 under other noise (in that order)."""
    records = []
    for name, base in configs.items():
        records += run_precision_config(name, base, budget, seed=seed)
    return records


def _num(value: float, spec: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def render_precision(records: Sequence[dict]) -> str:
    """Two tables (speed; difference from float32) and the notes needed to read them."""
    speed = [[r["config"], r["label"], _num(r["searches_per_s"], ".2f"), _num(r["speedup"], ".2f") + "×",
              _num(r["recurrent_ms"], ".2f"), _num(r["vs_float32_floor"], ".2f") + "×",
              _num(r["vs_bfloat16_floor"], ".2f") + "×"] for r in records if r["label"] != OTHER_NOISE]
    diffs = []
    for r in records:
        d = r["diff_by_output"] or {}
        logits = max(d.get("value_logits", math.nan), d.get("reward_logits", math.nan)) if d else math.nan
        rel = r["rel_diff_by_output"] or {}
        diffs.append([r["config"], r["label"], _num(d.get("policy_logits", math.nan), ".1e"), _num(logits, ".1e"),
                      _num(d.get("latent_state", math.nan), ".1e"), _num(rel.get("value", math.nan), ".1e"),
                      f"{r['kl']:.4f}", f"{r['tv']:.3f}", f"{100 * r['top_action_agrees']:.0f}%"])
    first = records[0] if records else {}
    rates = "; ".join(
        f"{r['config']}: matmul {r['float32_matmul_gflops']:.1f} (float32) / {r['bfloat16_matmul_gflops']:.1f} "
        f"(bfloat16) GFLOP/s at {r['env_num']} rows → floor {r['float32_floor_ms']:.2f} / "
        f"{r['bfloat16_floor_ms']:.2f} ms" for r in records if r["label"] == "float32")
    return (
        f"Precision: bfloat16 search model vs float32 (paged backend, {first.get('positions', 0)} fixed positions "
        "per config = searches × envs, the same weights and root noise; medians over searches)\n"
        + table(["config", "model", "searches/s", "×", "recurrent ms", "/ fp32 floor", "/ bf16 floor"], speed)
        + "\n\n"
        + table(["config", "model", "max|Δ| policy", "value/reward logits", "latent", "rel Δ value",
                  "KL(fp32‖·)", "TV", "top action ="], diffs)
        + f"\nnote: {rates}"
        + "\nnote: max|Δ| over every root and recurrent call, against a float32 'none' model (no cache) with the "
        "same weights expanding the same nodes; rel Δ value = |a−b| / max(1, |b|); KL over visit counts "
        "smoothed as in --multi-leaf; 'float32, other noise' is the float32 search under another root-noise "
        "draw: the search's own variation"
    )
