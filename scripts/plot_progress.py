"""Plot a ``zerokv train`` learning curve: train and eval return against env steps.

Usage: python scripts/plot_progress.py RUN/progress.csv OUT.png
"""

from __future__ import annotations

import argparse
import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _column(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        if row.get(key):
            xs.append(float(row["env_steps"]))
            ys.append(float(row[key]))
    return xs, ys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="progress.csv written by zerokv train")
    parser.add_argument("png", help="output image path")
    parser.add_argument("--title", default="zerokv on CartPole-v1")
    args = parser.parse_args()
    with open(args.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    x, y = _column(rows, "return/train")
    ax.plot(x, y, label="train return (mean of last 20 episodes)", color="tab:blue", lw=1.2)
    x, y = _column(rows, "return/eval")
    _, std = _column(rows, "return/eval_std")
    if x:
        ax.errorbar(x, y, yerr=std, fmt="o-", color="tab:red", capsize=3, label="greedy eval return (10 episodes, ± std)")
    ax.axhline(475, color="gray", ls="--", lw=1, label="solved (475)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(args.title)
    ax.set_ylim(0, 520)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
