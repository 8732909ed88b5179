"""progress.csv, TensorBoard and (with ``--track``) Weights & Biases: one row of scalars per
iteration, and never a row twice.

Every sink gets the same rows. At the start of a run TensorBoard gets the resolved config as a
text table (``config``) and W&B as its run config; at the end (`ProgressLog.finish`) both get the
final evaluation: TensorBoard as the ``final/…`` scalars and as the metrics of an hparams entry
over the config, W&B in its run summary.

Rows are written after each iteration, before its checkpoint, so a trainer killed between the
two leaves rows a resume would write again: `truncate_progress` cuts the CSV back to the
checkpoint's step first, and TensorBoard purges the events past it (`purge_step`). A resumed W&B
run continues the same W&B run (its id is the run's), which ignores the steps it already has.
"""

from __future__ import annotations

import csv
import math
import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from zerokv.checks import install_hint
from zerokv.io import atomic_write

__all__ = ["CSV_FIELDS", "ProgressLog", "Tracking", "memory_scalars", "truncate_progress"]

CSV_FIELDS = ["env_steps", "iteration", "temperature", "return/train", "return/eval", "return/eval_std",
              "loss/total", "loss/latent", "loss/reward", "loss/value", "loss/policy", "loss/entropy",
              "loss/grad_norm", "cache/hit_rate", "cache/hits", "cache/evictions", "cache/fallbacks", "cache/misses",
              "speed/sims_per_s", "speed/env_steps_per_s", "reanalyze/roots_per_s", "reanalyze/policy_tv",
              "replay/steps", "replay/bytes", "policy_lag", "speed/updates_per_s",
              "time/search_s", "time/env_s", "time/learner_s", "time/iteration_s", "time/wall_s",
              "memory/rss_mb", "memory/peak_rss_mb"]
"""Columns of progress.csv (TensorBoard and W&B get every key of a row). `policy_lag`: learner
updates minus the weights version the iteration's new segments were collected with, on arrival.
`time/*`: seconds of the iteration spent searching, stepping envs and updating, and in all;
`time/wall_s`: the run's training wall time so far, summed over its sessions (a resumed run goes
on from its checkpoint's). `memory/*`: this process's resident memory now and at its peak, MiB."""
FINAL_PREFIX = "final/"
"""Tag prefix of the final evaluation's scalars (the hparams entry's metrics)."""


def memory_scalars() -> dict[str, float]:
    """``memory/rss_mb`` (resident now, from /proc where there is one) and ``memory/peak_rss_mb``
    of this process, MiB: a long run's memory should go flat once replay is full."""
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak_kib / (1024 * 1024) if sys.platform == "darwin" else peak_kib / 1024  # bytes on macOS
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        rss = peak
    return {"memory/rss_mb": rss, "memory/peak_rss_mb": max(peak, rss)}  # the kernel's peak can lag a page or so


@dataclass(frozen=True, slots=True)
class Tracking:
    """Where ``--track`` logs: a W&B project (and entity) and the id of this run there."""

    project: str
    entity: str | None
    run_id: str
    """W&B run id: the training run's own id, kept on resume, so a resume continues the W&B run."""


