"""``zerokv bench --contexts 16,64,160,320``: the long-context benchmark, where the cache pays.

One config per context length: UniZero's memory-task model (:func:`memory_model`: embed 256, 4
layers, 4 heads, a 3×5×5 view, 4 actions, 8 envs × 50 simulations) with ``context_length =
max_tokens = L``. Every backend runs the same interleaved searches as the main bench
(:func:`zerokv.bench.run.run_config`), but first every env is given a real past of L/2 steps
(:class:`~zerokv.bench.prefill.Prefill`), so each root already holds L-1 tokens and every
expansion attends over a full window. The "none" reference recomputes each node from its input
tokens (up to ``num_layers × (L-1)`` of them), so its cost grows with L; the paged arena stores two
new tokens per node and attends over the window, so its cost per expansion should stay nearly flat.

After the timed searches one more search per backend runs under ``torch.profiler`` to say where
the time goes (:func:`time_split`): linear layers (the matmuls of weights), attention (QKᵀ,
softmax, AV), other tensor ops (norms, rotary, copies, the cache's gathers and writes) and time
outside tensor ops (Python); the cache layer's own wall time is the main bench's ``cache_ms``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from zerokv.bench.configs import REFERENCE, Budget, split_names
from zerokv.bench.machine import CpuWatch
from zerokv.bench.run import BackendRun, BenchResult, run_bench, run_config
from zerokv.model.config import WorldModelConfig
from zerokv.search import plan

DEFAULT_CONTEXTS = "16,64,160,320"
"""The context lengths (tokens) ``--contexts`` is documented with."""
MAX_CONTEXT = 4096
"""Largest context ``--contexts`` accepts (the "none" reference's cost grows with its square)."""
SPLIT_BUCKETS = ("linear", "attention", "other_ops", "outside_ops")
"""Where a profiled search's time goes (see :func:`bucket_of`)."""


def memory_model(context_length: int) -> WorldModelConfig:
    """UniZero's memory-task model (LightZero zoo/memory unizero config: embed 256, 4 layers, 4 heads,
    3×5×5 observations, 4 actions) at ``context_length = max_tokens`` tokens; 8 envs × 50 simulations."""
    return WorldModelConfig(
        observation_shape=(3, 5, 5), action_space_size=4, embed_dim=256, num_layers=4, num_heads=4,
        context_length=context_length, max_tokens=context_length, support_size=300, num_simulations=50,
        env_num=8,
    )


def parse_contexts(text: str) -> list[int]:
    """``"16,64,160"`` → ``[16, 64, 160]``: even token counts in [2, MAX_CONTEXT] (a step is 2 tokens)."""
    names = split_names(text)
    if not names:
        raise ValueError(f"--contexts {text!r} selects nothing; give even token counts such as {DEFAULT_CONTEXTS}")
    out = []
    for name in names:
        try:
            value = int(name)
        except ValueError:
            raise ValueError(f"--contexts entry {name!r} is not an integer; e.g. {DEFAULT_CONTEXTS}") from None
        if value < 2 or value % 2 or value > MAX_CONTEXT:
            raise ValueError(f"--contexts entry {value}: must be an even number of tokens in [2, {MAX_CONTEXT}]")
        out.append(value)
    return out


def bucket_of(op: str) -> str:
    """The bucket of a profiled op: "linear" (weight matmuls: oneDNN linears, addmm/mm), "attention"
    (batched matmuls QKᵀ and AV, softmax, the mask fill, fused attention) or "other_ops"."""
    if "linear" in op or op in ("aten::addmm", "aten::mm"):
        return "linear"
    if op in ("aten::bmm", "aten::baddbmm", "aten::_softmax", "aten::masked_fill_", "aten::masked_fill") or (
        "scaled_dot_product" in op or "flash_attention" in op
    ):
        return "attention"
    return "other_ops"


def time_split(runs: Sequence[BackendRun], obs) -> dict[str, dict[str, float]]:
    """One search per backend under ``torch.profiler``: the share of its wall time in each of
    :data:`SPLIT_BUCKETS` (ops' self CPU time on the calling thread; "outside_ops" is the rest)."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for run in runs:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            wall = _timed_search(run, obs)
        totals = dict.fromkeys(SPLIT_BUCKETS, 0.0)
        for event in prof.key_averages():
            totals[bucket_of(event.key)] += event.self_cpu_time_total / 1e6
        ops = sum(totals.values())
        totals["outside_ops"] = max(wall - ops, 0.0)
        scale = max(wall, ops)
        out[run.backend] = {k: v / scale for k, v in totals.items()} | {"profiled_seconds": wall}
    return out


def _timed_search(run: BackendRun, obs) -> float:
    t0 = time.perf_counter()
    plan(run.wm, obs, config=run.search_cfg, rng=run.rng, last_actions=run.last_actions, add_noise=True,
         temperature=1.0)
    return time.perf_counter() - t0


def run_contexts(
    contexts: Sequence[int], backends: Sequence[str], budget: Budget, *, seed: int = 0, diff: bool = True,
    threads: int | None = None, progress: bool = True, profile: bool = True,
    model: Callable[[int], WorldModelConfig] = memory_model,
) -> BenchResult:
    """Every backend at every context length (one config each, ``model(L)``: :func:`memory_model`
    unless given), interleaved search by search within a length; records as the main bench's plus
    the context columns."""
    backends = sorted(backends, key=lambda n: n != REFERENCE)
    if diff and REFERENCE not in backends:
        raise ValueError(f"diff=True needs the {REFERENCE!r} backend in backends={list(backends)}")
    if threads is not None:
        torch.set_num_threads(threads)
    watch = CpuWatch()
    shell = run_bench({}, backends, budget, seed=seed, diff=diff, progress=False)  # no configs: the meta and notes
    total = len(contexts) * len(backends) * (budget.warmup + budget.searches)
    bar = tqdm(total=total, disable=not progress, unit="search", file=sys.stderr, leave=False)
    records, per_config = [], {}
    with bar:
        for length in contexts:
            name = f"ctx{length}"
            recs, meta = run_config(name, model(length), backends, budget, seed=seed, diff=diff, bar=bar,
                                    prefill_steps=length // 2, inspect=time_split if profile else None)
            split = meta.get("inspect", {})
            ref = next((r for r in recs if r["backend"] == REFERENCE), None)
            for rec in recs:
                rec["context_length"] = length
                rec["root_past_tokens"] = 2 * (length // 2) - 1
                rec["us_per_expansion"] = 1e6 / rec["expansions_per_s"]
                rec["speedup_vs_none"] = (rec["searches_per_s"] / ref["searches_per_s"]) if ref else math.nan
                rec["time_split"] = split.get(rec["backend"])
            records += recs
            per_config[name] = meta
    meta = shell.meta | {"configs": per_config, "contexts": list(contexts), "other_processes_cpu_share":
                         watch.others_share(), "model": getattr(model, "__name__", str(model))}
    meta["notes"] = [*meta["notes"], *CONTEXT_NOTES]
    return BenchResult(records, meta)


CONTEXT_NOTES = [
    "contexts: one config per context length L (memory_model: embed 256, 4 layers, 4 heads, 3x5x5 view, "
    "4 actions, 8 envs x 50 simulations, context_length = max_tokens = L); after the warm-up every env gets "
    "a random real past of L/2 steps (initial_inference_from_history), so each root holds L-1 tokens and "
    "the timed searches extend it",
    "us_per_expansion = 1e6 / expansions_per_s; speedup_vs_none = searches_per_s / none's at the same L",
    "time_split: one extra search per backend under torch.profiler (after the timed ones): ops' self CPU "
    "time bucketed as linear (oneDNN linears, addmm, mm), attention (bmm, softmax, masked_fill, fused "
    "attention), other_ops (norms, rotary, copies, the cache's gathers/writes) and outside_ops (wall "
    "time not in any op: Python, the tree); shares of that search's wall time, profiler overhead included",
]


def render_contexts(result: BenchResult) -> str:
    """The long-context table: per context length and backend, speed, memory, exactness, time split."""
    head = (f"{'context':>7} {'backend':<8} {'searches/s':>10} {'x none':>7} {'us/exp':>8} {'recur ms':>8} "
            f"{'cache ms':>8} {'cache MiB':>9} {'B/node':>9} {'max diff':>9} {'fallb':>5}  "
            f"{'linear':>6} {'attn':>6} {'other':>6} {'python':>6}")
    lines = ["long contexts (memory model: embed 256, 4 layers; 8 envs x 50 simulations; root past L-1 tokens)",
             head, "-" * len(head)]
    for r in result.records:
        split = r.get("time_split") or {}
        shares = " ".join(f"{100 * split[k]:5.1f}%" if k in split else f"{'-':>6}" for k in SPLIT_BUCKETS)
        diff = r["max_abs_diff_vs_none"]
        lines.append(
            f"{r['context_length']:>7} {r['backend']:<8} {r['searches_per_s']:>10.3f} {r['speedup_vs_none']:>6.2f}x "
            f"{r['us_per_expansion']:>8.0f} {r['recurrent_ms']:>8.1f} {r['cache_ms']:>8.2f} {r['cache_mb']:>9.1f} "
            f"{r['bytes_stored_per_node']:>9.0f} {'—' if diff is None or math.isnan(diff) else f'{diff:.1e}':>9} "
            f"{r['fallbacks']:>5}  {shares}"
        )
    share = result.meta.get("other_processes_cpu_share")
    if share is not None:
        lines.append(f"other processes' CPU share during the run: {100 * share:.0f}% (a shared machine: read ratios)")
    return "\n".join(lines)


def write_contexts_plot(result: BenchResult, path: str) -> None:
    """PNG: µs per expansion, cache memory and the speed-up over "none" against context length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(dict.fromkeys(r["backend"] for r in result.records))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = (("us_per_expansion", "µs per node expansion", True), ("cache_mb", "cache memory (MiB)", True),
              ("speedup_vs_none", "searches/s ÷ none's", False))
    for ax, (key, label, log) in zip(axes, panels, strict=True):
        for b in backends:
            rows = [r for r in result.records if r["backend"] == b]
            ys = [r[key] for r in rows]
            label_b = f"{b} (token store)" if key == "cache_mb" and b == REFERENCE else b
            ax.plot([r["context_length"] for r in rows], ys, marker="o", label=label_b)
        ax.set_xlabel("context length (tokens)")
        ax.set_title(label)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend()
    share = result.meta.get("other_processes_cpu_share")
    fig.suptitle(f"zerokv bench --contexts ({result.meta.get('date', '')}; shared machine, other processes "
                 f"{100 * (share or 0):.0f}% CPU)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
