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
threshold), and ``OUT/best.pt`` always holds the best-evaluated weights.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from zerokv.model.config import WorldModelConfig
from zerokv.model.linear import forget_packed_weights
from zerokv.model.world_model import WorldModel
from zerokv.rl.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from zerokv.rl.collector import Collector
from zerokv.rl.config import TrainConfig
from zerokv.rl.envs import env_spec
from zerokv.rl.evaluator import evaluate
from zerokv.rl.learner import Learner
from zerokv.rl.replay import ReplayBuffer
from zerokv.search import Reanalyzer, SearchConfig

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class TrainResult:
    env_steps: int
    eval_returns: list[float]
    cache_stats: dict
    wall_seconds: float
    out: Path
    solved_at: int | None = None
    """Env steps at the evaluation that reached the stop return (the run stopped there), if any."""


def world_model_config(cfg: TrainConfig) -> WorldModelConfig:
    """The float32 training model's config (the searches may use a copy in ``cfg.search_dtype``)."""
    spec = env_spec(cfg.env)
    return WorldModelConfig(
        observation_shape=spec.observation_shape, action_space_size=spec.action_space_size,
        embed_dim=cfg.embed_dim, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
        context_length=cfg.context_length, max_tokens=max(cfg.context_length, 2 * (cfg.unroll_steps + 1)),
        env_num=cfg.num_envs, num_simulations=cfg.num_simulations, support_size=cfg.support_size,
        device=cfg.device, cache_backend=cfg.cache_backend, use_new_cache_manager=cfg.use_new_cache_manager,
    )


def search_config(cfg: TrainConfig) -> SearchConfig:
    return SearchConfig(num_simulations=cfg.num_simulations, discount=cfg.discount,
                        dirichlet_alpha=cfg.dirichlet_alpha, exploration_fraction=cfg.exploration_fraction,
                        leaves_per_call=cfg.leaves_per_call)


