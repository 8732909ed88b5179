"""Does a fast search mode change how fast an agent learns? CartPole, several seeds per mode.

Each mode (search dtype × leaves per call) trains ``zerokv train`` at its default CartPole
config from the same seeds, one run at a time in a fresh process, seed-major (mode A seed 0,
mode B seed 0, …, mode A seed 1, …) so that the load of a shared machine hits every mode alike.
A run evaluates every 1,000 env steps (``--eval-every``; training's own 5,000 would make "env
steps to solve" a multiple of ~5,000) and stops at its first evaluation ≥ 475 (CartPole-v1's
threshold) or at the env-step budget.
One row per run goes to the CSV: env steps, wall time and training time (evaluations excluded) to
that evaluation, the final evaluation, simulations/s and env steps/s (medians over iterations),
the 1-minute load average before and after, and the share of the CPU other processes used during
the run.

Environment steps to solve do not depend on the machine's load; training time and simulations/s
do, so the summary reports them as ratios to the float32 one-leaf run of the same seed (adjacent in
time). The study resumes: a (seed, mode) whose row exists is skipped; a half-finished run is
started again from scratch.

Usage:
    .venv/bin/python scripts/learning_study.py                       # run what is missing, summarise, plot
    .venv/bin/python scripts/learning_study.py --summarise-only      # only the summary and plot
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

SOLVED = 475.0
"""CartPole-v1's registered reward threshold: the first evaluation at or above it solves the run."""


@dataclass(frozen=True, slots=True)
class Mode:
    """One search mode of the study."""

    name: str  # label in the CSV and tables
    search_dtype: str  # TrainConfig.search_dtype
    leaves_per_call: int  # TrainConfig.leaves_per_call


MODES = (Mode("fp32 K=1", "float32", 1), Mode("fp32 K=4", "float32", 4),
         Mode("bf16 K=1", "bfloat16", 1), Mode("bf16 K=4", "bfloat16", 4))
WAIT_POLICY_HELP = """OMP_WAIT_POLICY of each run; default: the environment's (OpenMP's own default,
spinning). Measured on 2026-11-30, 2 torch threads, CartPole, 1,536 env steps on a quiet machine:
PASSIVE searched at 214 simulations/s against 520 with the default, and its learner update took
2.52 s against 1.82 s per iteration. PASSIVE only helps on a machine other processes keep busy,
where spinning threads stall at every parallel region (3 simulations/s at load average 7)."""
BASELINE = MODES[0].name
"""The exact search: every ratio is against it, within one seed."""
FIELDS = ["seed", "mode", "search_dtype", "leaves_per_call", "exit_code", "solved_at_env_steps", "env_steps",
          "wall_s", "final_eval_return", "final_eval_std", "sims_per_s", "env_steps_per_s", "load1_before",
          "load1_after", "others_cpu_share", "threads", "omp_wait_policy", "eval_every", "evals", "date", "train_s"]
