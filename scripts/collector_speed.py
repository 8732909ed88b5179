"""Collection and learning rates behind the "Collectors on Ray" figures (docs/ray.md).

    .venv/bin/python scripts/collector_speed.py cartpole   # env steps/s: in-process, 1 and 2 collectors
    .venv/bin/python scripts/collector_speed.py atari      # one collector's search rate, the learner's rate

`cartpole`: collection-only runs of the default CartPole config (no update ever: min_replay_steps
= replay_capacity), interleaved — in-process at 2 and at 1 torch thread (a collector actor's
count), 1 collector, 2 collectors — and repeated; prints each run's median env steps/s after a
warm-up (per collector and in total). `atari`: the `zerokv/presets/atari.yaml`
model and search on ALE/Pong-v5 in this process: vector steps/s of one collector (8 envs × 50
simulations) at 1 and 2 torch threads, and the learner's updates/s (batch 64, unroll 10) on a
replay of random frames. Nothing here is a test: it prints numbers.
"""

from __future__ import annotations

import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zerokv.presets import preset_path
from zerokv.rl.config import TrainConfig
from zerokv.rl.config_files import load_overrides
from zerokv.rl.replay import GameSegment


def cartpole(repeats: int = 2, steps: int = 2048) -> None:
    from zerokv.rl.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats):
            for n, threads in ((0, 2), (0, 1), (1, 2), (2, 2)):  # a collector actor runs 1 torch thread
                out = Path(tmp) / f"n{n}-t{threads}-{rep}"
                cfg = TrainConfig(out=str(out), total_env_steps=steps, collectors=n, min_replay_steps=100_000,
                                  eval_every=0, eval_episodes=1, eval_max_steps=10, progress=False,
                                  checkpoint_every=10 * steps, save_replay=False, threads=threads)
                t0 = time.monotonic()
                train(cfg)
                with open(out / "progress.csv", newline="") as f:
                    rows = list(csv.DictReader(f))[2 * max(n, 1):]  # past the warm-up
                total = statistics.median(float(r["speed/env_steps_per_s"]) for r in rows)
                per = [statistics.median(float(r[k]) for r in rows if r.get(k))
                       for k in (f"speed/collector_{i}_env_steps_per_s" for i in range(n))]
                print(f"collectors={n} (driver threads {threads}) run {rep}: total {total:.1f} env steps/s (median), per collector "
                      f"{', '.join(f'{p:.1f}' for p in per) or '-'}; wall {time.monotonic() - t0:.1f} s", flush=True)


def atari() -> None:
    from zerokv.model.world_model import WorldModel
    from zerokv.rl.factory import make_replay, world_model_config
    from zerokv.rl.learner import Learner
    from zerokv.rl.worker import CollectorWorker, WeightsOffer

    cfg = TrainConfig(**load_overrides(preset_path("atari")))
    torch.manual_seed(0)
    model = WorldModel(world_model_config(cfg))
    state = model.state_dict()
    for threads in (1, 2, 1, 2):
        worker = CollectorWorker(cfg.to_dict(), 0, start_env_steps=0, threads=threads)
        worker.collect(2, 0.25, WeightsOffer(0, state))  # warm-up: packs the weights
        report = worker.collect(6, 0.25, WeightsOffer(0, state))
        worker.close()
        print(f"one collector, {threads} thread(s): {6 / report.search_seconds:.2f} vector steps/s = "
              f"{report.env_steps / report.search_seconds:.1f} env steps/s (8 envs x 50 simulations)", flush=True)
    torch.set_num_threads(2)
    replay = make_replay(cfg, model.config)
    rng = np.random.default_rng(0)
    for _ in range(8):
        seg = GameSegment(model.config.observation_shape, model.config.action_space_size, np.uint8)
        for _ in range(50):
            seg.append(rng.integers(0, 256, model.config.observation_shape, dtype=np.uint8),
                       int(rng.integers(model.config.action_space_size)), 0.0, 0.0,
                       np.full(model.config.action_space_size, 1 / model.config.action_space_size))
        seg.close(terminated=False)
        replay.add(seg)
    learner = Learner(model, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip,
                      target_update_rate=cfg.target_update_rate, fresh_value_targets=cfg.fresh_value_targets)
    learner.update(replay.sample(cfg.batch_size))  # warm-up
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        learner.update(replay.sample(cfg.batch_size))
        times.append(time.monotonic() - t0)
    print(f"learner, 2 threads: {1 / statistics.median(times):.3f} updates/s "
          f"(median of {len(times)}; batch {cfg.batch_size}, unroll {cfg.unroll_steps})", flush=True)


if __name__ == "__main__":
    {"cartpole": cartpole, "atari": atari}[sys.argv[1] if len(sys.argv) > 1 else "cartpole"]()
