"""progress.csv and TensorBoard: one row of scalars per iteration, and never a row twice.

Rows are written after each iteration, before its checkpoint, so a trainer killed between the
two leaves rows a resume would write again: `truncate_progress` cuts the CSV back to the
checkpoint's step first, and TensorBoard purges the events past it (`purge_step`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from zerokv.rl.checkpoint import TEMP_SUFFIX

__all__ = ["CSV_FIELDS", "ProgressLog", "truncate_progress"]

CSV_FIELDS = ["env_steps", "iteration", "temperature", "return/train", "return/eval", "return/eval_std",
              "loss/total", "loss/latent", "loss/reward", "loss/value", "loss/policy", "loss/entropy",
              "loss/grad_norm", "cache/hit_rate", "cache/evictions", "cache/fallbacks", "cache/misses",
              "speed/sims_per_s", "speed/env_steps_per_s", "reanalyze/roots_per_s", "reanalyze/policy_tv",
              "replay/steps", "replay/bytes", "policy_lag", "speed/updates_per_s",
              "time/search_s", "time/env_s", "time/learner_s", "time/iteration_s"]
"""Columns of progress.csv (TensorBoard gets every key of a row). `policy_lag`: learner updates
minus the weights version the iteration's new segments were collected with, on arrival.
`time/*`: seconds of the iteration spent searching, stepping envs and updating, and in all."""


class ProgressLog:
    """Appends rows to `out/progress.csv` and `out/tb/`, continuing at `env_steps`.

    A new CSV gets the columns `CSV_FIELDS + extra_fields`; rows appended to an existing one keep
    its header's columns (a run resumed by a zerokv with more columns stays aligned)."""

    def __init__(self, out: Path, env_steps: int, extra_fields: tuple[str, ...] = ()) -> None:
        self.writer = SummaryWriter(str(out / "tb"), purge_step=env_steps or None)
        self.csv_path = out / "progress.csv"
        self.csv_file = self.csv_path.open("a+", newline="")
        self.csv_file.seek(0)
        header = next(csv.reader(self.csv_file), None)
        self.csv_file.seek(0, os.SEEK_END)
        self.csv = csv.DictWriter(self.csv_file, fieldnames=header or CSV_FIELDS + list(extra_fields),
                                  extrasaction="ignore")
        if header is None:
            self.csv.writeheader()

    def write(self, row: dict[str, float], env_steps: int) -> None:
        for key, value in row.items():
            self.writer.add_scalar(key, value, env_steps)
        self.csv.writerow(row)
        self.csv_file.flush()

    def close(self) -> None:
        self.writer.close()
        self.csv_file.close()


def truncate_progress(path: Path, env_steps: int) -> int:
    """Drops the rows of the CSV at `path` after `env_steps` (written after the checkpoint a
    resume starts from, e.g. before a kill); returns how many were dropped."""
    if not path.is_file():
        return 0
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "env_steps" not in rows[0]:
        return 0
    col = rows[0].index("env_steps")
    keep = [rows[0]] + [r for r in rows[1:] if len(r) > col and r[col] and float(r[col]) <= env_steps]
    dropped = len(rows) - len(keep)
    if dropped:
        tmp = path.parent / f".{path.name}.{os.getpid()}{TEMP_SUFFIX}"
        with tmp.open("w", newline="") as f:
            csv.writer(f).writerows(keep)
        os.replace(tmp, path)
    return dropped
