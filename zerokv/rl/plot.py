"""``zerokv plot``: learning curves of one or several runs from their ``progress.csv``.

For each run: the greedy evaluation return (mean, with a ± std band) and the training return
(mean of the last 20 finished episodes) against env steps, in one colour per run, and beside it
the same against the run's training wall time in hours (``time/wall_s``, summed over resumed
sessions), when its progress.csv has that column (``--no-wall`` leaves it out); a dashed line
at each env's registered reward threshold (``gymnasium.spec(env).reward_threshold``, the env read
from the run's ``config.json`` or given with ``--env``). The y-axis fits the data and the
threshold, whatever the sign of the returns (Acrobot's are negative). A run is a directory
holding ``progress.csv`` or a CSV file itself (then ``--env`` names its env, if it has no
``config.json`` beside it).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import tyro

from zerokv.io import atomic_write

__all__ = ["Curve", "PlotArgs", "plot", "read_curve", "reward_threshold", "y_limits"]

PROGRESS_NAME = "progress.csv"
WALL = "time/wall_s"
"""The progress.csv column of the run's training wall time, seconds."""
DEFAULT_MANY = "curves.png"
"""Default output of several runs (one run: RUN_DIR/curve.png)."""


@dataclass
class PlotArgs:
    """Plot evaluation and training return against env steps for one or several runs."""

    runs: tyro.conf.Positional[tuple[str, ...]]
    """Run directories (holding progress.csv), or progress CSV files."""
    out: str | None = None
    """Output image (PNG, SVG or PDF by suffix; default: RUN_DIR/curve.png for one run, curves.png
    for several)."""
    env: str | None = None
    """Env id whose reward threshold is drawn, for runs without a config.json (e.g. a bare CSV)."""
    labels: tuple[str, ...] = ()
    """A legend label per run (default: each run's directory or file name)."""
    title: str | None = None
    """Title (default: the env id, or the env ids of the runs)."""
    no_train: bool = False
    """Leave out the training return."""
    no_wall: bool = False
    """Leave out the second panel (return against training wall time)."""


@dataclass(frozen=True, slots=True)
class Curve:
    """One run's columns (lists of equal length per pair)."""

    label: str
    env: str | None
    eval_steps: list[float]
    eval_mean: list[float]
    eval_std: list[float]
    train_steps: list[float]
    train_mean: list[float]
    eval_hours: list[float] = dataclasses.field(default_factory=list)
    """Training wall hours of each evaluation (empty when progress.csv has no time/wall_s)."""
    train_hours: list[float] = dataclasses.field(default_factory=list)


def read_curve(run: str | Path, *, env: str | None = None, label: str | None = None) -> Curve:
    """The curve of a run directory or progress CSV (ValueError naming a missing file or column)."""
    path = Path(run)
    csv_path = path / PROGRESS_NAME if path.is_dir() else path
    if not csv_path.is_file():
        raise ValueError(f"{csv_path} does not exist (give a run directory holding {PROGRESS_NAME}, or a CSV file)")
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "env_steps" not in rows[0]:
        raise ValueError(f"{csv_path} has no env_steps column: not a zerokv progress.csv")
    config = csv_path.parent / "config.json"
    if env is None and config.is_file():
        env = json.loads(config.read_text()).get("env")
    ev = _columns(rows, "return/eval", "return/eval_std", WALL)
    tr = _columns(rows, "return/train", WALL)
    name = label or (path.name if path.is_dir() else path.stem)
    has_wall = bool(rows) and WALL in rows[0]
    hours = [[s / 3600 for s in col] if has_wall else [] for col in (ev[3], tr[2])]
    return Curve(name, env, ev[0], ev[1], ev[2], tr[0], tr[1], hours[0], hours[1])


def _columns(rows: list[dict], *keys: str) -> list[list[float]]:
    """``[steps, key0, key1, …]`` over the rows where ``keys[0]`` has a value (a missing
    later key reads 0)."""
    out: list[list[float]] = [[] for _ in range(len(keys) + 1)]
    for row in rows:
        if row.get(keys[0]):
            out[0].append(float(row["env_steps"]))
            for i, key in enumerate(keys):
                out[i + 1].append(float(row.get(key) or 0.0))
    return out


