"""Showing the results: the old (legacy) | new backends | × table, the all-backends table, JSON and a PNG chart."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zerokv.bench.configs import BASELINE, REFERENCE
from zerokv.bench.run import BenchResult
from zerokv.io import atomic_write_bytes

BUSY_SHARE = 0.1
"""Other processes' share of the CPU during the run above which the report warns of noise."""


@dataclass(frozen=True, slots=True)
class Metric:
    """One row of the comparison table."""

    key: str  # record key
    label: str  # row label, with its unit
    fmt: str  # "rate" | "ms" | "pct" | "bytes" | "float" | "int" | "diff" | "times" | "bool"
    better: str | None  # "higher" | "lower" | None (no speedup shown)


METRICS: tuple[Metric, ...] = (
    Metric("searches_per_s", "searches/s", "rate", "higher"),
    Metric("sims_per_s", "simulations/s (per env batch)", "rate", "higher"),
    Metric("expansions_per_s", "node expansions/s", "rate", "higher"),
    Metric("recurrent_ms", "recurrent call (ms)", "ms", "lower"),
    Metric("floor_ms", "  measured forward (ms)", "ms", "lower"),
    Metric("cache_ms", "  cache work (ms)", "ms", "lower"),
    Metric("flop_floor_ms", "FLOP floor (ms)", "ms", None),
    Metric("recurrent_vs_floor", "recurrent call / FLOP floor", "times", None),
    Metric("cache_share", "cache share of recurrent", "pct", "lower"),
    Metric("bookkeeping_share", "tree bookkeeping share", "pct", None),
    Metric("bytes_copied_per_node", "copied per node", "bytes", "lower"),
    Metric("bytes_stored_per_node", "stored per live node", "bytes", "lower"),
    Metric("cache_mb", "cache memory (MiB)", "float", "lower"),
    Metric("host_syncs_per_sim", "host syncs per simulation", "float", "lower"),
    Metric("hit_rate", "hit rate", "pct", None),
    Metric("fallbacks", "context-free fallbacks", "int", None),
    Metric("evictions", "evictions (timed searches)", "int", None),
    Metric("max_abs_diff_vs_none", "max |diff| vs none (logits, latent)", "diff", None),
    Metric("max_rel_diff_scalars_vs_none", "max rel diff value, reward", "diff", None),
    Metric("trees_match_none", "visit counts = none", "bool", None),
)


