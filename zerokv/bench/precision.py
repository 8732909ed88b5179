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
from zerokv.bench.report import _table
from zerokv.bench.run import (
    NETWORK_OUTPUTS,
    MatmulProbe,
    Trace,
    _arrays,
    compare_traces,
    make_observations,
    recurrent_flops,
    rotated,
)
from zerokv.model.config import WorldModelConfig
from zerokv.model.world_model import WorldModel
from zerokv.search import SearchConfig, plan

DTYPES = ("float32", "bfloat16")
"""The models compared, in their first search's order (float32 is the baseline)."""
OTHER_NOISE = "float32, other noise"
"""Label of the float32 search under another root-noise draw (the policy-change scale)."""


@dataclass(slots=True)
class _Call:
    """One recurrent call of a recorded search: its inputs and the model's outputs."""

    env_ids: list[int]  # [R] env of each row
    action: np.ndarray  # [R]
    parent_ids: np.ndarray  # [R] node ids in the search's numbering (root = 0)
    child_ids: np.ndarray  # [R]
    out: dict[str, np.ndarray]  # float32 outputs (see zerokv.bench.run._arrays)


@dataclass(slots=True)
class _Recorder:
    """Stands in for the world model inside ``plan``: records every call and times the recurrent ones."""

    wm: WorldModel
    obs: np.ndarray | None = None  # the root observations of the current search [B, *obs_shape]
    root: dict[str, np.ndarray] = field(default_factory=dict)
    calls: list[_Call] = field(default_factory=list)
    recurrent_seconds: float = 0.0

    def start_search(self) -> None:
        self.obs, self.root, self.calls, self.recurrent_seconds = None, {}, [], 0.0

    def initial_inference(self, obs, env_ids=None, last_actions=None):
        out = self.wm.initial_inference(obs, env_ids=env_ids, last_actions=last_actions)
        self.obs, self.root = np.array(obs, copy=True), _arrays(out)
        return out

    def recurrent_inference(self, latent_state, action, env_ids=None, *, parent_ids=None, child_ids=None):
        t0 = time.perf_counter()
        out = self.wm.recurrent_inference(latent_state, action, env_ids=env_ids, parent_ids=parent_ids,
                                          child_ids=child_ids)
        self.recurrent_seconds += time.perf_counter() - t0
        envs = list(range(latent_state.shape[0])) if env_ids is None else [int(e) for e in env_ids]
        self.calls.append(_Call(envs, np.array(action, copy=True), np.array(parent_ids, copy=True),
                                np.array(child_ids, copy=True), _arrays(out)))
        return out


def replay(reference: WorldModel, recorder: _Recorder) -> tuple[Trace, Trace]:
    """The recorded search's calls rerun on ``reference``: (reference trace, recorded trace).

    The reference expands the same nodes (same roots, same actions from the same parents) from its
    own latents, kept per (env, node id): a content-keyed backend finds each parent by them.
    """
    reference.clear_caches()  # a fresh root, as the recorded search had
    root = reference.initial_inference(recorder.obs)
    b, sims = recorder.obs.shape[0], reference.config.num_simulations
    latents = root.latent_state.new_zeros(b, sims + 1, root.latent_state.shape[1])  # [env, node, E]
    latents[:, 0] = root.latent_state
    ref, rec = Trace(roots=[_arrays(root)]), Trace(roots=[recorder.root])
    for call in recorder.calls:
        envs = torch.as_tensor(call.env_ids)
        parents, children = torch.as_tensor(call.parent_ids), torch.as_tensor(call.child_ids)
        out = reference.recurrent_inference(latents[envs, parents], call.action, env_ids=call.env_ids,
                                            parent_ids=call.parent_ids, child_ids=call.child_ids)
        latents[envs, children] = out.latent_state
        ref.calls.append({"action": call.action, **_arrays(out)})
        rec.calls.append({"action": call.action, **call.out})
    return ref, rec


