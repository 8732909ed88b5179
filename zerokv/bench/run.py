"""The measurement: the same searches, with each backend, interleaved in one process.

For each config, every backend's world model is built up front with the same weights
(``torch.manual_seed(seed)`` before each model: backends create no parameters), and gets the same
observations and its own copy of the same noise rng. Each model is warmed up with untimed
full-size searches; then the timed searches run *interleaved*: for each search index every
backend runs its search in turn, the order rotating by one per index, so slow drift of a shared
machine hits all backends alike (medians are over the searches). The timed searches look like real
play: search 0 starts the episodes, every later one passes that backend's previous chosen actions
as ``last_actions`` with a new observation. The world model is wrapped
(:class:`~zerokv.bench.recording.RecordingModel`) to time every call and, when asked, record every
output so each backend can be compared with the ``none`` reference. Between search indices the machine's float32 matmul rate is sampled at the
recurrent call's row count (:class:`MatmulProbe`) for the FLOP floor (:func:`recurrent_flops`).
"""

from __future__ import annotations

import gc
import math
import platform
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import psutil
import torch
from tqdm.auto import tqdm

from zerokv.bench.configs import REFERENCE, Budget, model_config
from zerokv.bench.machine import CpuWatch, cpu_name, peak_rss_mb
from zerokv.bench.prefill import Prefill
from zerokv.bench.recording import RecordingModel, compare_traces
from zerokv.model.config import WorldModelConfig
from zerokv.model.context_cache import CacheReport
from zerokv.model.linear import linear
from zerokv.model.world_model import WorldModel
from zerokv.search import SearchConfig, plan


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
    position: int  # where this backend ran in its search index's rotated order (0 = first)


def sample_of(model: RecordingModel, seconds: float, search, position: int) -> SearchSample:
    """The measurements of the search ``model`` has just run (``search``: its ``SearchOutput``)."""
    work = model.wm.work
    return SearchSample(
        seconds=seconds, root_seconds=model.root_seconds, recurrent_seconds=model.recurrent_seconds,
        calls=model.calls, cache_seconds=work.cache_seconds, forward_seconds=work.forward_seconds,
        bytes_copied=work.bytes_copied - model.root_bytes, host_syncs=work.host_syncs - model.root_syncs,
        bookkeeping_seconds=search.bookkeeping_seconds, max_depth=search.max_depth, position=position,
    )


def make_observations(cfg: WorldModelConfig, count: int, seed: int) -> list[np.ndarray]:
    """``count`` fixed random observations [env_num, *observation_shape], the same for every backend."""
    rng = np.random.default_rng(seed)
    return [rng.random((cfg.env_num, *cfg.observation_shape), dtype=np.float32) for _ in range(count)]


class BackendRun:
    """One backend's model, search state and samples for one config (driven search by search)."""

    def __init__(self, cfg: WorldModelConfig, *, seed: int, record: bool) -> None:
        torch.manual_seed(seed)  # the same weights for every backend
        self.cfg, self.wm = cfg, WorldModel(cfg).eval()
        self.search_cfg = SearchConfig(num_simulations=cfg.num_simulations)
        self.warm_rng = np.random.default_rng(seed + 1)
        self.rng = np.random.default_rng(seed + 2)  # identical noise and action sampling per backend
        self.model = RecordingModel(self.wm, record=record)
        self.samples: list[SearchSample] = []
        self.last_actions: list[int] | None = None  # the first timed search starts the episodes

    @property
    def backend(self) -> str:
        return self.cfg.cache_backend

    def warm_up(self, obs: np.ndarray) -> None:
        """An untimed full-size search: the pools reach the size a timed search needs."""
        plan(self.wm, obs, config=self.search_cfg, rng=self.warm_rng, add_noise=True, temperature=1.0)

    def prefill(self, history: Prefill) -> None:
        """Give every env a real past of ``history``'s steps (its roots rebuilt from them) that the
        timed searches extend: each env's context is full from the first timed search on."""
        self.wm.initial_inference_from_history(history.observations, history.actions)
        self.last_actions = history.next_actions.tolist()

    def start_timing(self) -> None:
        self.wm.reset_cache_stats()

    def search(self, obs: np.ndarray, position: int) -> None:
        model = self.model
        model.start_search()
        t0 = time.perf_counter()
        out = plan(model, obs, config=self.search_cfg, rng=self.rng, last_actions=self.last_actions,
                   add_noise=True, temperature=1.0)
        self.samples.append(sample_of(model, time.perf_counter() - t0, out, position))
        if model.record:
            model.trace.visit_counts.append(out.visit_counts.copy())
        self.last_actions = out.action.tolist()


