"""``zerokv bench --storage-dtypes float32,bfloat16,float8_e4m3fn,int8``: what each KV storage dtype saves and changes.

For each config, one float32 model's weights are shared (``share_weights_with``) by one `paged`
model per storage dtype (``WorldModelConfig.kv_storage_dtype``; compute stays float32). Reported:

* **search** — the same fixed positions (fresh roots, the same root noise) searched by every
  model, interleaved position by position in rotating order: arena bytes per search node (scales
  included) and per search arena, searches/s; every root and recurrent call replayed on a float32
  storage model expanding the same nodes, the largest |difference| kept per output; the search
  policy's change against float32 storage's (KL, TV, top-action agreement), with float32 storage
  under another root-noise draw as the scale (as ``--precision`` does);
* **reanalysis** — for each root count (256, 1,024, 2,048 by default) one :class:`Reanalyzer`
  arena of that many roots per dtype, run once each in rotating order with the same root noise:
  arena MiB and roots/s, and the policy's change against float32 storage at the same roots, with
  float32 storage under another noise draw as the scale;
* **snapshots** — ``env_num`` roots' contexts rebuilt from :attr:`root_history_steps` steps of
  history (``initial_inference_from_history``) against loading them from a snapshot
  (``load_caches_from_bytes``, which fingerprints the weights and checks the content hash;
  and ``load_caches`` from a file), interleaved, medians; and whether the loaded model's next root
  equals the rebuilt one's bit for bit.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from zerokv.bench.configs import Budget, model_config, split_names
from zerokv.bench.multileaf import policy_distance
from zerokv.bench.precision import ModelRun, warm_up
from zerokv.bench.reanalysis import make_histories
from zerokv.bench.recording import RecordingModel
from zerokv.bench.report import table
from zerokv.bench.run import rotated
from zerokv.cache.storage import KV_STORAGE_DTYPES
from zerokv.model.config import WorldModelConfig
from zerokv.model.snapshot import weights_fingerprint
from zerokv.model.world_model import WorldModel
from zerokv.search import Reanalyzer, SearchConfig

BASELINE = "float32"
"""The exact storage every other dtype is compared with (always run, first)."""
OTHER_NOISE = "float32, other noise"
"""Label of float32 storage's search under another root-noise draw (the policy-change scale)."""
DEFAULT_ROOTS = (256, 1024, 2048)
"""Reanalysis arena sizes (roots per call) measured by default."""
LARGE_ARENA = 64 * 2**20
"""A reanalysis arena of more bytes is collected (``gc``) before the next is built."""


def parse_storage_dtypes(text: str) -> list[str]:
    """"int8,bfloat16" → ["float32", "int8", "bfloat16"]: known names, float32 (the baseline) first."""
    names = split_names(text)
    unknown = [n for n in names if n not in KV_STORAGE_DTYPES]
    if unknown or not names:
        raise ValueError(f"--storage-dtypes {text!r}: {unknown[0] + ' is unknown' if unknown else 'selects nothing'}; "
                         f"allowed: {', '.join(KV_STORAGE_DTYPES)}")
    return [BASELINE, *(n for n in names if n != BASELINE)]


def parse_roots(text: str) -> list[int]:
    """"256,1024" → [256, 1024]: reanalysis arena sizes, each an int >= 1."""
    parts = split_names(text)
    if not parts or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(f"--storage-roots {text!r}; give ints >= 1, e.g. 256,1024,2048")
    return sorted({int(p) for p in parts})


def storage_models(cfg: WorldModelConfig, dtypes: Sequence[str], seed: int) -> dict[str, WorldModel]:
    """One paged model per storage dtype, all sharing the float32-storage model's weights."""
    torch.manual_seed(seed)  # the bench's weights
    owner = WorldModel(dataclasses.replace(cfg, kv_storage_dtype=BASELINE)).eval()
    return {d: owner if d == BASELINE else WorldModel(dataclasses.replace(cfg, kv_storage_dtype=d),
                                                       share_weights_with=owner) for d in dtypes}


def run_storage(configs: Mapping[str, WorldModelConfig], budget: Budget, *, dtypes: Sequence[str],
                roots: Sequence[int] = DEFAULT_ROOTS, seed: int = 0) -> dict[str, list[dict]]:
    """Records of every config: ``{"search": […], "reanalysis": […], "snapshot": […]}``."""
    out: dict[str, list[dict]] = {"search": [], "reanalysis": [], "snapshot": []}
    for name, base in configs.items():
        cfg = model_config(base, "paged", budget)
        models = storage_models(cfg, dtypes, seed)
        out["search"] += _searches(name, cfg, models, budget, seed)
        out["snapshot"] += _snapshots(name, cfg, models, budget, seed)
        out["reanalysis"] += _reanalyses(name, cfg, models, roots, seed)
        del models
        gc.collect()
    return out


