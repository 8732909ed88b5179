"""The training loop behind ``zerokv train``: collect → update → clear caches → rebuild contexts.

One *iteration* = ``collect_steps`` searches over all envs, then ``replay_ratio × env steps``
updates, then the caches are cleared (UniZero: stale caches would mix old and new weights) after
their statistics are logged, and each env's root context is rebuilt with the new weights from its
recent history. With ``search_dtype="bfloat16"`` the searches run on a bfloat16 copy of the
float32 training model, refreshed with ``load_weights_from`` after every update (which also clears
its caches) and before the contexts are rebuilt; the copy is derived, never checkpointed.
Checkpoints are taken only between iterations and hold everything the next iteration reads, so an
interrupted-and-resumed run ends with the same weights as an uninterrupted one. The run stops
early once an evaluation reaches ``stop_return`` (by default the env's registered reward
threshold), and ``OUT/best.pt`` always holds the best-evaluated weights (and config, nothing else).

Checkpoints (replay snapshot, then training checkpoint, then pruning; ``best.pt``) are
``zerokv.rl.checkpointing``; a crash between the steps leaves a complete older pair. Checkpoints
are also taken every ``checkpoint_every_minutes`` of wall time and on SIGTERM/SIGINT
(``zerokv.rl.stopping``), whatever the source. The run directory (``zerokv.rl.rundir``) is
locked, checked and cleaned before the model is built; ``--resume`` runs with the saved config
(with the fields the user set again: ``explicit``), for either source.

Where collection happens is the loop's collection source (``zerokv.rl.sources``): in this
process (`InProcessSource`), or with ``collectors`` > 0 on Ray actors
(``zerokv.rl.distributed.RaySource``, imported only then); the loop is the same.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from zerokv.model.world_model import WorldModel
from zerokv.rl.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
)
from zerokv.rl.checkpointing import CHECKPOINT_SCHEMA, Checkpointing
from zerokv.rl.compiled import compile_note
from zerokv.rl.config import TrainConfig, with_out
from zerokv.rl.envs import env_spec
from zerokv.rl.evaluator import evaluate
from zerokv.rl.factory import (
    env_options,
    make_collector,
    make_replay,
    resolve_env_defaults,
    search_config,
    temperature,
    world_model_config,
)
from zerokv.rl.learner import Learner
from zerokv.rl.observations import observations_as_float
from zerokv.rl.progress import ProgressLog, Tracking, memory_scalars, truncate_progress
from zerokv.rl.rundir import RunDir, resume_changes, resume_config
from zerokv.rl.sources import (
    CACHE_COUNTERS,
    CollectionSource,
    InProcessSource,
    refresh_search_model,
)
from zerokv.rl.stopping import StopSignals
from zerokv.search import Reanalyzer


@dataclass(slots=True)
class TrainResult:
    env_steps: int
    eval_returns: list[float]
    cache_stats: dict
    wall_seconds: float
    out: Path
    solved_at: int | None = None
    """Env steps at the evaluation that reached the stop return (the run stopped there), if any."""


class Trainer(Checkpointing):
    """One training run in ``cfg.out``. Constructing it opens (locks and checks) the run
    directory and, with ``cfg.resume``, loads the latest checkpoint and its config; ``run``
    trains and releases the directory, ``close`` releases it without training."""

    def __init__(self, cfg: TrainConfig, *, explicit: Collection[str] | None = None) -> None:
        """``explicit``: the fields the user set (see ``resume_config``; None: those off their defaults)."""
        cfg = with_out(cfg)  # a new runs/{env}__{seed}__{time} unless --out is given
        self._threads_before = torch.get_num_threads()  # torch's thread count is the process's: put back by close
        self.run_dir = RunDir(cfg.out)
        self.run_dir.open(resume=cfg.resume, overwrite=cfg.overwrite)
        try:
            self._resume: tuple[Path, dict] | None = None
            if cfg.resume:
                path = latest_checkpoint(self.run_dir.checkpoints)
                if path is None:
                    raise ValueError(f"--resume: no checkpoint in {self.run_dir.checkpoints}")
                state = load_checkpoint(path)
                if state.get("schema") != CHECKPOINT_SCHEMA:
                    raise CheckpointError(f"checkpoint {path} has layout {state.get('schema', 1)}, this zerokv "
                                          f"resumes layout {CHECKPOINT_SCHEMA}; `zerokv eval` can still read it")
                cfg = resume_config(state["config"], cfg, explicit)
                self.run_dir.notes.extend(resume_changes(state["config"], cfg))
                self._resume = (path, state)
            self._build(resolve_env_defaults(cfg))
        except BaseException:
            self.close()
            raise

    def _build(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.model_config = world_model_config(cfg)
        self.model = WorldModel(self.model_config)
        self.search_model = self._make_search_model()
        self.learner = Learner(self.model, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
                               grad_clip=cfg.grad_clip, target_update_rate=cfg.target_update_rate,
                               fresh_value_targets=cfg.fresh_value_targets, td_steps=cfg.td_steps,
                               value_bootstrap=cfg.value_bootstrap, target_label_smoothing=cfg.target_label_smoothing,
                               dtype=cfg.learner_dtype, compile=cfg.compile)
        spec = env_spec(cfg.env, env_options(cfg))
        self.replay = make_replay(cfg, self.model_config)
        self.search = search_config(cfg)
        self.source = self._make_source()
        self.reanalyzer = None
        if cfg.reanalyze_per_iteration:
            self.reanalyzer = Reanalyzer(self.search_model, self.search, min(cfg.reanalyze_batch, cfg.reanalyze_per_iteration))
        self.reanalysis_rng = np.random.default_rng([cfg.seed, 1])  # root noise of reanalysis searches
        self.out = Path(cfg.out)
        self.run_id = uuid.uuid4().hex[:16]  # names this run in its replay snapshots; kept on resume
        self.env_steps = self.iteration = 0
        self.refill_target = 0
        """Replay steps to collect before updates resume, after a resume without a replay snapshot."""
        self.recent_returns: list[float] = []
        self.eval_returns: list[float] = []
        self.eval_step: int | None = None
        """Env steps of the latest evaluation (None: none yet in this process)."""
        self.best_eval_return = -np.inf
        self.stop_return = cfg.stop_return if cfg.stop_return is not None else spec.reward_threshold
        self.cache_totals = dict.fromkeys(CACHE_COUNTERS, 0)  # summed over iterations
        self.wall_before = 0.0
        """Training wall seconds of the sessions before this one (from the checkpoint resumed)."""
        self.session_start = time.monotonic()

    def wall_seconds(self) -> float:
        """The run's training wall time so far, over all its sessions."""
        return self.wall_before + time.monotonic() - self.session_start

    def close(self) -> None:
        """Closes the envs, releases the run directory and gives the process back its torch thread
        count (``run`` does it when it ends)."""
        try:
            if getattr(self, "source", None) is not None:
                self.source.close()
        finally:
            self.run_dir.close()
            torch.set_num_threads(self._threads_before)

    def _make_source(self) -> CollectionSource:
        """Collection in this process, or on ``cfg.collectors`` Ray actors."""
        if self.cfg.collectors:  # ray is imported only here, when it is asked for
            from zerokv.rl.distributed import RaySource

            return RaySource(self.cfg, self.replay, self.learner)
        return InProcessSource(self.cfg, make_collector(self.cfg, self.search_model, self.replay, seed=self.cfg.seed))

    def _make_search_model(self) -> WorldModel:
        """The model the searches use: the training model itself, or a copy in ``search_dtype``."""
        if self.cfg.search_dtype == self.model_config.dtype:
            return self.model
        return self.model.copy_with(dtype=self.cfg.search_dtype)  # leaves training's RNG untouched

    # ----------------------------------------------------------------------- loop
    def run(self) -> TrainResult:
        start = time.monotonic()
        try:
            for note in self.run_dir.notes:
                print(note)
            self._start()
            solved_at = self._loop()
        finally:
            self.close()
        if self.cfg.compile:
            print(compile_note(self.learner.parts, self.search_model.compile_report))
        if self.learner.updates == 0:
            print(self._no_learning_note())
        if solved_at is not None:
            print(f"solved: evaluation return {np.mean(self.eval_returns):.1f} >= {self.stop_return:g} "
                  f"at {solved_at} env steps; stopping")
        totals = dict(self.cache_totals, backend=self.model_config.cache_backend)
        queries = totals["hits"] + totals["misses"]
        totals["hit_rate"] = totals["hits"] / queries if queries else 0.0
        return TrainResult(self.env_steps, self.eval_returns, totals, time.monotonic() - start, self.out, solved_at)

    def _no_learning_note(self) -> str:
        """Why a run ended without a single weight update, and what to change."""
        cfg = self.cfg
        return (f"note: the run ended at {self.env_steps} env steps without a weight update, so its weights are "
                f"the initial ones: replay receives whole segments ({cfg.segment_length} steps per env, or an "
                f"episode's end) and updates start once it holds {max(cfg.min_replay_steps, 1)} steps; it held "
                f"{self.replay.num_steps}. Raise --total-env-steps (e.g. above {cfg.num_envs * cfg.segment_length} "
                f"= num_envs x segment_length) or lower --segment-length / --min-replay-steps")

    def _start(self) -> None:
        """Restores a resumed run (progress.csv loses the rows after its checkpoint) and writes
        the resolved config."""
        if self._resume is not None:
            path, state = self._resume
            self._resume = None
            replay_note = self.restore(state)
            dropped = truncate_progress(self.out / "progress.csv", self.env_steps)
            print(f"resumed from {path} at {self.env_steps} env steps"
                  + (f"; dropped {dropped} progress.csv rows written after it" if dropped else ""))
            print(replay_note)
        # the run's settings, not how this invocation opened it: a resumed run's config.json (used
        # as --config for a new run) must not ask for a resume or an overwrite
        self.run_dir.write_config(replace(self.cfg, resume=False, overwrite=False).to_dict())
        print(f"config (saved in {self.out / 'config.json'}):\n" + self.cfg.to_yaml().rstrip())
        self.source.start(env_steps=self.env_steps, run_id=self.run_id)

    def _loop(self) -> int | None:
        """Iterations until the budget is spent, an evaluation reaches the stop return (whose
        env steps it returns) or a stop signal arrives (then it checkpoints and exits with
        ``128 + signal``)."""
        cfg = self.cfg
        tracking = Tracking(cfg.wandb_project, cfg.wandb_entity, self.run_id) if cfg.track else None
        log = ProgressLog(self.out, self.env_steps, self.source.progress_fields, config=cfg.to_dict(),
                          tracking=tracking)
        bar = tqdm(total=cfg.total_env_steps, initial=self.env_steps, disable=not cfg.progress,
                   unit="step", dynamic_ncols=True)
        next_eval = _next_multiple(self.env_steps, cfg.eval_every) if cfg.eval_every else None
        next_ckpt = _next_multiple(self.env_steps, cfg.checkpoint_every)
        ckpt_seconds = None if cfg.checkpoint_every_minutes is None else 60.0 * cfg.checkpoint_every_minutes
        last_save = time.monotonic()
        solved_at = None
        if self.stop_return is not None:
            print(f"stops early once an evaluation's mean return reaches {self.stop_return:g}")
        try:
            with StopSignals() as stop:
                while self.env_steps < cfg.total_env_steps and solved_at is None and not stop.requested:
                    row = self._iteration()
                    bar.update(cfg.iteration_env_steps)
                    if self.recent_returns:
                        bar.set_postfix(ret=f"{np.mean(self.recent_returns[-20:]):.1f}", refresh=False)
                    last = self.env_steps >= cfg.total_env_steps  # the final evaluation is logged too
                    if last or (next_eval is not None and self.env_steps >= next_eval and not stop.requested):
                        row.update(self._evaluate(final=last))
                        next_eval = _next_multiple(self.env_steps, cfg.eval_every) if cfg.eval_every else None
                        if self.stop_return is not None and row["return/eval"] >= self.stop_return:
                            solved_at = self.env_steps
                    log.write(row, self.env_steps)
                    due = ckpt_seconds is not None and time.monotonic() - last_save >= ckpt_seconds
                    if self.env_steps >= next_ckpt or last or solved_at or due or stop.requested:
                        self.save()
                        last_save = time.monotonic()
                        next_ckpt = _next_multiple(self.env_steps, cfg.checkpoint_every)
            if stop.requested:
                raise SystemExit(stop.exit_status(self.env_steps, self.out))
            if self.eval_step != self.env_steps:  # resumed at the end: no iteration ran
                log.write({"env_steps": self.env_steps, "iteration": self.iteration, **self._evaluate(final=True)},
                          self.env_steps)
            log.finish({"return/eval": float(np.mean(self.eval_returns)),
                        "return/eval_std": float(np.std(self.eval_returns))})
        finally:
            bar.close()
            log.close()
        return solved_at

    def _iteration(self) -> dict[str, float]:
        """Collect (the source adds the segments to replay), update, refresh the search model,
        rebuild the root contexts; the iteration's progress row."""
        cfg = self.cfg
        t0 = time.monotonic()
        got = self.source.collect(self.env_steps)
        collect_seconds = time.monotonic() - t0
        self.env_steps += got.env_steps
        self.recent_returns = (self.recent_returns + got.finished_returns)[-100:]
        for key in CACHE_COUNTERS:
            self.cache_totals[key] += got.cache[key]
        row: dict[str, float] = {
            "env_steps": self.env_steps, "iteration": self.iteration, "temperature": temperature(cfg, self.env_steps),
            "cache/hit_rate": got.hit_rate, "cache/hits": got.cache["hits"], "cache/evictions": got.cache["evictions"],
            "cache/fallbacks": got.cache["fallbacks"], "cache/misses": got.cache["misses"],
            "speed/sims_per_s": got.simulations / max(got.search_seconds, 1e-9), **got.row,
        }
        t_learn = time.monotonic()
        losses = self._update(got.env_steps, row)
        learner_seconds = time.monotonic() - t_learn
        reanalyze = self.reanalyzer is not None and bool(losses)
        if self.source.refreshes_search_model or reanalyze:
            refresh_search_model(self.search_model, self.model)
        if reanalyze:  # with the new weights, in an arena of its own
            row.update(self._reanalyze())
        self.search_model.reset_cache_stats()
        self.source.weights_updated(self.learner.updates)
        self.iteration += 1
        row.update({"time/learner_s": learner_seconds, "time/wall_s": self.wall_seconds(), **memory_scalars()})
        if got.local:
            elapsed = max(time.monotonic() - t0, 1e-9)
            row.update({
                "speed/env_steps_per_s": got.env_steps / elapsed, "speed/collect_share": collect_seconds / elapsed,
                # Where the iteration's wall time went; the rest (rebuilding root contexts, refreshing
                # the search copy, reanalysis, bookkeeping) is time/iteration_s minus these three.
                "time/search_s": got.search_seconds, "time/env_s": got.env_seconds, "time/iteration_s": elapsed,
            })
        return row

    def _update(self, new_env_steps: int, row: dict[str, float]) -> list[dict[str, float]]:
        """The updates owed for ``new_env_steps`` (``replay_ratio`` per step; none until replay
        holds ``min_replay_steps`` and any refill target); adds their mean losses, the learner's
        updates/s, replay's size and the recent training return to ``row``."""
        cfg = self.cfg
        losses: list[dict[str, float]] = []
        t0 = time.monotonic()
        if self.replay.num_steps and self.replay.num_steps >= max(cfg.min_replay_steps, self.refill_target):
            self.refill_target = 0  # refilled: later evictions must not stop the updates again
            for _ in range(max(1, round(cfg.replay_ratio * new_env_steps))):
                losses.append(self.learner.update(self.replay.sample(cfg.batch_size)))
            row["speed/updates_per_s"] = len(losses) / max(time.monotonic() - t0, 1e-9)
        for key in losses[0] if losses else ():
            row[f"loss/{key}"] = float(np.mean([entry[key] for entry in losses]))
        row.update({"replay/steps": self.replay.num_steps, "replay/bytes": self.replay.nbytes})
        if self.recent_returns:
            row["return/train"] = float(np.mean(self.recent_returns[-20:]))
        return losses

    def _reanalyze(self) -> dict[str, float]:
        """Refresh stored search targets with the current weights, all roots in wide batches."""
        positions = self.replay.sample_positions(self.cfg.reanalyze_per_iteration)
        history = self.replay.histories(positions, self.model_config.root_history_steps)
        obs = observations_as_float(history.obs, self.model_config.device)  # [n, H+1, *obs_shape]
        out = self.reanalyzer(obs, history.actions, history.lengths, rng=self.reanalysis_rng)
        policy_tv = self.replay.update_targets(positions, out.search_policy, out.root_value)
        return {"reanalyze/roots_per_s": out.roots_per_second, "reanalyze/policy_tv": policy_tv}

    def _evaluate(self, final: bool = False) -> dict[str, float]:
        """Greedy evaluation: ``eval_episodes`` episodes, or ``final_eval_episodes`` at the end."""
        cfg = self.cfg
        episodes = cfg.final_eval_episodes if final and cfg.final_eval_episodes is not None else cfg.eval_episodes
        self.eval_returns = evaluate(self.model.state_dict(), self.search_model.config, cfg.env,
                                     episodes=episodes, seed=cfg.seed + 10_000, search=self.search,
                                     env_options=env_options(cfg), max_steps=cfg.eval_max_steps,
                                     vector_env=cfg.vector_env)
        self.eval_step = self.env_steps
        mean = float(np.mean(self.eval_returns))
        tqdm.write(f"[eval] env_steps={self.env_steps} return={mean:.1f} ± {np.std(self.eval_returns):.1f}")
        if mean > self.best_eval_return:
            self.best_eval_return = mean
            self.save_best()  # the best weights survive a later dip
        return {"return/eval": mean, "return/eval_std": float(np.std(self.eval_returns))}


def _next_multiple(value: int, every: int) -> int:
    return (value // every + 1) * every


def train(cfg: TrainConfig, *, explicit: Collection[str] | None = None) -> TrainResult:
    """Trains in this process, or with ``cfg.collectors`` collector actors on Ray (a ``--resume``
    keeps the saved ``collectors`` unless set again). ``explicit`` names the fields the user set
    (a ``--resume`` keeps the saved value of every other field)."""
    return Trainer(cfg, explicit=explicit).run()