# ----------------------------------------------------------------------------- FLOP floor
def _linear_shapes(cfg: WorldModelConfig) -> list[tuple[str, int, int]]:
    """(weight name, in, out) of every matmul of one recurrent call, in call order.

    Pass 1 (action token): every block, then the reward head and the latent head; pass 2 (the
    predicted latent's token): every block again (the same weights), then the value and policy heads.
    """
    e, r, bins, a = cfg.embed_dim, cfg.mlp_ratio, cfg.support_bins, cfg.action_space_size
    blocks = []
    for layer in range(cfg.num_layers):
        blocks += [(f"qkv{layer}", e, 3 * e), (f"proj{layer}", e, e), (f"fc1_{layer}", e, r * e),
                   (f"fc2_{layer}", r * e, e)]
    heads1 = [("reward0", e, e), ("reward1", e, bins), ("latent0", e, e), ("latent1", e, e)]
    heads2 = [("value0", e, e), ("value1", e, bins), ("policy0", e, e), ("policy1", e, a)]
    return blocks + heads1 + blocks + heads2


def recurrent_flops(cfg: WorldModelConfig) -> dict[str, int]:
    """FLOPs (multiply-add = 2) of one batched recurrent call on its new tokens, B = env_num rows.

    Per row: 2 tokens × num_layers × [qkv 3E² + proj E² + MLP 2·mlp_ratio·E²], attention of each
    new token on ≤ context_length keys (QKᵀ and AV: 2·E·context_length per token and layer), and
    only the heads each token needs — action token: reward (E² + E·bins) and latent (2E²);
    observation token: value (E² + E·bins) and policy (E² + E·A).
    """
    b = cfg.env_num
    matmul = 2 * b * sum(i * o for _, i, o in _linear_shapes(cfg))
    attention = 2 * b * 2 * cfg.num_layers * 2 * cfg.embed_dim * cfg.context_length
    return {"matmul": matmul, "attention": attention, "total": matmul + attention}


class MatmulProbe:
    """This machine's rate on one recurrent call's matmuls (B = env_num rows), in ``dtype`` (float32:
    the main bench's FLOP floor; bfloat16: ``--precision``'s second floor).

    The matmuls run through the world model's own inference matmul (:func:`zerokv.model.linear.linear`,
    oneDNN on CPU), so the floor drops with any faster kernel the model adopts.
    """

    def __init__(
        self, cfg: WorldModelConfig, *, calls: int = 4, repeats: int = 3, dtype: torch.dtype = torch.float32
    ) -> None:
        gen = torch.Generator().manual_seed(1234)  # the global RNG (model weights) is left alone
        self.shapes = _linear_shapes(cfg)
        self.weights = {
            name: ((torch.randn(o, i, generator=gen) / math.sqrt(i)).to(dtype), torch.zeros(o, dtype=dtype))
            for name, i, o in self.shapes
        }
        self.inputs = {i: torch.randn(cfg.env_num, i, generator=gen).to(dtype) for _, i, _ in self.shapes}
        self.flops = recurrent_flops(cfg)["matmul"]
        self.calls, self.repeats = calls, repeats
        self.rates: list[float] = []  # GFLOP/s, one per sample()
        self._one_call()  # warm

    @torch.no_grad()
    def _one_call(self) -> None:
        for name, i, _ in self.shapes:
            w, bias = self.weights[name]
            linear(self.inputs[i], w, bias)

    def sample(self) -> float:
        """Best of ``repeats`` timings of ``calls`` calls' worth of matmuls → GFLOP/s (recorded)."""
        best = math.inf
        for _ in range(self.repeats):
            t0 = time.perf_counter()
            for _ in range(self.calls):
                self._one_call()
            best = min(best, (time.perf_counter() - t0) / self.calls)
        self.rates.append(self.flops / best / 1e9)
        return self.rates[-1]


