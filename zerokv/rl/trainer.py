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

A checkpoint comes in two parts, written in this order: the replay snapshot
``checkpoints/replay_{step}/`` (``zerokv.rl.snapshot``: streamed, atomic), then the training
checkpoint ``checkpoints/ckpt_{step}.pt`` (weights, optimizer, counters, RNG states, resolved
config, and the snapshot's name and hash); then all but the newest ``keep_checkpoints`` training
checkpoints and every other snapshot are deleted. A crash between the steps leaves a complete
older pair. The run directory (``zerokv.rl.rundir``) is locked, checked and cleaned before the
model is built; ``--resume`` runs with the saved config. With ``collectors`` > 0, ``train`` runs
``zerokv.rl.distributed.DistributedTrainer``: this loop with collection on Ray actors.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from zerokv.model.linear import forget_packed_weights
from zerokv.model.world_model import WorldModel
from zerokv.rl.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from zerokv.rl.collector import Collector
from zerokv.rl.compiled import compile_note
from zerokv.rl.config import TrainConfig, with_out
from zerokv.rl.envs import env_spec
from zerokv.rl.evaluator import evaluate
from zerokv.rl.factory import (
    check_same_actions,
    env_options,
    make_collector,
    make_replay,
    model_config_dict,
    resolve_env_defaults,
    search_config,
    temperature,
    world_model_config,
)
from zerokv.rl.learner import Learner
from zerokv.rl.observations import observations_as_float
from zerokv.rl.progress import ProgressLog, Tracking, truncate_progress
from zerokv.rl.rundir import RunDir, resume_config
from zerokv.rl.snapshot import list_snapshots, read_snapshot, snapshot_path, write_snapshot
from zerokv.search import Reanalyzer

CHECKPOINT_SCHEMA = 2
"""Layout of a training checkpoint's payload; 2: replay in a separate snapshot, no frames."""


@dataclass(slots=True)
class TrainResult:
    env_steps: int
    eval_returns: list[float]
    cache_stats: dict
    wall_seconds: float
    out: Path
    solved_at: int | None = None
    """Env steps at the evaluation that reached the stop return (the run stopped there), if any."""


class Trainer:
    """One training run in ``cfg.out``. Constructing it opens (locks and checks) the run
    directory and, with ``cfg.resume``, loads the latest checkpoint and its config; ``run``
    trains and releases the directory, ``close`` releases it without training."""

    def __init__(self, cfg: TrainConfig) -> None:
        cfg = with_out(cfg)  # a new runs/{env}__{seed}__{time} unless --out is given
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
                cfg = resume_config(state["config"], cfg)
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
                               dtype=cfg.learner_dtype, compile=cfg.compile)
        spec = env_spec(cfg.env, env_options(cfg))
        self.replay = make_replay(cfg, self.model_config)
        self.search = search_config(cfg)
        self.collector: Collector | None = self._make_collector()
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
        self.cache_totals = {"hits": 0, "misses": 0, "evictions": 0, "fallbacks": 0}  # summed over iterations

    def close(self) -> None:
        """Closes the envs and releases the run directory (``run`` does it when it ends)."""
        if getattr(self, "collector", None) is not None:
            self.collector.close()
        self.run_dir.close()

    # ------------------------------------------ collection (DistributedTrainer replaces these)
    def _make_collector(self) -> Collector | None:
        return make_collector(self.cfg, self.search_model, self.replay, seed=self.cfg.seed)

    def _collection_state(self) -> dict | None:
        """What a checkpoint keeps of collection: the collector's episodes."""
        return self.collector.state_dict()

    def _restore_collection(self, state: dict | None) -> None:
        """Continues the checkpoint's episodes, root contexts rebuilt (the caches are empty)."""
        self.collector.load_state_dict(state)
        self.collector.weights_version = self.learner.updates
        self.collector.rebuild_contexts()

    def _progress_fields(self) -> tuple[str, ...]:
        """progress.csv columns beyond `CSV_FIELDS`."""
        return ()

    def _make_search_model(self) -> WorldModel:
        """The model the searches use: the training model itself, or a copy in ``search_dtype``."""
        if self.cfg.search_dtype == self.model_config.dtype:
            return self.model
        return self.model.copy_with(dtype=self.cfg.search_dtype)  # leaves training's RNG untouched

    def _refresh_search_model(self) -> None:
        """After a weight update: clear the search caches (stale keys/values would mix old and new
        weights); a separate search copy gets the new weights, which clears its caches too."""
        if self.search_model is self.model:
            forget_packed_weights(self.model)  # safe whatever optimizer wrote the weights (see packed_weight)
            self.model.clear_caches()
        else:
            self.search_model.load_weights_from(self.model)

    # ---------------------------------------------------------------- checkpoints
    def save(self) -> Path:
        """Writes the replay snapshot (unless ``save_replay`` is off), then the training
        checkpoint, then deletes the checkpoints and snapshots beyond what is kept."""
        directory, step = self.run_dir.checkpoints, self.env_steps
        ref = None
        if self.cfg.save_replay:
            ref = write_snapshot(snapshot_path(directory, step), self.replay, run_id=self.run_id, env_steps=step)
        path = checkpoint_path(directory, step)
        save_checkpoint(path, {
            "schema": CHECKPOINT_SCHEMA,
            "learner": self.learner.state_dict(), "collector": self._collection_state(),
            "torch_rng": torch.get_rng_state(),
            "counters": {"env_steps": self.env_steps, "iteration": self.iteration, "run_id": self.run_id,
                         "recent_returns": list(self.recent_returns),
                         "best_eval_return": float(self.best_eval_return),
                         "refill_target": self.refill_target, "replay_rng": self.replay.rng_state(),
                         "reanalysis_rng": self.reanalysis_rng.bit_generator.state},
            "replay": {"snapshot": None if ref is None else ref.to_dict(), "num_steps": self.replay.num_steps},
            "config": self.cfg.to_dict(), "model_config": model_config_dict(self.model_config),
        })
        prune_checkpoints(directory, self.cfg.keep_checkpoints)
        for old in list_snapshots(directory):
            if ref is None or old.name != ref.name:
                shutil.rmtree(old)
        return path

    def save_best(self) -> None:
        """``OUT/best.pt``: the best-evaluated weights and the config, nothing to resume from."""
        save_checkpoint(self.out / "best.pt", {
            "schema": CHECKPOINT_SCHEMA, "learner": {"model": self.model.state_dict()},
            "counters": {"env_steps": self.env_steps, "best_eval_return": float(self.best_eval_return)},
            "config": self.cfg.to_dict(), "model_config": model_config_dict(self.model_config),
        })

    def restore(self, state: dict) -> str:
        """Continues from a training checkpoint's ``state``; returns what became of replay."""
        check_same_actions(state["model_config"], self.model_config, "the checkpoint")
        self.learner.load_state_dict(state["learner"])
        torch.set_rng_state(state["torch_rng"])
        counters = state["counters"]
        self.env_steps, self.iteration = counters["env_steps"], counters["iteration"]
        self.run_id, self.refill_target = counters["run_id"], counters["refill_target"]
        self.recent_returns = list(counters["recent_returns"])
        self.best_eval_return = counters["best_eval_return"]
        self.reanalysis_rng.bit_generator.state = counters["reanalysis_rng"]
        self.replay.set_rng_state(counters["replay_rng"])
        replay_note = self._restore_replay(state["replay"])
        if self.search_model is not self.model:
            self.search_model.load_weights_from(self.model)  # the copy is derived, never saved
        self._restore_collection(state["collector"])
        return replay_note

    def _restore_replay(self, saved: dict) -> str:
        """Loads the checkpoint's replay snapshot; without one, replay refills by collecting. A
        snapshot of another run or step is refused (`SnapshotError` names both)."""
        directory, ref = self.run_dir.checkpoints, saved["snapshot"]
        if ref is not None and (directory / ref["name"]).is_dir():
            read_snapshot(directory / ref["name"], self.replay, run_id=self.run_id, env_steps=self.env_steps,
                          meta_sha256=ref["meta_sha256"])
            return f"replay: {self.replay.num_steps} steps from {ref['name']}"
        others = list_snapshots(directory)
        if others:  # never train on another step's replay: this names it and the checkpoint
            read_snapshot(others[-1], self.replay, run_id=self.run_id, env_steps=self.env_steps,
                          meta_sha256=ref["meta_sha256"] if ref else "")
        self.refill_target = min(int(saved["num_steps"]), self.cfg.replay_capacity)
        why = "was not saved (--no-save-replay)" if ref is None else f"{ref['name']} is missing"
        return (f"replay: the snapshot {why}; refilling it by collecting {self.refill_target} steps before "
                "updates resume (this run will not match an uninterrupted one)")

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
        if solved_at is not None:
            print(f"solved: evaluation return {np.mean(self.eval_returns):.1f} >= {self.stop_return:g} "
                  f"at {solved_at} env steps; stopping")
        totals = dict(self.cache_totals, backend=self.model_config.cache_backend)
        queries = totals["hits"] + totals["misses"]
        totals["hit_rate"] = totals["hits"] / queries if queries else 0.0
        return TrainResult(self.env_steps, self.eval_returns, totals, time.monotonic() - start, self.out, solved_at)

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
        self.run_dir.write_config(self.cfg.to_dict())
        print(f"config (saved in {self.out / 'config.json'}):\n" + self.cfg.to_yaml().rstrip())

    def _loop(self) -> int | None:
        """Iterations until the budget is spent or an evaluation reaches the stop return (whose
        env steps it returns)."""
        cfg = self.cfg
        tracking = Tracking(cfg.wandb_project, cfg.wandb_entity, self.run_id) if cfg.track else None
        log = ProgressLog(self.out, self.env_steps, self._progress_fields(), config=cfg.to_dict(),
                          tracking=tracking)
        bar = tqdm(total=cfg.total_env_steps, initial=self.env_steps, disable=not cfg.progress,
                   unit="step", dynamic_ncols=True)
        next_eval = _next_multiple(self.env_steps, cfg.eval_every) if cfg.eval_every else None
        next_ckpt = _next_multiple(self.env_steps, cfg.checkpoint_every)
        solved_at = None
        if self.stop_return is not None:
            print(f"stops early once an evaluation's mean return reaches {self.stop_return:g}")
        try:
            while self.env_steps < cfg.total_env_steps and solved_at is None:
                row = self._iteration()
                bar.update(cfg.iteration_env_steps)
                if self.recent_returns:
                    bar.set_postfix(ret=f"{np.mean(self.recent_returns[-20:]):.1f}", refresh=False)
                last = self.env_steps >= cfg.total_env_steps  # the final evaluation is logged too
                if last or (next_eval is not None and self.env_steps >= next_eval):
                    row.update(self._evaluate())
                    next_eval = _next_multiple(self.env_steps, cfg.eval_every) if cfg.eval_every else None
                    if self.stop_return is not None and row["return/eval"] >= self.stop_return:
                        solved_at = self.env_steps
                log.write(row, self.env_steps)
                if self.env_steps >= next_ckpt or last or solved_at:
                    self.save()
                    next_ckpt = _next_multiple(self.env_steps, cfg.checkpoint_every)
            if self.eval_step != self.env_steps:  # resumed at the end: no iteration ran
                log.write({"env_steps": self.env_steps, "iteration": self.iteration, **self._evaluate()},
                          self.env_steps)
            log.finish({"return/eval": float(np.mean(self.eval_returns)),
                        "return/eval_std": float(np.std(self.eval_returns))})
        finally:
            bar.close()
            log.close()
        return solved_at

    def _iteration(self) -> dict[str, float]:
        cfg, model = self.cfg, self.search_model
        t0 = time.monotonic()
        sims = search_seconds = env_seconds = 0.0
        for _ in range(cfg.collect_steps):
            result = self.collector.step(temperature(cfg, self.env_steps))
            search_seconds += result.search_seconds
            env_seconds += result.env_seconds
            sims += cfg.num_simulations
            self.env_steps += cfg.num_envs
            self.recent_returns = (self.recent_returns + result.finished_returns)[-100:]
        collect_seconds = time.monotonic() - t0
        row: dict[str, float] = {"env_steps": self.env_steps, "iteration": self.iteration,
                                 "temperature": temperature(cfg, self.env_steps),
                                 "policy_lag": 0.0}  # its segments were searched with the current weights
        t_learn = time.monotonic()
        losses = self._update(cfg.iteration_env_steps, row)
        learner_seconds = time.monotonic() - t_learn
        stats = model.cache_stats()  # logged before the caches are cleared
        for key in self.cache_totals:
            self.cache_totals[key] += getattr(stats, key)
        self._refresh_search_model()
        if self.reanalyzer is not None and losses:  # with the new weights, in an arena of its own
            row.update(self._reanalyze())
        model.reset_cache_stats()
        self.collector.weights_version = self.learner.updates
        self.collector.rebuild_contexts()
        self.iteration += 1
        row.update({
            "cache/hit_rate": stats.hit_rate, "cache/evictions": stats.evictions,
            "cache/fallbacks": stats.fallbacks, "cache/misses": stats.misses,
            "speed/sims_per_s": sims / max(search_seconds, 1e-9),
            "speed/env_steps_per_s": cfg.iteration_env_steps / max(time.monotonic() - t0, 1e-9),
            "speed/collect_share": collect_seconds / max(time.monotonic() - t0, 1e-9),
            # Where the iteration's wall time went; the rest (rebuilding root contexts, refreshing
            # the search copy, reanalysis, bookkeeping) is time/iteration_s minus these three.
            "time/search_s": search_seconds, "time/env_s": env_seconds, "time/learner_s": learner_seconds,
            "time/iteration_s": time.monotonic() - t0,
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

    def _evaluate(self) -> dict[str, float]:
        cfg = self.cfg
        self.eval_returns = evaluate(self.model.state_dict(), self.search_model.config, cfg.env,
                                     episodes=cfg.eval_episodes, seed=cfg.seed + 10_000, search=self.search,
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


def train(cfg: TrainConfig) -> TrainResult:
    """Trains in this process, or with ``cfg.collectors`` collector actors on Ray."""
    if cfg.collectors:  # ray is imported only here, when it is asked for
        from zerokv.rl.distributed import DistributedTrainer

        return DistributedTrainer(cfg).run()
    return Trainer(cfg).run()
