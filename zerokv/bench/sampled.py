"""Sampled (continuous-action) search speed, paged cache against no cache, and its exactness.

``python -m zerokv.bench.sampled [--rounds N] [--embed-dim E] [--threads T] [--out FILE]``: the same real
searches (K sampled actions per node, root noise, the actions chosen fed back as the next roots'
last actions) with the "none" (recompute) and "paged" backends, interleaved round by round in one
process. Prints and writes searches/s per backend and their ratio, the largest difference of the
root values, whether the visit counts are identical, and the paged model's fallbacks and misses.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from zerokv.io import atomic_write
from zerokv.model.config import WorldModelConfig
from zerokv.model.world_model import WorldModel
from zerokv.search import SearchConfig, plan


def run(*, rounds: int, embed_dim: int, envs: int, simulations: int, k: int, action_dim: int) -> dict:
    search = SearchConfig(num_simulations=simulations, num_sampled_actions=k)
    models = {}
    for backend in ("none", "paged"):
        torch.manual_seed(0)
        models[backend] = WorldModel(WorldModelConfig(
            observation_shape=(5,), action_space_size=k, action_dim=action_dim, embed_dim=embed_dim, num_layers=2,
            num_heads=8, context_length=8, max_tokens=22, env_num=envs, num_simulations=simulations,
            support_size=300, cache_backend=backend)).eval()
    rngs = {b: np.random.default_rng(1) for b in models}
    last = {b: None for b in models}
    seconds = {b: [] for b in models}
    value_diff, same_visits = 0.0, True
    obs_rng = np.random.default_rng(2)
    for r in range(rounds + 1):  # round 0 warms up (untimed)
        obs = obs_rng.random((envs, 5), dtype=np.float32)
        outs = {}
        for backend, model in models.items():
            start = time.perf_counter()
            outs[backend] = plan(model, obs, config=search, rng=rngs[backend], last_actions=last[backend])
            if r:
                seconds[backend].append(time.perf_counter() - start)
            last[backend] = outs[backend].action
        value_diff = max(value_diff, float(np.abs(outs["none"].root_value - outs["paged"].root_value).max()))
        same_visits &= bool(np.array_equal(outs["none"].visit_counts, outs["paged"].visit_counts))
    stats = models["paged"].cache_stats()
    speed = {b: 1.0 / float(np.median(s)) for b, s in seconds.items()}
    return {
        "config": {"embed_dim": embed_dim, "envs": envs, "simulations": simulations, "num_sampled_actions": k,
                   "action_dim": action_dim, "rounds": rounds, "threads": torch.get_num_threads()},
        "searches_per_s": speed, "paged_over_none": speed["paged"] / speed["none"],
        "max_root_value_diff": value_diff, "identical_visit_counts": same_visits,
        "paged_fallbacks": stats.fallbacks, "paged_misses": stats.misses,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--simulations", type=int, default=50)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--action-dim", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(rounds=args.rounds, embed_dim=args.embed_dim, envs=args.envs, simulations=args.simulations,
                 k=args.k, action_dim=args.action_dim)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with atomic_write(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