"""Columns of the study's CSV; ``evals`` is "env_steps:return" pairs joined by ';'. ``wall_s`` is the
whole run (start-up and evaluations included); ``train_s`` sums its training iterations (collection,
search, learning: ``time/iteration_s``) up to the solving evaluation, which is what the search mode
changes — at 10 episodes every 1,000 env steps, evaluating can take half of a short run's wall time."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--modes", default=",".join(m.name for m in MODES),
                   help=f"comma-separated modes (default: all of {[m.name for m in MODES]})")
    p.add_argument("--runs-dir", default="runs/learning_study", help="where each run's directory goes")
    p.add_argument("--csv", default="docs/results/learning_study.csv", help="one row per run (appended)")
    p.add_argument("--plot", default="docs/results/learning_study.png", help="evaluation curves and training times")
    p.add_argument("--total-env-steps", type=int, default=30_000, help="budget cap of each run")
    p.add_argument("--eval-every", type=int, default=1000,
                   help="env steps between evaluations (default 1000; training's own default, 5000, would make "
                        "'env steps to solve' a multiple of ~5,000)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of each run")
    p.add_argument("--omp-wait-policy", choices=["PASSIVE", "ACTIVE"], default=None, help=WAIT_POLICY_HELP)
    p.add_argument("--summarise-only", action="store_true", help="run nothing; summarise and plot the CSV")
    args = p.parse_args(argv)
    known = {m.name: m for m in MODES}
    args.modes = [known[n] if n in known else p.error(f"unknown mode {n!r}; allowed: {list(known)}")
                  for n in (s.strip() for s in args.modes.split(",")) if n]
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    return args


# ------------------------------------------------------------------------------- one run
def read_progress(path: Path) -> dict:
    """What a run's progress.csv says: its evaluations [(env_steps, mean, std)], the first env
    steps with a mean ≥ SOLVED (or None), the last env steps, the seconds of training iterations up
    to that evaluation (or all of them), and the median speeds."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    evals = [(int(r["env_steps"]), float(r["return/eval"]), float(r["return/eval_std"]))
             for r in rows if r.get("return/eval")]
    solved = next((steps for steps, mean, _ in evals if mean >= SOLVED), None)
    upto = rows if solved is None else [r for r in rows if int(r["env_steps"]) <= solved]
    train_s = sum(float(r["time/iteration_s"]) for r in upto if r.get("time/iteration_s"))
    sims = [float(r["speed/sims_per_s"]) for r in rows if r.get("speed/sims_per_s")]
    steps = [float(r["speed/env_steps_per_s"]) for r in rows if r.get("speed/env_steps_per_s")]
    return {"evals": evals, "solved_at": solved, "env_steps": int(rows[-1]["env_steps"]) if rows else 0,
            "train_s": train_s,
            "sims_per_s": statistics.median(sims) if sims else float("nan"),
            "env_steps_per_s": statistics.median(steps) if steps else float("nan")}


def _busy_cpu_seconds() -> float:
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def _children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_dir(runs_dir: str, mode: Mode, seed: int) -> Path:
    return Path(runs_dir) / f"{mode.search_dtype}-k{mode.leaves_per_call}-s{seed}"


