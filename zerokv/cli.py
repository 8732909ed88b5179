"""``zerokv train | eval | bench``: each subcommand's flags come from a typed config dataclass.

A user error — a bad flag or flag value, a missing or corrupt checkpoint, an unwritable or
missing path, an optional extra that is not installed, Ctrl-C — ends the command with ONE line
on stderr, ``zerokv <command>: error: …``, and exit code 2 (130 for Ctrl-C, as shells expect).
``--debug``, anywhere on the command line, lets the exception through with its traceback instead.
Anything else is a bug in zerokv and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tyro

from zerokv.checks import check_choice, check_device, check_int, check_positive_int

USAGE = """usage: zerokv [--debug] {train,eval,bench} [flags]

  train   train a UniZero agent on a gymnasium env (default: a short CartPole-v1 run)
  eval    greedy evaluation of a checkpoint
  bench   the cache backends measured side by side on real searches

Run `zerokv SUBCOMMAND --help` for its flags. --debug shows the traceback of an error."""

COMMANDS = ("train", "eval", "bench")
DEBUG_FLAG = "--debug"
USAGE_EXIT = 2
"""Exit code of a user error (argparse's and tyro's for a bad command line)."""
INTERRUPTED_EXIT = 130
"""Exit code after Ctrl-C: 128 + SIGINT, what shells report for an interrupted command."""

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError)
"""Exceptions that mean the user asked for something impossible, not that zerokv is broken:
``ValueError`` (bad values; ``CheckpointError`` is one), ``OSError`` (a path that is missing,
unreadable or unwritable: ``FileNotFoundError``, ``PermissionError``, …) and ``ImportError``
(an optional extra such as ``zerokv[atari]`` that is not installed)."""


class UsageError(Exception):
    """A command line zerokv or tyro refused; the message is one line."""


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
    device: str | None = None
    """Torch device of the searching model: "cpu", "cuda", "cuda:N" or "mps" (default: the training
    run's device)."""
    threads: int = 2
    """torch.set_num_threads."""

    def __post_init__(self) -> None:
        from zerokv.model.config import DTYPES

        check_positive_int("episodes", self.episodes)
        check_positive_int("threads", self.threads)
        check_int("seed", self.seed, low=0)
        if self.num_simulations is not None:
            check_positive_int("num_simulations", self.num_simulations)
        if self.dtype is not None:
            check_choice("dtype", self.dtype, DTYPES)
        if self.device is not None:
            check_device("device", self.device)


def parse(cls, argv: Sequence[str], prog: str, *, debug: bool = False, **kwargs):
    """``tyro.cli(cls, args=argv, prog=prog, **kwargs)``, but a refused command line raises
    :class:`UsageError` with tyro's message on one line (unless ``debug``: tyro's own box)."""
    if debug:
        return tyro.cli(cls, args=list(argv), prog=prog, **kwargs)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(cls, args=list(argv), prog=prog, **kwargs)
    except SystemExit as e:
        if e.code in (0, None):  # --help
            raise
        message = one_line(captured.getvalue()) or "the command line was refused"
        raise UsageError(f"{message} (see {prog} --help)") from None
    finally:
        sys.stderr.write(_not_a_box(captured.getvalue()))  # warnings printed while parsing


_BOX = re.compile(r"[╭╮╰╯│─]|^ -{3,} *$", re.MULTILINE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _not_a_box(text: str) -> str:
    return "" if _BOX.search(text) else text


def one_line(box: str) -> str:
    """tyro's error box reduced to its message: the first paragraph under the title (up to a
    blank line or a rule), without argument helptext, joined by spaces. Handles both of tyro's
    renderings: UTF-8 box drawing and plain ASCII (when stdout is not UTF-8)."""
    lines: list[str] = []
    for raw in _ANSI.sub("", box).splitlines()[1:]:  # [0]: the title
        inner = raw.rstrip().removesuffix("│").rstrip()
        inner = inner[2:] if inner.startswith(("│ ", "  ")) else inner.removeprefix("│")
        text = inner.strip()
        if not text or set(text) <= {"─", "-"}:
            if lines:
                break
            continue  # the ASCII rendering's rule under the title, or leading blanks
        if len(inner) - len(inner.lstrip()) <= 4:  # message and option names; helptext is indented 8
            lines.append(text)
    return " ".join(lines)


def _train(argv: list[str], debug: bool) -> None:
    from zerokv.rl.config import TrainConfig, load_overrides
    from zerokv.rl.trainer import train

    default = TrainConfig()
    if "--config" in argv:  # the file overrides the defaults; flags override the file
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise UsageError("--config needs a path")
        default = TrainConfig(**{**default.to_dict(), **load_overrides(argv[i + 1])})
    cfg = parse(TrainConfig, argv, "zerokv train", debug=debug, default=default)
    result = train(cfg)
    print(f"done: {result.env_steps} env steps in {result.wall_seconds / 60:.1f} min -> {result.out}")
    print(f"evaluation return over {len(result.eval_returns)} episodes: "
          f"{np.mean(result.eval_returns):.1f} ± {np.std(result.eval_returns):.1f}")
    s = result.cache_stats
    print(f"cache ({s['backend']}) over the run: hits={s['hits']}, misses={s['misses']}, "
          f"hit_rate={100 * s['hit_rate']:.2f}%, evictions={s['evictions']}, fallbacks={s['fallbacks']}")


def _eval(argv: list[str], debug: bool) -> None:
    import torch

    from zerokv.model.config import WorldModelConfig
    from zerokv.rl.checkpoint import load_checkpoint
    from zerokv.rl.config import TrainConfig
    from zerokv.rl.evaluator import evaluate
    from zerokv.rl.factory import env_options, search_config

    args = parse(EvalArgs, argv, "zerokv eval", debug=debug)
    torch.set_num_threads(args.threads)
    state = load_checkpoint(args.checkpoint)
    # The run's own config on this machine's device (checked here: the run may have trained on
    # a device this machine lacks).
    device = check_device("device", args.device or state["config"].get("device", "cpu"))
    train_cfg = TrainConfig(**{**state["config"], "device": device})
    if args.num_simulations is not None:
        train_cfg = dataclasses.replace(train_cfg, num_simulations=args.num_simulations)
    model_cfg = dataclasses.replace(WorldModelConfig(**state["model_config"]), device=device,
                                    dtype=args.dtype or train_cfg.search_dtype)
    returns = evaluate(state["learner"]["model"], model_cfg, train_cfg.env, episodes=args.episodes,
                       seed=args.seed, search=search_config(train_cfg), env_options=env_options(train_cfg),
                       max_steps=train_cfg.eval_max_steps)
    print(f"{train_cfg.env}: mean return {np.mean(returns):.1f} ± {np.std(returns):.1f} "
          f"(min {np.min(returns):.0f}, max {np.max(returns):.0f}) over {len(returns)} episodes")


def _bench(argv: list[str], debug: bool) -> None:
    from zerokv.bench import main as bench_main

    bench_main(argv, debug=debug)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``zerokv`` (see the module docstring for how errors end)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args
    args = [a for a in args if a != DEBUG_FLAG]
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = args[0], args[1:]
    prog = f"zerokv {command}" if command in COMMANDS else "zerokv"
    try:
        if command not in COMMANDS:
            raise UsageError(f"unknown command {command!r}; allowed: {', '.join(COMMANDS)} (see zerokv --help)")
        {"train": _train, "eval": _eval, "bench": _bench}[command](rest, debug)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(INTERRUPTED_EXIT) from None
    except (UsageError, *USER_ERRORS) as e:
        if debug:
            raise
        print(f"{prog}: error: {_message(e)}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT) from None


def _message(error: BaseException) -> str:
    """The error's message on one line (its class name if it has none)."""
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    main()
