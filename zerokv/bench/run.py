"""The measurement: the same searches, with each backend, in one process.

For each config, every backend gets the same weights (``torch.manual_seed(seed)`` before the
model: backends create no parameters), the same observations and the same noise seed. After
untimed full-size warm-up searches, the timed searches look like real play: search 0 starts the
episodes, every later one passes the previous search's chosen actions as ``last_actions`` with a
new observation. The world model is wrapped (:class:`InstrumentedModel`) to time every call and,
when asked, record every output so each backend can be compared with the ``none`` reference.
"""

from __future__ import annotations

import gc
import math
import platform
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import psutil
import torch
from tqdm.auto import tqdm

from zerokv.bench.configs import REFERENCE, Budget, model_config
from zerokv.bench.machine import CpuWatch, cpu_name, peak_rss_mb
from zerokv.model.config import WorldModelConfig
from zerokv.model.world_model import WorldModel
from zerokv.search import SearchConfig, plan

_OUTPUTS = ("value", "reward", "policy_logits", "latent_state", "value_logits", "reward_logits")
_NETWORK_OUTPUTS = ("policy_logits", "latent_state", "value_logits", "reward_logits")
"""What the network computes; the scalars are E[support] through h⁻¹, which magnifies ~1e-7
logit rounding by ~300·h⁻¹' at support 601, so they are compared relatively instead."""


@dataclass(slots=True)
class Trace:
    """Everything one backend produced on the timed searches (compared with the reference's)."""

    roots: list[dict[str, np.ndarray]] = field(default_factory=list)
    """Per search: initial_inference outputs (value [B], policy_logits [B, A], latent [B, E])."""
    calls: list[dict[str, np.ndarray]] = field(default_factory=list)
    """Per recurrent call, in order: its input actions [B] and its outputs."""
    visit_counts: list[np.ndarray] = field(default_factory=list)
    """Per search: root visit counts [B, A]."""


@dataclass(slots=True)
class SearchSample:
    """Measurements of one timed search (seconds are wall time)."""

    seconds: float  # the whole plan() call: root inference + simulations + bookkeeping
    root_seconds: float  # inside initial_inference
    recurrent_seconds: float  # inside recurrent_inference, summed over its calls
    calls: int  # recurrent_inference calls (= simulations)
    cache_seconds: float  # CacheWork: lookup / assembly / keys / store in recurrent_inference
    forward_seconds: float  # CacheWork: transformer forward of the 2 new tokens + heads
    bytes_copied: int  # CacheWork, recurrent calls only (the root's store is left out)
    host_syncs: int  # CacheWork, recurrent calls only
    bookkeeping_seconds: float  # SearchOutput: tree work outside the model
    max_depth: int


def _arrays(out) -> dict[str, np.ndarray]:
    return {k: getattr(out, k).detach().cpu().numpy().copy() for k in _OUTPUTS if getattr(out, k) is not None}


class InstrumentedModel:
    """Stands in for the world model inside ``plan``: times every call and records outputs.

    Recording copies B·(E + A + 2) floats per call (a few µs); it is off when no diff is wanted.
    """

    def __init__(self, world_model: WorldModel, *, record: bool) -> None:
        self.wm, self.record, self.trace = world_model, record, Trace()
        self.start_search()

    def start_search(self) -> None:
        self.wm.work.reset()
        self.root_seconds = self.recurrent_seconds = 0.0
        self.calls = self.root_bytes = self.root_syncs = 0

    def initial_inference(self, obs, env_ids=None, last_actions=None):
        t0 = time.perf_counter()
        out = self.wm.initial_inference(obs, env_ids=env_ids, last_actions=last_actions)
        self.root_seconds += time.perf_counter() - t0
        self.root_bytes, self.root_syncs = self.wm.work.bytes_copied, self.wm.work.host_syncs
        if self.record:
            self.trace.roots.append(_arrays(out))
        return out

    def recurrent_inference(self, latent_state, action, env_ids=None, **node_ids):
        t0 = time.perf_counter()
        out = self.wm.recurrent_inference(latent_state, action, env_ids=env_ids, **node_ids)
        self.recurrent_seconds += time.perf_counter() - t0
        self.calls += 1
        if self.record:
            self.trace.calls.append({"action": np.array(action, copy=True), **_arrays(out)})
        return out

    def sample(self, seconds: float, search) -> SearchSample:
        work = self.wm.work
        return SearchSample(
            seconds=seconds, root_seconds=self.root_seconds,
            recurrent_seconds=self.recurrent_seconds, calls=self.calls,
            cache_seconds=work.cache_seconds, forward_seconds=work.forward_seconds,
            bytes_copied=work.bytes_copied - self.root_bytes,
            host_syncs=work.host_syncs - self.root_syncs,
            bookkeeping_seconds=search.bookkeeping_seconds, max_depth=search.max_depth,
        )