def summarise(name: str, cfg: WorldModelConfig, samples: list[SearchSample], stats: CacheReport,
              flop_floor_ms: float) -> dict:
    """One result record: medians over the timed searches (see ``zerokv.bench.report.METRICS``)."""
    sims, envs = cfg.num_simulations, cfg.env_num

    def med(f) -> float:
        return float(statistics.median(f(s) for s in samples))

    sims_per_s = med(lambda s: sims / s.seconds)
    recurrent_ms = med(lambda s: 1e3 * s.recurrent_seconds / s.calls)
    forward_cache = [(s.cache_seconds, s.forward_seconds) for s in samples]
    return {
        "config": name,
        "backend": cfg.cache_backend,
        "searches_per_s": med(lambda s: 1.0 / s.seconds),
        "sims_per_s": sims_per_s,
        "expansions_per_s": envs * sims_per_s,
        "recurrent_ms": recurrent_ms,
        "cache_share": float(statistics.median(c / (c + f) for c, f in forward_cache)),
        "bytes_copied_per_node": med(lambda s: s.bytes_copied / (envs * s.calls)),
        "bytes_stored_per_node": stats.nbytes / stats.size if stats.size else 0.0,
        "host_syncs_per_sim": med(lambda s: s.host_syncs / s.calls),
        "hit_rate": float(stats.hit_rate),
        "fallbacks": int(stats.fallbacks),
        "cache_mb": stats.nbytes / 2**20,
        "max_abs_diff_vs_none": math.nan,  # filled in by run_bench (network outputs)
        "max_rel_diff_scalars_vs_none": math.nan,  # filled in by run_bench (value, reward)
        "trees_match_none": None,  # filled in by run_bench (same actions and visit counts)
        "floor_ms": med(lambda s: 1e3 * s.forward_seconds / s.calls),
        "flop_floor_ms": flop_floor_ms,
        "recurrent_vs_floor": recurrent_ms / flop_floor_ms if flop_floor_ms > 0 else math.nan,
        # ---- extras
        "cache_ms": med(lambda s: 1e3 * s.cache_seconds / s.calls),
        "root_ms": med(lambda s: 1e3 * s.root_seconds),
        "bookkeeping_share": med(lambda s: s.bookkeeping_seconds / s.seconds),
        "cache_bytes": int(stats.nbytes),
        "live_entries": int(stats.size),
        "evictions": int(stats.evictions),
        "max_depth": max(s.max_depth for s in samples),
        "diff_by_output": None,  # max |diff| vs none per output (scalars and network outputs)
        "rel_diff_by_output": None,  # max |a-b|/max(1,|b|) vs none for value and reward
        "env_num": envs,
        "num_simulations": sims,
        "per_search": [asdict(s) for s in samples],
    }


@dataclass(slots=True)
class BenchResult:
    """Every record (one per config and backend) and how they were made."""

    records: list[dict]
    meta: dict


def rotated(items: Sequence, k: int) -> list:
    """``items`` rotated left by ``k`` (the run order of search index ``k``)."""
    k %= len(items)
    return [*items[k:], *items[:k]]


def run_config(
    name: str, base: WorldModelConfig, backends: Sequence[str], budget: Budget, *, seed: int,
    diff: bool, bar=None, prefill_steps: int = 0, inspect=None,
) -> tuple[list[dict], dict]:
    """All backends of one config, interleaved search by search; (records, config meta).

    ``prefill_steps``: after the warm-up, give every env a random real past of that many steps
    (:class:`Prefill`) that the timed searches extend. ``inspect(runs, obs)``: called after the
    timed searches with the backends' runs and one more observation batch; its dict is saved
    in the config meta under "inspect".
    """
    runs = [BackendRun(model_config(base, b, budget), seed=seed, record=diff) for b in backends]
    cfg = runs[0].cfg
    obs = make_observations(cfg, budget.warmup + budget.searches + 1, seed)
    history = Prefill.random(cfg, prefill_steps, seed + 3) if prefill_steps else None
    for run in runs:
        if bar is not None:
            bar.set_description(f"{name}/{run.backend} warm-up")
        for o in obs[: budget.warmup]:
            run.warm_up(o)
            if bar is not None:
                bar.update()
        if history is not None:
            run.prefill(history)
        run.start_timing()
    probe = MatmulProbe(cfg)
    watch = CpuWatch()
    for i, o in enumerate(obs[budget.warmup:-1]):
        gc.collect()  # outside the timed searches
        probe.sample()
        for position, run in enumerate(rotated(runs, i)):
            if bar is not None:
                bar.set_description(f"{name} search {i + 1}/{budget.searches}: {run.backend}")
            run.search(o, position)
            if bar is not None:
                bar.update()
    probe.sample()
    others = watch.others_share()
    inspected = None if inspect is None else inspect(runs, obs[-1])
    peak = peak_rss_mb()
    flops = recurrent_flops(cfg)
    gflops = float(statistics.median(probe.rates))
    flop_floor_ms = 1e3 * flops["total"] / (gflops * 1e9)
    records, ref_trace = [], None
    for run in runs:
        rec = summarise(name, run.cfg, run.samples, run.wm.cache_stats(), flop_floor_ms)
        rec["matmul_gflops"] = gflops
        rec["recurrent_gflop"] = flops["total"] / 1e9
        rec["other_processes_cpu_share"] = others
        rec["peak_rss_mb"] = peak  # the process's: every backend's model was alive at once
        if run.backend == REFERENCE:
            ref_trace = run.model.trace
        if diff and ref_trace is not None:
            d = compare_traces(ref_trace, run.model.trace)
            rec["trees_match_none"] = d.same_tree
            rec["diff_by_output"], rec["rel_diff_by_output"] = d.abs_by_output, d.rel_by_scalar
            rec["max_abs_diff_vs_none"], rec["max_rel_diff_scalars_vs_none"] = d.max_abs_network, d.max_rel_scalars
        records.append(rec)
    config_meta = {
        "matmul_gflops": gflops, "matmul_gflops_samples": probe.rates, "matmul_rows": cfg.env_num,
        "recurrent_flops": flops, "flop_floor_ms": flop_floor_ms,
        "search_orders": [[r.backend for r in rotated(runs, i)] for i in range(budget.searches)],
        "other_processes_cpu_share": others, "prefill_steps": prefill_steps,
    }
    if inspected is not None:
        config_meta["inspect"] = inspected
    del runs, probe
    gc.collect()
    return records, config_meta


