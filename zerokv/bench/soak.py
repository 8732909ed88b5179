"""``zerokv bench --soak N``: memory over N searches per backend — flat once warm, never past the
store's documented size.

Each backend runs N searches in a row on one world model, as collection does: the same 8 envs,
every search after the first passing the previous one's chosen actions as ``last_actions`` with a
new observation, and the caches are never cleared (training clears them after every weight
update; a soak without clearing is the harder case: the stores must bound themselves). The
process's resident set size (RSS) is sampled every N/20 searches, with the store's own figure
(``cache_stats().nbytes``). Each backend runs in a fresh process (``isolate``), so one
backend's freed memory cannot hide another's growth.

Reported per backend: RSS before the first search, after the warm-up (the first N/10 searches),
at the end and at its highest; the growth after the warm-up (should be ≈ 0: flat) and since the
first search (what the stores filled); the store's bytes at the end and its *documented bound*
(:func:`documented_bound_bytes`). ``paged`` preallocates its arena, so its store is at its bound
from the first search; ``legacy`` and ``manager`` fill their pools slot by slot (an env's init
pool holds ``max(num_simulations + 1, 400)`` roots, so they fill within the first ~400 searches)
and then reuse slots. ``none``, the reference, never evicts: it has no bound, and grows until the
caches are cleared.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import time
from collections.abc import Mapping, Sequence

import numpy as np
import psutil
import torch

from zerokv.bench.report import table
from zerokv.cache import CacheConfig
from zerokv.cache.manager import pool_sizes
from zerokv.checks import check_int
from zerokv.model.config import WorldModelConfig
from zerokv.model.world_model import WorldModel
from zerokv.search import SearchConfig, plan

SAMPLES = 20
"""RSS samples per backend (one every N / SAMPLES searches, and one at the end)."""
WARMUP_SHARE = 10
"""The first N / WARMUP_SHARE searches (at least one) are the warm-up."""
MIN_SEARCHES = 2
"""A soak needs a search after its warm-up."""
SOAK_BACKENDS = ("legacy", "manager", "paged")
"""Backends soaked by default: those with a bounded store."""
MIB = 2**20


@dataclasses.dataclass(frozen=True, slots=True)
class SoakSample:
    """Memory after ``searches`` searches."""

    searches: int
    rss_mb: float  # the process's resident set size, MiB
    cache_mb: float  # the backend's store, cache_stats().nbytes, MiB


def documented_bound_bytes(cfg: WorldModelConfig) -> int | None:
    """The most ``cfg.cache_backend``'s store can hold, from the sizes its documentation gives
    (None for ``none``: it never evicts).

    * ``legacy`` / ``manager``: every slot of every pool allocated — ``env_num`` init pools and
      one recurrent pool sized by :func:`zerokv.cache.manager.pool_sizes`, plus the world-model
      pool's ``env_num`` slots — each slot a ``KeysValues`` of ``max_tokens`` tokens:
      2 (keys, values) × num_layers × max_tokens × embed_dim × itemsize bytes.
    * ``paged``: the :class:`~zerokv.cache.PagedArena` — env_num × (context_length − 1) root rows
      plus 2 rows per node of one search, each row 2 × num_layers × embed_dim × itemsize bytes,
      and its int64 tables (env_num × (num_simulations + 1) × (context_length − 1 + 1)).
    """
    item = torch.empty((), dtype=cfg.torch_dtype).element_size()
    token = 2 * cfg.num_layers * cfg.embed_dim * item  # one token's keys and values, all layers
    if cfg.cache_backend == "paged":
        window, nodes = cfg.context_length - 1, cfg.num_simulations + 1
        rows = cfg.env_num * window + 2 * cfg.env_num * cfg.num_simulations
        return rows * token + 8 * cfg.env_num * nodes * (window + 1)
    if cfg.cache_backend in ("legacy", "manager"):
        cache_cfg = CacheConfig(
            num_simulations=cfg.num_simulations, max_cache_size=cfg.max_cache_size,
            eviction_strategy=cfg.eviction_strategy, init_pool_size=cfg.init_pool_size,
            recur_pool_size=cfg.recur_pool_size,
        )
        init, recur = pool_sizes(cache_cfg, cfg.env_num)
        return (cfg.env_num * init + recur + cfg.env_num) * cfg.max_tokens * token
    return None


def soak_backend(cfg: WorldModelConfig, searches: int, *, seed: int = 0, threads: int = 2,
                 progress: bool = True) -> dict:
    """``searches`` searches on one ``cfg`` model in this process; one record (see the module docstring)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    wm = WorldModel(cfg).eval()
    search = SearchConfig(num_simulations=cfg.num_simulations)
    noise, observations = np.random.default_rng(seed + 1), np.random.default_rng(seed + 2)
    warmup = max(1, searches // WARMUP_SHARE)
    every = max(1, searches // SAMPLES)
    proc = psutil.Process()

    def sample(done: int) -> SoakSample:
        return SoakSample(done, proc.memory_info().rss / MIB, wm.cache_stats().nbytes / MIB)

    start = sample(0)
    samples, warm, last_actions = [], None, None
    t0 = time.perf_counter()
    parent = multiprocessing.parent_process()  # set in an isolated (spawned) child, else None
    for i in range(1, searches + 1):
        if parent is not None and not parent.is_alive():  # a killed bench must not leave a soak running
            raise SystemExit(f"soak of {cfg.cache_backend!r}: the parent process died after {i - 1} searches; stopping")
        obs = observations.random((cfg.env_num, *cfg.observation_shape), dtype=np.float32)
        out = plan(wm, obs, config=search, rng=noise, last_actions=last_actions, add_noise=True, temperature=1.0)
        last_actions = out.action.tolist()
        if i == warmup:
            warm = sample(i)
        if i % every == 0 or i == searches:
            samples.append(sample(i))
            if progress:
                s = samples[-1]
                print(f"  {cfg.cache_backend}: {i}/{searches} searches, RSS {s.rss_mb:.1f} MiB, "
                      f"cache {s.cache_mb:.2f} MiB", flush=True)
    seconds = time.perf_counter() - t0
    stats, bound = wm.cache_stats(), documented_bound_bytes(cfg)
    after = [s for s in samples if s.searches >= warmup]
    end = samples[-1]
    return {
        "backend": cfg.cache_backend, "searches": searches, "warmup": warmup, "searches_per_s": searches / seconds,
        "rss_start_mb": start.rss_mb, "rss_warm_mb": warm.rss_mb, "rss_end_mb": end.rss_mb,
        "rss_max_mb": max(s.rss_mb for s in samples),
        "growth_after_warmup_mb": end.rss_mb - warm.rss_mb,
        "max_growth_after_warmup_mb": max(s.rss_mb for s in after) - warm.rss_mb,
        "growth_since_start_mb": end.rss_mb - start.rss_mb,
        "cache_bytes": int(stats.nbytes), "bound_bytes": bound,
        "cache_within_bound": None if bound is None else int(stats.nbytes) <= bound,
        "hits": int(stats.hits), "misses": int(stats.misses), "evictions": int(stats.evictions),
        "fallbacks": int(stats.fallbacks),
        "samples": [dataclasses.asdict(s) for s in samples],
    }


def check_searches(searches) -> int:
    """``searches`` if it is an int >= MIN_SEARCHES, else a ValueError saying so."""
    return check_int("searches", searches, low=MIN_SEARCHES, note=" (--soak N: a search after the warm-up)")


def run_soak(
    configs: Mapping[str, WorldModelConfig], backends: Sequence[str], searches: int, *, seed: int = 0,
    threads: int = 2, isolate: bool = True, progress: bool = True,
) -> list[dict]:
    """One record per (config, backend); with ``isolate`` each backend runs in a fresh process."""
    check_searches(searches)
    records = []
    for name, base in configs.items():
        for backend in backends:
            cfg = dataclasses.replace(base, cache_backend=backend, use_new_cache_manager=None,
                                      cache_validation_mode=False)
            if isolate:
                spawn = multiprocessing.get_context("spawn")
                with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
                    rec = pool.submit(soak_backend, cfg, searches, seed=seed, threads=threads,
                                      progress=progress).result()
            else:
                rec = soak_backend(cfg, searches, seed=seed, threads=threads, progress=progress)
            records.append({"config": name, "env_num": cfg.env_num, "num_simulations": cfg.num_simulations,
                            "isolated": isolate, **rec})
    return records


def _mb(value) -> str:
    return "—" if value is None else f"{value / MIB:.1f}"


def render_soak(records: Sequence[dict]) -> str:
    header = ["config/backend", "searches", "searches/s", "RSS start", "warm", "end", "max", "Δ after warm-up",
              "max Δ after warm-up", "Δ since start", "cache MiB", "bound MiB", "cache ≤ bound", "evictions",
              "fallbacks"]
    rows = [[f"{r['config']}/{r['backend']}", str(r["searches"]), f"{r['searches_per_s']:.1f}",
             f"{r['rss_start_mb']:.1f}", f"{r['rss_warm_mb']:.1f}", f"{r['rss_end_mb']:.1f}", f"{r['rss_max_mb']:.1f}",
             f"{r['growth_after_warmup_mb']:+.1f}", f"{r['max_growth_after_warmup_mb']:+.1f}",
             f"{r['growth_since_start_mb']:+.1f}", _mb(r["cache_bytes"]), _mb(r["bound_bytes"]),
             {None: "no bound", True: "yes", False: "NO"}[r["cache_within_bound"]], str(r["evictions"]),
             str(r["fallbacks"])] for r in records]
    first = records[0] if records else {}
    return (
        f"Soak: {first.get('searches', 0)} searches per backend ({first.get('env_num', 0)} envs × "
        f"{first.get('num_simulations', 0)} simulations, episodes run on, caches never cleared); RSS in MiB, "
        f"warm = after the first {first.get('warmup', 0)} searches\n" + table(header, rows)
        + "\nnote: bound = the store's documented size (every pool slot allocated; paged: its arena); "
        "RSS is the whole process's (model, allocator, interpreter), so Δ since start may exceed the "
        "store's growth by allocator slack; 'none' never evicts and has no bound"
    )