@dataclass(slots=True)
class _ModelRun:
    """One dtype's model on one config: its samples, visit counts and worst differences."""

    label: str
    recorder: _Recorder
    seconds: list[float] = field(default_factory=list)  # per timed search
    call_ms: list[float] = field(default_factory=list)  # per timed search: mean recurrent call
    visits: list[np.ndarray] = field(default_factory=list)  # per timed search [B, A]
    worst: dict[str, float] = field(default_factory=dict)  # max |diff| vs the reference per output
    rel: dict[str, float] = field(default_factory=dict)  # max relative diff per scalar

    def search(self, obs: np.ndarray, search: SearchConfig, noise_seed: int) -> np.ndarray:
        """A fixed position from a fresh root; returns its visit counts [B, A]."""
        self.recorder.wm.clear_caches()
        self.recorder.start_search()
        return plan(self.recorder, obs, config=search, rng=np.random.default_rng(noise_seed), add_noise=True,
                    temperature=1.0).visit_counts

    def timed_search(self, obs: np.ndarray, search: SearchConfig, noise_seed: int) -> None:
        t0 = time.perf_counter()
        self.visits.append(self.search(obs, search, noise_seed))
        self.seconds.append(time.perf_counter() - t0)
        self.call_ms.append(1e3 * self.recorder.recurrent_seconds / max(1, len(self.recorder.calls)))

    def compare(self, reference: WorldModel) -> None:
        """Fold the last search's differences from ``reference`` into ``worst`` and ``rel``."""
        worst, rel, _ = compare_traces(*replay(reference, self.recorder))
        for k, v in worst.items():
            self.worst[k] = max(self.worst.get(k, 0.0), v)
        for k, v in rel.items():
            self.rel[k] = max(self.rel.get(k, 0.0), v)


def run_precision_config(name: str, base: WorldModelConfig, budget: Budget, *, seed: int = 0) -> list[dict]:
    """Float32 vs bfloat16 search on one config: one record per model and one for the noise scale."""
    cfg = model_config(base, "paged", budget)
    torch.manual_seed(seed)  # the bench's weights
    fp32 = WorldModel(cfg).eval()
    bf16, reference = fp32.copy_with(dtype="bfloat16"), fp32.copy_with(cache_backend=REFERENCE)
    runs = [_ModelRun("float32", _Recorder(fp32)), _ModelRun("bfloat16", _Recorder(bf16))]
    search = SearchConfig(num_simulations=cfg.num_simulations)
    positions = make_observations(cfg, budget.warmup + budget.searches, seed + 7)
    warm, timed = positions[: budget.warmup], positions[budget.warmup:]
    noise_seed = seed + 1000
    for run in runs:
        for i, obs in enumerate(warm):
            run.search(obs, search, noise_seed + 10_000 + i)
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
    other = _ModelRun(OTHER_NOISE, _Recorder(fp32))
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


def _speed(run: _ModelRun, base_speed: float, floors: dict[str, float]) -> dict:
    speed = float(statistics.median(1.0 / s for s in run.seconds))
    call = float(statistics.median(run.call_ms))
    return {"searches_per_s": speed, "speedup": speed / base_speed, "recurrent_ms": call,
            **{f"vs_{d}_floor": call / floors[d] for d in DTYPES}}


def _speed_unmeasured() -> dict:
    return dict.fromkeys(("searches_per_s", "speedup", "recurrent_ms", *(f"vs_{d}_floor" for d in DTYPES)),
                         math.nan)


def _accuracy(run: _ModelRun) -> dict:
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
        + _table(["config", "model", "searches/s", "×", "recurrent ms", "/ fp32 floor", "/ bf16 floor"], speed)
        + "\n\n"
        + _table(["config", "model", "max|Δ| policy", "value/reward logits", "latent", "rel Δ value",
                  "KL(fp32‖·)", "TV", "top action ="], diffs)
        + f"\nnote: {rates}"
        + "\nnote: max|Δ| over every root and recurrent call, against a float32 'none' model (no cache) with the "
        "same weights expanding the same nodes; rel Δ value = |a−b| / max(1, |b|); KL over visit counts "
        "smoothed as in --multi-leaf; 'float32, other noise' is the float32 search under another root-noise "
        "draw: the search's own variation"
    )