def run_bench(
    configs: Mapping[str, WorldModelConfig], backends: Sequence[str], budget: Budget | None = None, *,
    seed: int = 0, diff: bool = True, threads: int | None = None, quick: bool = False,
    progress: bool = True,
) -> BenchResult:
    """Run every backend on every config; with ``diff`` the reference must be among them (listed first)."""
    budget = Budget() if budget is None else budget
    backends = sorted(backends, key=lambda n: n != REFERENCE)  # records: the reference first
    watch = CpuWatch()
    if threads is not None:
        torch.set_num_threads(threads)
    if diff and REFERENCE not in backends:
        raise ValueError(f"diff=True needs the {REFERENCE!r} backend in backends={list(backends)}")
    notes = [
        "interleaved: every backend's model is built and warmed up first (same seed, same weights, same "
        "observations, same noise); then for each timed search index every backend runs one search, the "
        "order rotating by one per index, so drift of a shared machine hits all alike; values are medians "
        "over the timed searches",
        "recurrent_ms: wall time of one batched world_model.recurrent_inference call, timed around the call",
        "floor_ms / cache_ms: CacheWork.forward_seconds / cache_seconds per call (measured); "
        "cache_share = cache / (cache + forward)",
        "flop_floor_ms: FLOPs of one recurrent call on its 2 new tokens (2 passes x num_layers x [qkv 3E^2 + "
        "proj E^2 + MLP 2*mlp_ratio*E^2] + attention on <= context_length keys + only the heads each token "
        "needs: reward & latent on the action token, value & policy on the observation token; x2 for "
        "multiply-add; x env_num rows) / this machine's float32 rate on those same matmuls, through the "
        "model's own inference matmul (zerokv.model.linear: oneDNN on CPU), at env_num rows (best of 3 "
        "per sample, sampled between search indices, median); "
        "recurrent_vs_floor = recurrent_ms / flop_floor_ms",
        "bytes_copied_per_node, host_syncs_per_sim: recurrent calls only (roots left out)",
        "cache_mb / stored per live node: the backend's cache_stats().nbytes (its memory figure); "
        "peak_rss_mb is the whole process's peak after the record's config ran: all backends' models are "
        "alive at once (interleaving), so it cannot be split per backend; cache_mb is the per-backend figure",
        "evictions: pool slots of earlier searches reused by later ones; a 100% hit rate with 0 "
        "fallbacks shows no entry a search still needed was evicted",
        "max_abs_diff_vs_none: largest |difference| from 'none' over the network's outputs (policy logits, "
        "value logits, reward logits, next latent), every root and recurrent call",
        "max_rel_diff_scalars_vs_none: value and reward, |a-b| / max(1, |b|): the scalars are E[support] "
        "mapped through h^-1, which magnifies ~5e-7 float32 logit noise by ~300 x h^-1' (support +-300), "
        "so an absolute figure there would measure h^-1, not the cache",
        "visit counts = none (trees_match_none): every recurrent call saw the same actions and every "
        "search ended with the same root visit counts as with 'none'",
    ]
    if not diff:
        notes.append("max_abs_diff_vs_none: NaN (null in JSON): run with the diff turned off")
    total = len(configs) * len(backends) * (budget.warmup + budget.searches)
    bar = tqdm(total=total, disable=not progress, unit="search", file=sys.stderr, leave=False)
    records, per_config = [], {}
    with bar:
        for name, base in configs.items():
            recs, per_config[name] = run_config(name, base, backends, budget, seed=seed, diff=diff, bar=bar)
            records += recs
    meta = {
        "quick": quick, "searches": budget.searches, "warmup": budget.warmup,
        "simulations": budget.simulations, "seed": seed, "threads": torch.get_num_threads(),
        "backends": list(backends), "interleaved": True,
        "torch": torch.__version__, "python": platform.python_version(),
        "cpu": cpu_name(), "cores": psutil.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "notes": notes,
        "peak_rss_mb": peak_rss_mb(), "rss_mb": psutil.Process().memory_info().rss / 2**20,
        "configs": per_config,
        "other_processes_cpu_share": watch.others_share(),
    }
    return BenchResult(records, meta)