class ProgressLog:
    """Appends rows to `out/progress.csv`, `out/tb/` and W&B (with `tracking`), continuing at
    `env_steps`; `config` (the resolved config) is logged once, at the start.

    A new CSV gets the columns `CSV_FIELDS + extra_fields`; rows appended to an existing one keep
    its header's columns (a run resumed by a zerokv with more columns stays aligned)."""

    def __init__(self, out: Path, env_steps: int, extra_fields: tuple[str, ...] = (), *, config: dict,
                 tracking: Tracking | None = None) -> None:
        self.config = config
        self.wandb_run = _start_wandb(out, config, tracking) if tracking is not None else None
        self.writer = SummaryWriter(str(out / "tb"), purge_step=env_steps or None)
        self.writer.add_text("config", config_table(config), env_steps)
        self.csv_path = out / "progress.csv"
        self.csv_file = self.csv_path.open("a+", newline="")
        self.csv_file.seek(0)
        header = next(csv.reader(self.csv_file), None)
        self.csv_file.seek(0, os.SEEK_END)
        self.csv = csv.DictWriter(self.csv_file, fieldnames=header or CSV_FIELDS + list(extra_fields),
                                  extrasaction="ignore")
        if header is None:
            self.csv.writeheader()
        self.env_steps = env_steps

    def write(self, row: dict[str, float], env_steps: int) -> None:
        for key, value in row.items():
            self.writer.add_scalar(key, value, env_steps)
        self.csv.writerow(row)
        self.csv_file.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(dict(row), step=env_steps)
        self.env_steps = env_steps

    def finish(self, final: dict[str, float]) -> None:
        """The final evaluation (e.g. ``{"return/eval": …, "return/eval_std": …}``): TensorBoard
        scalars ``final/…`` and an hparams entry (the config's values, these as its metrics); the
        W&B run's summary."""
        metrics = {FINAL_PREFIX + key: value for key, value in final.items()}
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, self.env_steps)
        for summary in hparams(hparam_values(self.config), metrics):
            self.writer.file_writer.add_summary(summary, self.env_steps)
        if self.wandb_run is not None:
            self.wandb_run.summary.update(metrics)

    def close(self) -> None:
        self.writer.close()
        self.csv_file.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def config_table(config: dict) -> str:
    """The config as a Markdown table (TensorBoard renders it under TEXT), as cleanrl logs it."""
    rows = "\n".join(f"|{key}|{value}|" for key, value in config.items())
    return "|param|value|\n|-|-|\n" + rows


def hparam_values(config: dict) -> dict[str, bool | int | float | str]:
    """The config's values as TensorBoard hparams accept them: None and lists become text."""
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in config.items()}


def _start_wandb(out: Path, config: dict, tracking: Tracking):
    """A W&B run writing to `out/wandb` (offline too: `wandb sync OUT/wandb/offline-run-*`
    uploads it later); W&B is an optional extra, imported only here."""
    try:
        import wandb
    except ImportError as e:
        raise ImportError("--track logs to Weights & Biases, which is not installed: " +
                          install_hint("track")) from e
    return wandb.init(project=tracking.project, entity=tracking.entity, id=tracking.run_id, resume="allow",
                      name=out.name, config=config, dir=str(out))  # W&B adds the wandb/ itself


def truncate_progress(path: Path, env_steps: int) -> int:
    """Drops the rows of the CSV at `path` after `env_steps` (written after the checkpoint a
    resume starts from, e.g. before a kill), and repairs a cut or damaged file: rows without the
    header's columns or without a numeric env_steps (a write cut by a full disk or a kill) are
    dropped too. Returns how many rows were dropped. A file that is not a zerokv progress.csv
    (no env_steps in its header, not CSV) is refused with a ValueError, never appended to."""
    if not path.is_file():
        return 0
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except (csv.Error, UnicodeDecodeError) as e:
        raise ValueError(f"{path} cannot be read as CSV ({e}); move it away (a new one is started) or restore it") from None
    if not rows:
        return 0
    if "env_steps" not in rows[0]:
        raise ValueError(f"{path} has no env_steps column in its header {rows[0][:4]}…: not a zerokv progress.csv or "
                         "damaged; move it away (a new one is started) or restore it")
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        unterminated = f.read(1) != b"\n"  # a last row cut before its newline cannot be told from a whole one
    cut = rows[1:][-1:] if unterminated else []
    col, width = rows[0].index("env_steps"), len(rows[0])
    keep = [rows[0]] + [r for r in rows[1:len(rows) - len(cut)] if len(r) == width
                        and (step := _number(r[col])) is not None and step <= env_steps]
    dropped = len(rows) - len(keep)
    if dropped or unterminated:  # the old file stays as it was until the repaired one replaces it
        with atomic_write(path, "w", newline="") as f:
            csv.writer(f).writerows(keep)
    return dropped


def _number(text: str) -> float | None:
    """``text`` as a finite float, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