def make_observations(cfg: WorldModelConfig, count: int, seed: int) -> list[np.ndarray]:
    """``count`` fixed random observations [env_num, *observation_shape], the same for every backend."""
    rng = np.random.default_rng(seed)
    return [rng.random((cfg.env_num, *cfg.observation_shape), dtype=np.float32) for _ in range(count)]


def run_backend(
    cfg: WorldModelConfig, budget: Budget, observations: Sequence[np.ndarray], *, seed: int,
    record: bool, progress=None,
) -> tuple[list[SearchSample], dict, Trace, WorldModel]:
    """Warm up, then run the timed searches; returns samples, cache stats, trace and the model.

    ``observations`` holds ``budget.warmup`` warm-up observations, then ``budget.searches`` timed ones.
    """
    torch.manual_seed(seed)
    wm = WorldModel(cfg).eval()
    search_cfg = SearchConfig(num_simulations=cfg.num_simulations)
    warm_rng = np.random.default_rng(seed + 1)
    for obs in observations[: budget.warmup]:
        # Full-size: the pools reach the size a timed search needs before timing starts.
        plan(wm, obs, config=search_cfg, rng=warm_rng, add_noise=True, temperature=1.0)
        if progress is not None:
            progress.update()
    wm.reset_cache_stats()
    model = InstrumentedModel(wm, record=record)
    rng = np.random.default_rng(seed + 2)  # identical noise and action sampling per backend
    samples: list[SearchSample] = []
    last_actions = None  # search 0 starts the episodes
    gc.collect()
    for obs in observations[budget.warmup:]:
        model.start_search()
        t0 = time.perf_counter()
        out = plan(model, obs, config=search_cfg, rng=rng, last_actions=last_actions,
                   add_noise=True, temperature=1.0)
        samples.append(model.sample(time.perf_counter() - t0, out))
        if record:
            model.trace.visit_counts.append(out.visit_counts.copy())
        last_actions = out.action.tolist()
        if progress is not None:
            progress.update()
    return samples, wm.cache_stats(), model.trace, wm


def compare_traces(ref: Trace, other: Trace) -> tuple[dict[str, float], bool]:
    """(largest |difference| per output over every root and recurrent call, trees matched?).

    The trees match when every recurrent call saw the same actions and every search ended with
    the same visit counts; if they do not, later calls expanded different nodes and their
    differences compare different questions — the flag says so.
    """
    if len(ref.roots) != len(other.roots) or len(ref.calls) != len(other.calls):
        return dict.fromkeys(_OUTPUTS, math.inf), False
    worst, same_tree = dict.fromkeys(_OUTPUTS, 0.0), True
    for a, b in zip(ref.roots + ref.calls, other.roots + other.calls, strict=True):
        for k in _OUTPUTS:
            if k not in a:
                continue
            ref_k = a[k].astype(np.float64)
            diff = np.abs(ref_k - b[k].astype(np.float64))
            if k in ("value", "reward"):  # relative: see _NETWORK_OUTPUTS
                diff = diff / np.maximum(1.0, np.abs(ref_k))
            worst[k] = max(worst[k], float(diff.max()) if diff.size else 0.0)
        if "action" in a and not np.array_equal(a["action"], b["action"]):
            same_tree = False
    same_tree &= all(np.array_equal(x, y) for x, y in zip(ref.visit_counts, other.visit_counts, strict=True))
    return worst, same_tree