def train_once(mode: Mode, seed: int, args: argparse.Namespace) -> dict:
    """Train one (mode, seed) in a fresh process; its CSV row."""
    out = run_dir(args.runs_dir, mode, seed)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "zerokv", "train", "--out", str(out), "--overwrite", "--seed", str(seed),
           "--search-dtype", mode.search_dtype, "--leaves-per-call", str(mode.leaves_per_call),
           "--total-env-steps", str(args.total_env_steps), "--eval-every", str(args.eval_every),
           "--threads", str(args.threads), "--no-progress"]
    env = dict(os.environ)
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    load_before = os.getloadavg()[0]
    busy0, ours0, t0 = _busy_cpu_seconds(), _children_cpu_seconds(), time.monotonic()
    with (out.parent / f"{out.name}.log").open("w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode
    wall = time.monotonic() - t0
    others = (_busy_cpu_seconds() - busy0) - (_children_cpu_seconds() - ours0)
    progress = read_progress(out / "progress.csv") if (out / "progress.csv").is_file() else read_empty()
    last = progress["evals"][-1] if progress["evals"] else (0, float("nan"), float("nan"))
    return {"seed": seed, "mode": mode.name, "search_dtype": mode.search_dtype,
            "leaves_per_call": mode.leaves_per_call, "exit_code": code,
            "solved_at_env_steps": progress["solved_at"] if progress["solved_at"] is not None else "",
            "env_steps": progress["env_steps"], "wall_s": round(wall, 1),
            "final_eval_return": last[1], "final_eval_std": last[2],
            "sims_per_s": round(progress["sims_per_s"], 1), "env_steps_per_s": round(progress["env_steps_per_s"], 2),
            "load1_before": load_before, "load1_after": os.getloadavg()[0],
            "others_cpu_share": round(max(others, 0.0) / (wall * (psutil.cpu_count() or 1)), 3),
            "threads": args.threads, "omp_wait_policy": env.get("OMP_WAIT_POLICY", "default"),
            "eval_every": args.eval_every,
            "evals": ";".join(f"{s}:{m:.1f}" for s, m, _ in progress["evals"]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "train_s": round(progress["train_s"], 1)}


def read_empty() -> dict:
    return {"evals": [], "solved_at": None, "env_steps": 0, "train_s": float("nan"), "sims_per_s": float("nan"),
            "env_steps_per_s": float("nan")}


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def backfill_train_s(rows: list[dict], runs_dir: str) -> bool:
    """Fill ``train_s`` of rows written before the column existed, from their run's progress.csv;
    True if any row changed."""
    modes = {m.name: m for m in MODES}
    changed = False
    for r in rows:
        if r.get("train_s") or r["mode"] not in modes:
            continue
        progress = run_dir(runs_dir, modes[r["mode"]], int(r["seed"])) / "progress.csv"
        if progress.is_file():
            r["train_s"] = round(read_progress(progress)["train_s"], 1)
            changed = True
    return changed


def write_rows(path: Path, rows: list[dict]) -> None:
    """Rewrites the CSV (every FIELDS column) through a temp file and a rename."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in FIELDS} for r in rows)
    os.replace(tmp, path)


def append_row(path: Path, row: dict) -> None:
    new = not path.is_file() or path.stat().st_size == 0
    if not new:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        if header != FIELDS:  # written by an earlier version of this script: rewrite with every column
            write_rows(path, [*read_rows(path), row])
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def run_missing(args: argparse.Namespace) -> None:
    """Every (seed, mode) without a row, seed-major, one at a time."""
    csv_path = Path(args.csv)
    for seed in args.seeds:
        for mode in args.modes:
            done = {(int(r["seed"]), r["mode"]) for r in read_rows(csv_path)}
            if (seed, mode.name) in done:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] seed {seed} {mode.name}: load {os.getloadavg()[0]:.2f}", flush=True)
            row = train_once(mode, seed, args)
            append_row(csv_path, row)
            print(f"  solved at {row['solved_at_env_steps'] or '-'} env steps, {row['wall_s']:.0f} s, "
                  f"final eval {row['final_eval_return']:.1f}, {row['sims_per_s']} sims/s, "
                  f"exit {row['exit_code']}", flush=True)


# ------------------------------------------------------------------------------- summary
def _span(values: list[float], spec: str) -> str:
    """'median (min–max)' of ``values``; '—' when there are none."""
    if not values:
        return "—"
    return f"{format(statistics.median(values), spec)} ({format(min(values), spec)}–{format(max(values), spec)})"


def _num(row: dict, key: str) -> float | None:
    return float(row[key]) if row.get(key) not in (None, "") else None


def steps_to_solve(row: dict, total_env_steps: int) -> float:
    """Env steps to the first evaluation ≥ SOLVED; an unsolved run counts at the budget (a lower
    bound on its true steps to solve)."""
    return _num(row, "solved_at_env_steps") or float(total_env_steps)


def summarise(rows: list[dict], total_env_steps: int) -> str:
    """A markdown table per mode: medians (ranges) over seeds, and training time and simulations/s
    as ratios to the same seed's float32 one-leaf run (speeds only from runs at its thread count);
    then whether any difference in env steps to solve exceeds the float32 one-leaf seeds' spread,
    and the seed-by-seed counts."""
    base = {int(r["seed"]): r for r in rows if r["mode"] == BASELINE}
    lines = ["| mode | seeds | solved | env steps to ≥ 475 | training s to ≥ 475 | ÷ fp32 K=1 (same seed) | "
             "final eval | sims/s | sims/s ÷ fp32 K=1 | env steps/s |",
             "|---|---:|---:|---|---|---|---|---|---|---|"]
    steps_by_mode: dict[str, list[float]] = {}
    for mode in [m.name for m in MODES]:
        runs = [r for r in rows if r["mode"] == mode]
        if not runs:
            continue
        solved = [r for r in runs if _num(r, "solved_at_env_steps") is not None]
        steps = [steps_to_solve(r, total_env_steps) for r in runs]
        steps_by_mode[mode] = steps
        # Time ratios only against a baseline run with the same torch threads (a run made at another
        # thread count, e.g. two runs side by side at 1 thread each, still counts for learning).
        paired = [r for r in runs if int(r["seed"]) in base and r.get("threads") == base[int(r["seed"])].get("threads")]
        wall = [float(r["train_s"]) for r in paired if _num(r, "solved_at_env_steps") is not None]
        wall_ratio = [float(r["train_s"]) / float(base[int(r["seed"])]["train_s"]) for r in paired]
        sims_ratio = [float(r["sims_per_s"]) / float(base[int(r["seed"])]["sims_per_s"]) for r in paired]
        lines.append(
            f"| {mode} | {len(runs)} | {len(solved)}/{len(runs)} | {_span(steps, ',.0f')} | {_span(wall, '.0f')} | "
            f"{_span(wall_ratio, '.2f')} | {_span([float(r['final_eval_return']) for r in runs], '.1f')} | "
            f"{_span([float(r['sims_per_s']) for r in paired], '.0f')} | {_span(sims_ratio, '.2f')} | "
            f"{_span([float(r['env_steps_per_s']) for r in paired], '.1f')} |")
    return "\n".join(lines) + "\n\n" + verdict(steps_by_mode) + "\n" + paired_counts(rows, total_env_steps)


def paired_counts(rows: list[dict], total_env_steps: int) -> str:
    """Seed by seed: in how many seeds each mode needed more, fewer or the same env steps to solve
    as the float32 one-leaf run of that seed (an unsolved run counts at the budget)."""
    base = {int(r["seed"]): steps_to_solve(r, total_env_steps) for r in rows if r["mode"] == BASELINE}
    out = []
    for mode in [m.name for m in MODES if m.name != BASELINE]:
        pairs = [(steps_to_solve(r, total_env_steps), base[int(r["seed"])]) for r in rows if r["mode"] == mode and int(r["seed"]) in base]
        if pairs:
            more, fewer = sum(a > b for a, b in pairs), sum(a < b for a, b in pairs)
            out.append(f"{mode}: more env steps than the same seed's {BASELINE} in {more} of {len(pairs)} seeds, "
                       f"fewer in {fewer}")
    return "\n".join(out)


def verdict(steps_by_mode: dict[str, list[float]]) -> str:
    """Plainly: does any mode's env-steps-to-solve range lie outside the baseline's spread?"""
    if BASELINE not in steps_by_mode:
        return "no float32 one-leaf runs: nothing to compare with"
    lo, hi = min(steps_by_mode[BASELINE]), max(steps_by_mode[BASELINE])
    out = []
    for mode, steps in steps_by_mode.items():
        if mode == BASELINE:
            continue
        med = statistics.median(steps)
        inside = lo <= med <= hi
        out.append(f"{mode}: median {med:,.0f} env steps to solve, "
                   + ("inside" if inside else "OUTSIDE") + f" the float32 one-leaf seeds' range {lo:,.0f}–{hi:,.0f}")
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    """Left: every run's evaluation returns against env steps; right: training time to solve per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip([m.name for m in MODES], ["tab:blue", "tab:orange", "tab:green", "tab:red"], strict=True))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for r in rows:
        pts = [tuple(float(v) for v in p.split(":")) for p in r["evals"].split(";") if p]
        if pts:
            xs, ys = zip(*pts, strict=True)
            left.plot(xs, ys, "o-", color=colors[r["mode"]], alpha=0.7, lw=1,
                      label=r["mode"] if int(r["seed"]) == min(int(x["seed"]) for x in rows) else None)
    left.axhline(SOLVED, color="gray", ls="--", lw=1)
    left.set(xlabel="env steps", ylabel="greedy eval return (10 episodes)", ylim=(0, 520),
             title="CartPole-v1: evaluations of every run")
    left.legend(fontsize=8, loc="lower right")
    seeds = sorted({int(r["seed"]) for r in rows})
    width = 0.8 / len(MODES)
    for i, mode in enumerate(m.name for m in MODES):
        vals = [next((float(r["train_s"]) / 60 for r in rows if r["mode"] == mode and int(r["seed"]) == s), 0.0)
                for s in seeds]
        bars = right.bar([s + (i - 1.5) * width for s in seeds], vals, width, color=colors[mode], label=mode)
        for bar, s in zip(bars, seeds, strict=True):  # hatched: never solved, stopped at the budget
            if any(r["mode"] == mode and int(r["seed"]) == s and not r["solved_at_env_steps"] for r in rows):
                bar.set_hatch("//")
    right.set(xlabel="seed", ylabel="training minutes to first eval ≥ 475 (hatched: budget)", xticks=seeds,
              title="Training time per run, evaluations excluded")
    right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.summarise_only:
        run_missing(args)
    rows = read_rows(Path(args.csv))
    if backfill_train_s(rows, args.runs_dir):
        write_rows(Path(args.csv), rows)
    if not rows:
        print("no runs recorded yet")
        return
    print(summarise(rows, args.total_env_steps))
    plot(rows, Path(args.plot))
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