# ------------------------------------------------------------------------------ search
def _searches(name: str, cfg: WorldModelConfig, models: dict[str, WorldModel], budget: Budget,
              seed: int) -> list[dict]:
    runs = [ModelRun(d, RecordingModel(wm, record=True)) for d, wm in models.items()]
    reference = WorldModel(models[BASELINE].config, share_weights_with=models[BASELINE])  # caches of its own
    search, timed, noise_seed = warm_up(runs, cfg, budget, seed)
    for i, obs in enumerate(timed):
        gc.collect()  # outside the timed searches
        for run in rotated(runs, i):
            run.timed_search(obs, search, noise_seed + i)
            run.compare(reference)  # untimed
    other = ModelRun(OTHER_NOISE, RecordingModel(models[BASELINE], record=False))
    for i, obs in enumerate(timed):
        other.visits.append(other.search(obs, search, seed + 5000 + i))
    baseline = np.concatenate(runs[0].visits)
    base_speed = statistics.median(1.0 / s for s in runs[0].seconds)
    base_bytes = models[BASELINE].kv_cache_manager.node_bytes
    records = []
    for run in [*runs, other]:
        arena = run.model.wm.kv_cache_manager
        rec = {"config": name, "storage": run.label, "positions": int(baseline.shape[0]),
               "env_num": cfg.env_num, "num_simulations": cfg.num_simulations,
               **policy_distance(baseline, np.concatenate(run.visits))}
        if run.seconds:
            speed = float(statistics.median(1.0 / s for s in run.seconds))
            rec.update(node_bytes=arena.node_bytes, memory_ratio=base_bytes / arena.node_bytes,
                       arena_mib=arena.nbytes / 2**20, searches_per_s=speed, speedup=speed / base_speed,
                       diff_by_output=dict(run.worst))
        records.append(rec)
    return records


# -------------------------------------------------------------------------- reanalysis
def _reanalyses(name: str, cfg: WorldModelConfig, models: dict[str, WorldModel], roots: Sequence[int],
                seed: int) -> list[dict]:
    """Per root count, every dtype's arena run once with the same root noise, and float32 storage
    under another noise draw (the scale), in rotating order (one arena alive at a time)."""
    search = SearchConfig(num_simulations=cfg.num_simulations)
    runs = [(d, models[d], seed) for d in models] + [(OTHER_NOISE, models[BASELINE], seed + 5000)]
    obs, actions = make_histories(cfg, 8, seed + 3)
    for wm in models.values():  # warm-up: the kernels, on a small arena
        Reanalyzer(wm, search, roots_per_call=8)(obs, actions, rng=np.random.default_rng(seed))
    records = []
    for j, n in enumerate(roots):
        obs, actions = make_histories(cfg, n, seed + 11)
        visits = {}
        for label, wm, noise_seed in rotated(runs, j):
            reanalyzer = Reanalyzer(wm, search, roots_per_call=n)
            arena = reanalyzer.arena.kv_cache_manager
            out = reanalyzer(obs, actions, rng=np.random.default_rng(noise_seed), add_noise=True)
            visits[label] = out.visit_counts
            records.append({"config": name, "storage": label, "roots": n, "arena_mib": arena.nbytes / 2**20,
                            "buffers_mib": arena.buffer_nbytes / 2**20, "seconds": out.seconds,
                            "roots_per_s": out.roots_per_second})
            large = arena.nbytes > LARGE_ARENA
            del reanalyzer, arena, out
            if large:
                gc.collect()  # free it before the next one is allocated
        for rec in records[-len(runs):]:
            rec.update(policy_distance(visits[BASELINE], visits[rec["storage"]]))
            rec["speedup"] = rec["roots_per_s"] / next(r["roots_per_s"] for r in records[-len(runs):]
                                                       if r["storage"] == BASELINE)
    order = {label: i for i, (label, _, _) in enumerate(runs)}
    return sorted(records, key=lambda r: (r["roots"], order[r["storage"]]))