def summarise(name: str, cfg: WorldModelConfig, samples: list[SearchSample], stats: dict) -> dict:
    """One result record: medians over the timed searches (see ``zerokv.bench.report.METRICS``)."""
    sims, envs = cfg.num_simulations, cfg.env_num

    def med(f) -> float:
        return float(statistics.median(f(s) for s in samples))

    sims_per_s = med(lambda s: sims / s.seconds)
    forward_cache = [(s.cache_seconds, s.forward_seconds) for s in samples]
    return {
        "config": name,
        "backend": cfg.cache_backend,
        "searches_per_s": med(lambda s: 1.0 / s.seconds),
        "sims_per_s": sims_per_s,
        "expansions_per_s": envs * sims_per_s,
        "recurrent_ms": med(lambda s: 1e3 * s.recurrent_seconds / s.calls),
        "cache_share": float(statistics.median(c / (c + f) for c, f in forward_cache)),
        "bytes_copied_per_node": med(lambda s: s.bytes_copied / (envs * s.calls)),
        "bytes_stored_per_node": stats["nbytes"] / stats["size"] if stats["size"] else 0.0,
        "host_syncs_per_sim": med(lambda s: s.host_syncs / s.calls),
        "hit_rate": float(stats["hit_rate"]),
        "fallbacks": int(stats["fallbacks"]),
        "peak_rss_mb": peak_rss_mb(),
        "max_abs_diff_vs_none": math.nan,  # filled in by run_bench
        # ---- extras
        "floor_ms": med(lambda s: 1e3 * s.forward_seconds / s.calls),
        "cache_ms": med(lambda s: 1e3 * s.cache_seconds / s.calls),
        "root_ms": med(lambda s: 1e3 * s.root_seconds),
        "bookkeeping_share": med(lambda s: s.bookkeeping_seconds / s.seconds),
        "cache_mb": stats["nbytes"] / 2**20,
        "live_entries": int(stats["size"]),
        "evictions": int(stats["evictions"]),
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
        "max_depth": max(s.max_depth for s in samples),
        "max_rel_diff_scalars_vs_none": math.nan,  # value, reward: |a-b| / max(1, |b|)
        "diff_by_output": None,  # max diff vs none per output (scalars relative, the rest absolute)
        "trees_match_none": None,
        "env_num": envs,
        "num_simulations": sims,
        "per_search": [asdict(s) for s in samples],
    }


@dataclass(slots=True)
class BenchResult:
    """Every record (one per config and backend) and how they were made."""

    records: list[dict]
    meta: dict


def run_bench(
    configs: Mapping[str, WorldModelConfig], backends: Sequence[str], budget: Budget | None = None, *,
    seed: int = 0, diff: bool = True, threads: int | None = None, quick: bool = False,
    progress: bool = True,
) -> BenchResult:
    """Run every backend on every config; with ``diff`` the reference must be among them (it runs first)."""
    budget = Budget() if budget is None else budget
    backends = sorted(backends, key=lambda n: n != REFERENCE)  # others are compared with its trace
    watch = CpuWatch()
    if threads is not None:
        torch.set_num_threads(threads)
    if diff and REFERENCE not in backends:
        raise ValueError(f"diff=True needs the {REFERENCE!r} backend in backends={list(backends)}")
    notes = [
        "recurrent_ms: wall time of one batched world_model.recurrent_inference call, timed around the call",
        "floor_ms / cache_ms: CacheWork.forward_seconds / cache_seconds per call; cache_share = cache / (cache + forward)",
        "bytes_copied_per_node, host_syncs_per_sim: recurrent calls only (roots left out)",
        "evictions: pool slots of earlier searches reused by later ones; a 100% hit rate with 0 "
        "fallbacks shows no entry a search still needed was evicted",
        "peak_rss_mb: the process high-water mark after that backend; it never falls, so it grows "
        f"with run order ({', '.join(backends)})",
    ]
    if not diff:
        notes.append("max_abs_diff_vs_none: NaN (null in JSON): run with the diff turned off")
    total = len(configs) * len(backends) * (budget.warmup + budget.searches)
    bar = tqdm(total=total, disable=not progress, unit="search", file=sys.stderr, leave=False)
    records = []
    with bar:
        for name, base in configs.items():
            ref_trace = None
            for backend in backends:
                cfg = model_config(base, backend, budget)
                bar.set_description(f"{name}/{backend}")
                obs = make_observations(cfg, budget.warmup + budget.searches, seed)
                backend_watch = CpuWatch()
                samples, stats, trace, wm = run_backend(
                    cfg, budget, obs, seed=seed, record=diff, progress=bar
                )
                rec = summarise(name, cfg, samples, stats)
                rec["other_processes_cpu_share"] = backend_watch.others_share()
                if backend == REFERENCE:
                    ref_trace = trace
                if diff and ref_trace is not None:
                    by_output, rec["trees_match_none"] = compare_traces(ref_trace, trace)
                    rec["diff_by_output"] = by_output
                    rec["max_abs_diff_vs_none"] = max(by_output[k] for k in _NETWORK_OUTPUTS)
                    rec["max_rel_diff_scalars_vs_none"] = max(by_output["value"], by_output["reward"])
                records.append(rec)
                del wm, trace
                gc.collect()
    meta = {
        "quick": quick, "searches": budget.searches, "warmup": budget.warmup,
        "simulations": budget.simulations, "seed": seed, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "cpu": cpu_name(), "cores": psutil.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "notes": notes,
        "other_processes_cpu_share": watch.others_share(),
    }
    return BenchResult(records, meta)