def temperature(cfg: TrainConfig, env_steps: int) -> float:
    frac = min(1.0, env_steps / max(1, cfg.temperature_decay_steps))
    return cfg.temperature_start + frac * (cfg.temperature_end - cfg.temperature_start)


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.model_config = world_model_config(cfg)
        self.model = WorldModel(self.model_config)
        self.search_model = self._make_search_model()
        self.learner = Learner(self.model, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
                               grad_clip=cfg.grad_clip, target_update_rate=cfg.target_update_rate,
                               fresh_value_targets=cfg.fresh_value_targets, td_steps=cfg.td_steps,
                               dtype=cfg.learner_dtype)
        self.replay = ReplayBuffer(cfg.replay_capacity, self.model_config.observation_shape,
                                   self.model_config.action_space_size, unroll_steps=cfg.unroll_steps,
                                   td_steps=cfg.td_steps, discount=cfg.discount, seed=cfg.seed)
        self.search = search_config(cfg)
        self.collector = Collector(cfg.env, cfg.num_envs, self.search_model, self.replay, search=self.search,
                                   seed=cfg.seed, segment_length=cfg.segment_length,
                                   history_steps=cfg.history_steps, keep_root_context=cfg.keep_root_context)
        self.reanalyzer = None
        if cfg.reanalyze_per_iteration:
            self.reanalyzer = Reanalyzer(self.search_model, self.search, min(cfg.reanalyze_batch, cfg.reanalyze_per_iteration))
        self.reanalysis_rng = np.random.default_rng([cfg.seed, 1])  # root noise of reanalysis searches
        self.out = Path(cfg.out)
        self.env_steps = self.iteration = 0
        self.recent_returns: list[float] = []
        self.eval_returns: list[float] = []
        self.best_eval_return = -np.inf
        spec_threshold = env_spec(cfg.env).reward_threshold
        self.stop_return = cfg.stop_return if cfg.stop_return is not None else spec_threshold
        # Cache counters summed over iterations (each iteration's are logged, then reset).
        self.cache_totals = {"hits": 0, "misses": 0, "evictions": 0, "fallbacks": 0}

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
    def save(self, path: Path | None = None) -> Path:
        path = checkpoint_path(self.out / "checkpoints", self.env_steps) if path is None else path
        save_checkpoint(path, {
            "learner": self.learner.state_dict(), "replay": self.replay.state_dict(),
            "collector": self.collector.state_dict(), "torch_rng": torch.get_rng_state(),
            "counters": {"env_steps": self.env_steps, "iteration": self.iteration,
                         "recent_returns": list(self.recent_returns),
                         "best_eval_return": float(self.best_eval_return),
                         "reanalysis_rng": self.reanalysis_rng.bit_generator.state},
            "config": self.cfg.to_dict(), "model_config": _plain(asdict(self.model_config)),
        })
        return path

    def restore(self, path: Path) -> None:
        state = load_checkpoint(path)
        self.learner.load_state_dict(state["learner"])
        self.replay.load_state_dict(state["replay"])
        self.collector.load_state_dict(state["collector"])
        torch.set_rng_state(state["torch_rng"])
        counters = state["counters"]
        self.env_steps, self.iteration = counters["env_steps"], counters["iteration"]
        self.recent_returns = list(counters["recent_returns"])
        self.best_eval_return = counters["best_eval_return"]
        if "reanalysis_rng" in counters:
            self.reanalysis_rng.bit_generator.state = counters["reanalysis_rng"]
        if self.search_model is not self.model:
            self.search_model.load_weights_from(self.model)  # the copy is derived, never saved
        self.collector.rebuild_contexts()  # the caches are empty, as after every iteration

    # ----------------------------------------------------------------------- loop
    def run(self) -> TrainResult:
        cfg, start = self.cfg, time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        if cfg.resume:
            path = latest_checkpoint(self.out / "checkpoints")
            if path is None:
                raise ValueError(f"--resume: no checkpoint in {self.out / 'checkpoints'}")
            self.restore(path)
            print(f"resumed from {path} at {self.env_steps} env steps")
        (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
        logger.info("resolved config: %s", cfg.to_dict())
        writer = SummaryWriter(str(self.out / "tb"), purge_step=self.env_steps or None)
        csv_path = self.out / "progress.csv"
        csv_file = csv_path.open("a", newline="")
        csv_writer = None
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
                if next_eval is not None and self.env_steps >= next_eval:
                    row.update(self._evaluate())
                    next_eval = _next_multiple(self.env_steps, cfg.eval_every)
                    if self.stop_return is not None and row["return/eval"] >= self.stop_return:
                        solved_at = self.env_steps
                for key, value in row.items():
                    writer.add_scalar(key, value, self.env_steps)
                if csv_writer is None:
                    csv_writer = csv.DictWriter(csv_file, fieldnames=_CSV_FIELDS, extrasaction="ignore")
                    if csv_path.stat().st_size == 0:
                        csv_writer.writeheader()
                csv_writer.writerow(row)
                csv_file.flush()
                if self.env_steps >= next_ckpt or self.env_steps >= cfg.total_env_steps or solved_at:
                    self.save()
                    next_ckpt = _next_multiple(self.env_steps, cfg.checkpoint_every)
        finally:
            bar.close()
            writer.close()
            csv_file.close()
            self.collector.close()
        if not self.eval_returns:
            self._evaluate()
        if solved_at is not None:
            print(f"solved: evaluation return {np.mean(self.eval_returns):.1f} >= {self.stop_return:g} "
                  f"at {solved_at} env steps; stopping")
        totals = dict(self.cache_totals, backend=self.model_config.cache_backend)
        queries = totals["hits"] + totals["misses"]
        totals["hit_rate"] = totals["hits"] / queries if queries else 0.0
        return TrainResult(self.env_steps, self.eval_returns, totals, time.monotonic() - start, self.out,
                           solved_at)

    def _iteration(self) -> dict[str, float]:
        cfg, model = self.cfg, self.search_model
        t0 = time.monotonic()
        sims = search_seconds = 0.0
        for _ in range(cfg.collect_steps):
            ts = time.monotonic()
            result = self.collector.step(temperature(cfg, self.env_steps))
            search_seconds += time.monotonic() - ts
            sims += cfg.num_simulations
            self.env_steps += cfg.num_envs
            self.recent_returns = (self.recent_returns + result.finished_returns)[-100:]
        collect_seconds = time.monotonic() - t0
        row: dict[str, float] = {"env_steps": self.env_steps, "iteration": self.iteration,
                                 "temperature": temperature(cfg, self.env_steps)}
        losses: list[dict[str, float]] = []
        if self.replay.num_steps >= cfg.min_replay_steps:
            for _ in range(max(1, round(cfg.replay_ratio * cfg.iteration_env_steps))):
                losses.append(self.learner.update(self.replay.sample(cfg.batch_size)))
        stats = model.cache_stats()  # logged before the caches are cleared
        for key in self.cache_totals:
            self.cache_totals[key] += stats[key]
        self._refresh_search_model()
        if self.reanalyzer is not None and losses:  # with the new weights, in an arena of its own
            row.update(self._reanalyze())
        model.reset_cache_stats()
        self.collector.rebuild_contexts()
        self.iteration += 1
        row.update({
            "cache/hit_rate": stats["hit_rate"], "cache/evictions": stats["evictions"],
            "cache/fallbacks": stats["fallbacks"], "cache/misses": stats["misses"],
            "speed/sims_per_s": sims / max(search_seconds, 1e-9),
            "speed/env_steps_per_s": cfg.iteration_env_steps / max(time.monotonic() - t0, 1e-9),
            "speed/collect_share": collect_seconds / max(time.monotonic() - t0, 1e-9),
        })
        if self.recent_returns:
            row["return/train"] = float(np.mean(self.recent_returns[-20:]))
        for key in losses[0] if losses else ():
            row[f"loss/{key}"] = float(np.mean([entry[key] for entry in losses]))
        return row

    def _reanalyze(self) -> dict[str, float]:
        """Refresh stored search targets with the current weights, all roots in wide batches."""
        seg_ids, steps = self.replay.sample_positions(self.cfg.reanalyze_per_iteration)
        obs, actions, lengths = self.replay.histories(seg_ids, steps, self.model_config.root_history_steps)
        out = self.reanalyzer(obs, actions, lengths, rng=self.reanalysis_rng)
        policy_tv = self.replay.update_targets(seg_ids, steps, out.search_policy, out.root_value)
        return {"reanalyze/roots_per_s": out.roots_per_second, "reanalyze/policy_tv": policy_tv}

    def _evaluate(self) -> dict[str, float]:
        cfg = self.cfg
        self.eval_returns = evaluate(self.model.state_dict(), self.search_model.config, cfg.env,
                                     episodes=cfg.eval_episodes, seed=cfg.seed + 10_000, search=self.search)
        mean = float(np.mean(self.eval_returns))
        tqdm.write(f"[eval] env_steps={self.env_steps} return={mean:.1f} ± {np.std(self.eval_returns):.1f}")
        if mean > self.best_eval_return:
            self.best_eval_return = mean
            self.save(self.out / "best.pt")  # the best weights survive a later dip
        return {"return/eval": mean, "return/eval_std": float(np.std(self.eval_returns))}


_CSV_FIELDS = ["env_steps", "iteration", "temperature", "return/train", "return/eval", "return/eval_std",
               "loss/total", "loss/latent", "loss/reward", "loss/value", "loss/policy", "loss/entropy",
               "loss/grad_norm", "cache/hit_rate", "cache/evictions", "cache/fallbacks", "cache/misses",
               "speed/sims_per_s", "speed/env_steps_per_s", "reanalyze/roots_per_s", "reanalyze/policy_tv"]


def _next_multiple(value: int, every: int) -> int:
    return (value // every + 1) * every


def _plain(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def train(cfg: TrainConfig) -> TrainResult:
    return Trainer(cfg).run()