# --------------------------------------------------------------------------- snapshots
def _snapshots(name: str, cfg: WorldModelConfig, models: dict[str, WorldModel], budget: Budget,
               seed: int) -> list[dict]:
    """Rebuilding env_num roots' contexts from history vs loading them, per dtype, interleaved."""
    obs, actions = make_histories(cfg, cfg.env_num, seed + 13)
    step = np.random.default_rng(seed + 14).random((cfg.env_num, *cfg.observation_shape), dtype=np.float32)
    last = [i % cfg.action_space_size for i in range(cfg.env_num)]
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for d, wm in models.items():
            path = Path(tmp) / f"{d}.safetensors"
            wm.clear_caches()
            wm.initial_inference_from_history(obs, actions)
            data = wm.caches_to_bytes()
            wm.save_caches(path)
            expected = wm.initial_inference(step, last_actions=last)  # the uninterrupted model's next root
            times = {"rebuild": [], "load": [], "load_file": [], "fingerprint": []}
            for i in range(budget.warmup + budget.searches):
                for what in rotated(list(times), i):
                    t0 = time.perf_counter()
                    if what == "rebuild":
                        wm.initial_inference_from_history(obs, actions)
                    elif what == "load":
                        wm.load_caches_from_bytes(data)
                    elif what == "load_file":
                        wm.load_caches(path)
                    else:
                        weights_fingerprint(wm)
                    if i >= budget.warmup:
                        times[what].append(time.perf_counter() - t0)
            wm.load_caches_from_bytes(data)
            got = wm.initial_inference(step, last_actions=last)
            ms = {k: 1e3 * float(statistics.median(v)) for k, v in times.items()}
            records.append({"config": name, "storage": d, "roots": cfg.env_num, "snapshot_bytes": len(data),
                            **{f"{k}_ms": v for k, v in ms.items()}, "rebuild_over_load": ms["rebuild"] / ms["load"],
                            "exact": all(torch.equal(getattr(got, k), getattr(expected, k))
                                         for k in ("value", "policy_logits", "latent_state", "value_logits"))})
    return records


# ------------------------------------------------------------------------------ report
def _num(value, spec: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def render_storage(result: Mapping[str, list[dict]]) -> str:
    """Three tables (search; reanalysis; snapshots) and the notes needed to read them."""
    search = result["search"]
    rows = []
    for r in search:
        d = r.get("diff_by_output") or {}
        logits = max(d["value_logits"], d["reward_logits"]) if d else None
        rows.append([r["config"], r["storage"], _num(r.get("node_bytes"), ",d"), _num(r.get("memory_ratio"), ".2f"),
                     _num(r.get("arena_mib"), ".2f"), _num(r.get("searches_per_s"), ".2f"),
                     _num(r.get("speedup"), ".2f"), _num(d.get("policy_logits"), ".1e"), _num(logits, ".1e"),
                     _num(d.get("latent_state"), ".1e"), f"{r['kl']:.4f}", f"{r['tv']:.3f}",
                     f"{100 * r['top_action_agrees']:.1f}%"])
    table1 = table(["config", "storage", "bytes/node", "× less", "arena MiB", "searches/s", "×", "max|Δ| policy",
                     "value/reward logits", "latent", "KL(fp32‖·)", "TV", "top action ="], rows)
    table2 = table(["config", "storage", "roots", "arena MiB", "+ buffers MiB", "roots/s", "×", "KL(fp32‖·)", "TV",
                     "top action ="],
                    [[r["config"], r["storage"], str(r["roots"]), f"{r['arena_mib']:,.1f}", f"{r['buffers_mib']:,.1f}",
                      f"{r['roots_per_s']:.1f}",
                      f"{r['speedup']:.2f}", f"{r['kl']:.4f}", f"{r['tv']:.3f}", f"{100 * r['top_action_agrees']:.1f}%"]
                     for r in result["reanalysis"]])
    table3 = table(["config", "storage", "roots", "snapshot KiB", "rebuild ms", "load ms", "load file ms",
                     "weights BLAKE3 ms", "rebuild / load", "next root exact"],
                    [[r["config"], r["storage"], str(r["roots"]), f"{r['snapshot_bytes'] / 1024:,.1f}",
                      f"{r['rebuild_ms']:.1f}", f"{r['load_ms']:.1f}", f"{r['load_file_ms']:.1f}",
                      f"{r['fingerprint_ms']:.1f}", f"{r['rebuild_over_load']:.1f}×", "yes" if r["exact"] else "NO"]
                     for r in result["snapshot"]])
    n = search[0]["positions"] if search else 0
    return (
        f"KV storage dtypes (paged backend, float32 compute, the same weights; {n} fixed positions per config "
        "= searches × envs, the same root noise; medians over searches)\n" + table1
        + "\nnote: bytes/node: a search node's two tokens, keys and values of every layer, scales included; arena "
        "MiB: the search arena (env_num × num_simulations nodes + root windows + tables); max|Δ| over every root "
        "and recurrent call against a float32-storage model expanding the same nodes; KL over visit counts smoothed "
        f"as in --multi-leaf; '{OTHER_NOISE}' is float32 storage under another root-noise draw: the search's own "
        "variation\n\nReanalysis (one arena of `roots` roots per dtype, the same root noise; × and policy change "
        f"against float32 storage at the same roots, '{OTHER_NOISE}' as above; arena: stored keys, values, "
        "scales and tables; buffers: the search calls' gather buffer in the compute dtype and its "
        "dequantization staging, kept by the arena)\n" + table2
        + "\n\nSnapshots: env_num roots' contexts rebuilt from history vs loaded (medians; load = weights BLAKE3 + "
        "content hash + restore; 'next root exact': the loaded model's next initial_inference equals the "
        "uninterrupted model's bit for bit)\n" + table3
    )