def reward_threshold(env: str | None) -> float | None:
    """gymnasium's registered reward threshold of ``env`` (None if unknown or unregistered)."""
    if env is None:
        return None
    import gymnasium

    from zerokv.rl.envs import is_atari

    try:
        if is_atari(env):
            import ale_py

            gymnasium.register_envs(ale_py)
        return gymnasium.spec(env).reward_threshold
    except (ImportError, gymnasium.error.Error):
        return None


def plot(args: PlotArgs) -> Path:
    """Draws the runs' curves into ``args.out``; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not args.runs:
        raise ValueError("no run given: zerokv plot RUN_DIR [RUN_DIR ...]")
    if args.labels and len(args.labels) != len(args.runs):
        raise ValueError(f"{len(args.labels)} labels for {len(args.runs)} runs; give one per run or none")
    labels = args.labels or (None,) * len(args.runs)
    curves = [read_curve(run, env=args.env, label=label) for run, label in zip(args.runs, labels, strict=True)]
    if not any(c.eval_steps or c.train_steps for c in curves):
        raise ValueError(f"{', '.join(args.runs)}: no return/eval or return/train values to plot yet")
    out = Path(args.out) if args.out else (
        _run_dir(args.runs[0]) / "curve.png" if len(args.runs) == 1 else Path(DEFAULT_MANY))
    walls = not args.no_wall and any(c.eval_hours or c.train_hours for c in curves)
    fig, axes = plt.subplots(1, 2 if walls else 1, figsize=(12 if walls else 7, 4.2), dpi=120, squeeze=False)
    envs = sorted({c.env for c in curves if c.env})
    for ax, x in zip(axes[0], ("steps", "hours"), strict=False):
        _draw(ax, curves, x, envs, args.no_train)
        ax.set_ylabel("episode return")
        ax.grid(alpha=0.3)
    axes[0][0].set_xlabel("env steps")
    axes[0][0].legend(loc="best", fontsize=8)
    if walls:
        axes[0][1].set_xlabel("training wall time (hours)")
    fig.suptitle(args.title or (", ".join(envs) if envs else "zerokv"))
    fig.tight_layout()
    with atomic_write(out) as f:  # creates the parent directory
        fig.savefig(f, format=out.suffix.lstrip(".").lower() or "png")
    plt.close(fig)
    print(f"wrote {out}")
    return out


def _draw(ax, curves: list[Curve], x: str, envs: list[str], no_train: bool) -> None:
    """One panel: every curve's returns against env steps (``x="steps"``) or wall hours."""
    ys: list[float] = []
    for i, c in enumerate(curves):
        color = f"C{i}"
        name = c.label if len(curves) > 1 else ""
        train_x, eval_x = (c.train_steps, c.eval_steps) if x == "steps" else (c.train_hours, c.eval_hours)
        if train_x and not no_train:
            ax.plot(train_x, c.train_mean, color=color, lw=1, alpha=0.45,
                    label=f"{name} train (last 20 episodes)".strip())
            ys += c.train_mean
        if eval_x:
            low = [m - s for m, s in zip(c.eval_mean, c.eval_std, strict=True)]
            high = [m + s for m, s in zip(c.eval_mean, c.eval_std, strict=True)]
            ax.fill_between(eval_x, low, high, color=color, alpha=0.18, lw=0)
            ax.plot(eval_x, c.eval_mean, "o-", color=color, lw=1.8, ms=4, label=f"{name} greedy eval (± std)".strip())
            ys += low + high
    for env in envs:
        threshold = reward_threshold(env)
        if threshold is not None and math.isfinite(threshold):
            ax.axhline(threshold, color="gray", ls="--", lw=1, label=f"{env} solved ({threshold:g})")
            ys.append(threshold)
    if ys:
        ax.set_ylim(*y_limits(ys))


def _run_dir(run: str) -> Path:
    path = Path(run)
    return path if path.is_dir() else path.parent


def y_limits(values: list[float]) -> tuple[float, float]:
    """A y-range holding every value with a 5% margin, whatever their sign."""
    low, high = min(values), max(values)
    pad = 0.05 * (high - low) or max(1.0, 0.05 * abs(high))
    return low - pad, high + pad
