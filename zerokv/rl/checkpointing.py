"""A training run's checkpoints: what `zerokv.rl.trainer.Trainer` saves and how it continues.

A checkpoint comes in two parts, written in this order: the replay snapshot
``checkpoints/replay_{step}/`` (`zerokv.rl.snapshot`), then the training checkpoint
``checkpoints/ckpt_{step}.pt`` (weights, optimizer, counters, RNG states, wall time, resolved
config, collection's state and the snapshot's name and hash); then all but the newest
``keep_checkpoints`` training checkpoints and every other snapshot are deleted. ``OUT/best.pt``
holds the best-evaluated weights and the config only. The same for every collection source.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from zerokv.rl.checkpoint import checkpoint_path, prune_checkpoints, save_checkpoint
from zerokv.rl.factory import check_same_actions, model_config_dict
from zerokv.rl.snapshot import list_snapshots, restore_replay, snapshot_path, write_snapshot

__all__ = ["CHECKPOINT_SCHEMA", "Checkpointing"]

CHECKPOINT_SCHEMA = 2
"""Layout of a training checkpoint's payload; 2: replay in a separate snapshot, no frames."""


class Checkpointing:
    """Mixin of `zerokv.rl.trainer.Trainer`: its checkpoints saved, and a resume restored."""

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
            "learner": self.learner.state_dict(), "collector": self.source.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "counters": {"env_steps": self.env_steps, "iteration": self.iteration, "run_id": self.run_id,
                         "recent_returns": list(self.recent_returns),
                         "best_eval_return": float(self.best_eval_return),
                         "refill_target": self.refill_target, "replay_rng": self.replay.rng_state(),
                         "wall_seconds": self.wall_seconds(),
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
        self.wall_before = counters.get("wall_seconds", 0.0)  # absent in checkpoints of older zerokvs
        self.session_start = time.monotonic()
        self.reanalysis_rng.bit_generator.state = counters["reanalysis_rng"]
        self.replay.set_rng_state(counters["replay_rng"])
        replay_note, refill = restore_replay(self.run_dir.checkpoints, self.replay, state["replay"],
                                             run_id=self.run_id, env_steps=self.env_steps)
        if refill is not None:  # no snapshot: replay refills by collecting before updates resume
            self.refill_target = min(refill, self.cfg.replay_capacity)
            replay_note += (f"; refilling it by collecting {self.refill_target} steps before updates resume "
                            "(this run will not match an uninterrupted one)")
        if self.search_model is not self.model:
            self.search_model.load_weights_from(self.model)  # the copy is derived, never saved
        self.source.load_state_dict(state["collector"], weights_version=self.learner.updates)
        return replay_note
