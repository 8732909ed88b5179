"""``zerokv train | eval | bench``: each subcommand's flags come from a typed config dataclass."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tyro

USAGE = """usage: zerokv {train,eval,bench} [flags]

  train   train a UniZero agent on a gymnasium env (default: a short CartPole-v1 run)
  eval    greedy evaluation of a checkpoint
  bench   the cache backends measured side by side on real searches

Run `zerokv SUBCOMMAND --help` for its flags."""


@dataclass
class EvalArgs:
    """Greedy evaluation of a checkpoint written by `zerokv train`."""

    checkpoint: str
    """Path of a checkpoint (OUT/checkpoints/ckpt_*.pt, or OUT/best.pt: the best-evaluated weights)."""
    episodes: int = 10
    """Episodes to play (one env each, searched together)."""
    seed: int = 12345
    """Seed of the evaluation envs."""
    num_simulations: int | None = None
    """Simulations per search (default: the training run's)."""
    dtype: str | None = None
    """Dtype of the searching model, "float32" or "bfloat16" (default: the training run's search_dtype)."""
    threads: int = 2
    """torch.set_num_threads."""


def _train(argv: list[str]) -> None:
    from zerokv.rl.config import TrainConfig, load_overrides
    from zerokv.rl.trainer import train

    default = TrainConfig()
    if "--config" in argv:  # the file overrides the defaults; flags override the file
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise SystemExit("zerokv train: error: --config needs a path")
        default = TrainConfig(**{**default.to_dict(), **load_overrides(argv[i + 1])})
    cfg = tyro.cli(TrainConfig, args=argv, default=default, prog="zerokv train")
    result = train(cfg)
    print(f"done: {result.env_steps} env steps in {result.wall_seconds / 60:.1f} min -> {result.out}")
    print(f"evaluation return over {len(result.eval_returns)} episodes: "
          f"{np.mean(result.eval_returns):.1f} ± {np.std(result.eval_returns):.1f}")
    s = result.cache_stats
    print(f"cache ({s['backend']}) over the run: hits={s['hits']}, misses={s['misses']}, "
          f"hit_rate={100 * s['hit_rate']:.2f}%, evictions={s['evictions']}, fallbacks={s['fallbacks']}")


def _eval(argv: list[str]) -> None:
    import torch

    from zerokv.model.config import WorldModelConfig
    from zerokv.rl.checkpoint import load_checkpoint
    from zerokv.rl.config import TrainConfig
    from zerokv.rl.evaluator import evaluate
    from zerokv.rl.trainer import env_options, search_config

    args = tyro.cli(EvalArgs, args=argv, prog="zerokv eval")
    torch.set_num_threads(args.threads)
    state = load_checkpoint(args.checkpoint)
    train_cfg = TrainConfig(**state["config"])
    if args.num_simulations is not None:
        train_cfg = dataclasses.replace(train_cfg, num_simulations=args.num_simulations)
    model_cfg = dataclasses.replace(WorldModelConfig(**state["model_config"]),
                                    dtype=args.dtype or train_cfg.search_dtype)
    returns = evaluate(state["learner"]["model"], model_cfg, train_cfg.env, episodes=args.episodes,
                       seed=args.seed, search=search_config(train_cfg), env_options=env_options(train_cfg),
                       max_steps=train_cfg.eval_max_steps)
    print(f"{train_cfg.env}: mean return {np.mean(returns):.1f} ± {np.std(returns):.1f} "
          f"(min {np.min(returns):.0f}, max {np.max(returns):.0f}) over {len(returns)} episodes")


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = args[0], args[1:]
    try:
        if command == "train":
            _train(rest)
        elif command == "eval":
            _eval(rest)
        elif command == "bench":
            from zerokv.bench import main as bench_main

            bench_main(rest)
        else:
            raise SystemExit(f"zerokv: unknown command {command!r}; allowed: train, eval, bench\n\n{USAGE}")
    except ValueError as e:
        raise SystemExit(f"zerokv {command}: error: {e}") from None


if __name__ == "__main__":
    main()