def fmt(value, kind: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if kind == "bool":
        return "yes" if value else "NO"
    if kind == "times":
        return f"{value:.2f}×"
    if kind == "rate":
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if kind == "ms":
        return f"{value:.2f}"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "bytes":
        for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
            if value >= size:
                return f"{value / size:.1f} {unit}"
        return f"{value:.0f} B"
    if kind == "int":
        return f"{int(value)}"
    if kind == "diff":
        return f"{value:.1e}"
    return f"{value:.1f}"


def ratio(old, new, better: str | None) -> str:
    """How many times better ``new`` is than ``old`` (> 1: better), or "—"."""
    if better is None or old is None or new is None:
        return "—"
    num, den = (new, old) if better == "higher" else (old, new)
    if den == 0 or math.isnan(num) or math.isnan(den):
        return "—"
    return f"{num / den:.2f}×"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned, a rule under the header."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(out)


def _title(config: str, recs: list[dict]) -> str:
    r = recs[0]
    n = len(r["per_search"])
    line = (f"{config}: {r['env_num']} envs × {r['num_simulations']} simulations, medians of {n} "
            f"interleaved timed search{'es' if n > 1 else ''}")
    if r.get("matmul_gflops") is not None:
        line += (f"; float32 matmul {fmt(r['matmul_gflops'], 'rate')} GFLOP/s at {r['env_num']} rows → FLOP floor "
                 f"{r['flop_floor_ms']:.2f} ms per recurrent call ({r['recurrent_gflop']:.3f} GFLOP)")
    return line


def _by_config(result: BenchResult) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for rec in result.records:
        groups.setdefault(rec["config"], []).append(rec)
    return groups


def comparison_tables(result: BenchResult) -> str:
    """Per config: rows = metrics, columns ``old (legacy) | X | Y | X× | Y×`` (× = better than legacy by)."""
    blocks = []
    for config, recs in _by_config(result).items():
        by = {r["backend"]: r for r in recs}
        news = [b for b in by if b not in (REFERENCE, BASELINE)]
        if BASELINE not in by or not news:
            blocks.append(f"{config}: no old/new comparison (needs {BASELINE!r} and another cached backend)")
            continue
        old = by[BASELINE]
        header = ["metric", f"old ({BASELINE})", *news, *(f"{b}×" for b in news)]
        rows = []
        for m in METRICS:
            rows.append([
                m.label, fmt(old.get(m.key), m.fmt),
                *(fmt(by[b].get(m.key), m.fmt) for b in news),
                *(ratio(old.get(m.key), by[b].get(m.key), m.better) for b in news),
            ])
        blocks.append(_title(config, recs) + "\n" + table(header, rows))
    return "\n\n".join(blocks)


def backendstable(result: BenchResult) -> str:
    """Every (config, backend) on one line each."""
    header = ["config/backend", "search/s", "sims/s", "rec ms", "fwd ms", "flop ms", "×flop", "cache %",
              "copied/node", "stored/node", "syncs/sim", "hit", "fallb", "cache MiB", "max|diff|",
              "rel diff", "visits=", "others"]
    rows = []
    for r in result.records:
        rows.append([
            f"{r['config']}/{r['backend']}", fmt(r["searches_per_s"], "rate"), fmt(r["sims_per_s"], "rate"),
            fmt(r["recurrent_ms"], "ms"), fmt(r["floor_ms"], "ms"), fmt(r["flop_floor_ms"], "ms"),
            fmt(r["recurrent_vs_floor"], "times"), fmt(r["cache_share"], "pct"),
            fmt(r["bytes_copied_per_node"], "bytes"), fmt(r["bytes_stored_per_node"], "bytes"),
            fmt(r["host_syncs_per_sim"], "float"), fmt(r["hit_rate"], "pct"), fmt(r["fallbacks"], "int"),
            fmt(r["cache_mb"], "float"), fmt(r["max_abs_diff_vs_none"], "diff"),
            fmt(r["max_rel_diff_scalars_vs_none"], "diff"), fmt(r["trees_match_none"], "bool"),
            fmt(r.get("other_processes_cpu_share"), "pct"),
        ])
    return table(header, rows)


def render(result: BenchResult) -> str:
    """The whole printed report: a quick-mode warning, both tables, and the notes."""
    m = result.meta
    parts = []
    if m["quick"]:
        parts.append(f"QUICK RUN ({m['warmup']} warm-up, {m['searches']} timed searches, "
                     f"{m['simulations']} simulations): a smoke test, not a measurement")
    parts.append(f"zerokv bench — {m['cpu']}, {m['threads']} torch threads, torch {m['torch']}; "
                 f"peak RSS of the whole process {m['peak_rss_mb']:.0f} MiB (all backends' models at once)")
    others = m.get("other_processes_cpu_share", 0.0)
    if others > BUSY_SHARE:
        parts.append(f"WARNING: other processes used {100 * others:.0f}% of the machine's CPU during the "
                     "run: times are inflated and ratios noisy")
    parts += [comparison_tables(result),
              "All backends (others = CPU share other processes used meanwhile)\n" + backendstable(result)]
    parts.append("\n".join(f"note: {n}" for n in m["notes"]))
    if any(r["trees_match_none"] is False for r in result.records):
        parts.append("WARNING: some searches took different paths than with 'none' (visits= NO); "
                     "their max |diff| compares different nodes")
    return "\n\n".join(parts)


def _finite(value):
    # JSON has no NaN/inf: they become null (the notes in "meta" say why).
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_json(result: BenchResult, path: str | os.PathLike) -> None:
    """A list of records at ``path`` and the run's metadata beside it (``*.meta.json``), atomically."""
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(_finite(result.records), indent=2, allow_nan=False) + "\n").encode())
    meta = json.dumps(_finite([result.meta])[0], indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(meta_path(path), meta.encode())


def meta_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".meta.json")


def write_plot(result: BenchResult, path: str | os.PathLike) -> None:
    """A PNG: simulations/s, cache share and recurrent call / FLOP floor; by config, a bar per backend."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = _by_config(result)
    configs = list(groups)
    backends = list(dict.fromkeys(r["backend"] for r in result.records))
    fig = Figure(figsize=(14, 4), layout="constrained")
    FigureCanvasAgg(fig)  # Agg, without touching pyplot's global state
    axes = fig.subplots(1, 3)
    width = 0.8 / len(backends)
    panels = (("sims_per_s", "simulations / s (per env batch)", 1.0),
              ("cache_share", "cache share of recurrent time (%)", 100.0),
              ("recurrent_vs_floor", "recurrent call / FLOP floor (×)", 1.0))
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        for j, backend in enumerate(backends):
            xs, ys = [], []
            for i, config in enumerate(configs):
                rec = next((r for r in groups[config] if r["backend"] == backend), None)
                if rec is not None and rec.get(key) is not None and math.isfinite(rec[key]):
                    xs.append(i + (j - (len(backends) - 1) / 2) * width)
                    ys.append(scale * rec[key])
            bars = ax.bar(xs, ys, width, label=backend)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(range(len(configs)), configs)
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    quick = " (QUICK RUN)" if result.meta["quick"] else ""
    fig.suptitle(f"zerokv bench{quick}: {result.meta['threads']} threads, {result.meta['cpu']}", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(path, buf.getvalue())
