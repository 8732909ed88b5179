"""``zerokv train | eval | enjoy | plot | export | bench``: each subcommand's flags come from a
typed config dataclass (``zerokv --version`` prints the version).

A user error — a bad flag or flag value, a missing or corrupt checkpoint, an unwritable or
missing path, an optional extra that is not installed, Ctrl-C — ends the command with ONE line
on stderr, ``zerokv <command>: error: …``, and exit code 2 (130 for Ctrl-C, as shells expect).
``--debug``, anywhere on the command line, lets the exception through with its traceback instead.
Anything else is a bug in zerokv and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Sequence

import numpy as np
import tyro

from zerokv.cli_flags import TRAIN_SECTIONS, explicit_fields, render_help, unknown_flag
from zerokv.version import __version__

USAGE = """usage: zerokv [--version] [--debug] {train,eval,enjoy,plot,export,bench} [flags]

  train   train a UniZero agent on a gymnasium env (default: a short CartPole-v1 run)
  eval    greedy evaluation of a checkpoint: per-episode returns, mean ± std (--json)
  enjoy   watch a checkpoint play: render it, or record a video per episode (--video DIR)
  plot    learning curves of one or several runs (progress.csv) as an image
  export  a checkpoint's world model as safetensors + config.json (WorldModel.from_pretrained)
  bench   the cache backends measured side by side on real searches

Run `zerokv SUBCOMMAND --help` for its flags. --debug shows the traceback of an error."""

COMMANDS = ("train", "eval", "enjoy", "plot", "export", "bench")
DEBUG_FLAG = "--debug"
VERSION_FLAG = "--version"
LIST_PRESETS_FLAG = "--list-presets"
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


def parse(cls, argv: Sequence[str], prog: str, *, debug: bool = False, **kwargs):
    """``tyro.cli(cls, args=argv, prog=prog, **kwargs)``, but a refused command line raises
    :class:`UsageError` with tyro's message on one line (unless ``debug``: tyro's own box), and
    ``--help`` prints zerokv's readable help."""
    if "-h" in argv or "--help" in argv:
        print(render_help(cls, prog))
        raise SystemExit(0)
    unknown = unknown_flag(argv, cls)
    if unknown is not None:
        raise UsageError(f"{unknown} (see {prog} --help)")
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


def flag_value(argv: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in ``argv`` given as ``FLAG VALUE`` or ``FLAG=VALUE`` (the last one
    wins, as in tyro), or None if absent."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise UsageError(f"{flag} needs a value")
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value


def _train(argv: list[str], debug: bool) -> None:
    from zerokv.rl.config import TrainConfig
    from zerokv.rl.config_files import file_overrides
    from zerokv.rl.trainer import train

    if LIST_PRESETS_FLAG in argv:
        from zerokv.presets import describe_presets

        print(describe_presets())
        return
    default, from_files = TrainConfig(), {}
    preset, config = flag_value(argv, "--preset"), flag_value(argv, "--config")
    if preset is not None or config is not None:  # preset < file < flags
        typed = flag_value(argv, "--env") is not None or "--allow-env-import" in argv
        from_files = file_overrides(preset, config, allow_env_import=typed)
        default = TrainConfig(**{**default.to_dict(), **from_files})
    if "-h" in argv or "--help" in argv:
        print(render_help(TrainConfig, "zerokv train", TRAIN_SECTIONS, default)
              + f"\n\n{LIST_PRESETS_FLAG} lists the presets with the return each reached.")
        return
    cfg = parse(TrainConfig, argv, "zerokv train", debug=debug, default=default)
    result = train(cfg, explicit=explicit_fields(argv, TrainConfig) | set(from_files))
    print(f"done: {result.env_steps} env steps in {result.wall_seconds / 60:.1f} min -> {result.out}")
    print(f"evaluation return over {len(result.eval_returns)} episodes: "
          f"{np.mean(result.eval_returns):.1f} ± {np.std(result.eval_returns):.1f}")
    s = result.cache_stats
    print(f"cache ({s['backend']}) over the run: hits={s['hits']}, misses={s['misses']}, "
          f"hit_rate={100 * s['hit_rate']:.2f}%, evictions={s['evictions']}, fallbacks={s['fallbacks']}")


def _eval(argv: list[str], debug: bool) -> None:
    from zerokv.rl.play import EvalArgs, evaluate_policy

    evaluate_policy(parse(EvalArgs, argv, "zerokv eval", debug=debug))


def _enjoy(argv: list[str], debug: bool) -> None:
    from zerokv.rl.play import EnjoyArgs, enjoy

    enjoy(parse(EnjoyArgs, argv, "zerokv enjoy", debug=debug))


def _plot(argv: list[str], debug: bool) -> None:
    from zerokv.rl.plot import PlotArgs, plot

    plot(parse(PlotArgs, argv, "zerokv plot", debug=debug))


def _export(argv: list[str], debug: bool) -> None:
    from zerokv.rl.export import ExportArgs, export

    export(parse(ExportArgs, argv, "zerokv export", debug=debug))


def _bench(argv: list[str], debug: bool) -> None:
    from zerokv.bench import BenchArgs, run

    run(parse(BenchArgs, argv, "zerokv bench", debug=debug))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``zerokv`` (see the module docstring for how errors end)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args
    args = [a for a in args if a != DEBUG_FLAG]
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return
    if args[0] == VERSION_FLAG:
        print(f"zerokv {__version__}")
        return
    command, rest = args[0], args[1:]
    prog = f"zerokv {command}" if command in COMMANDS else "zerokv"
    try:
        if command not in COMMANDS:
            raise UsageError(f"unknown command {command!r}; allowed: {', '.join(COMMANDS)} (see zerokv --help)")
        handlers = {"train": _train, "eval": _eval, "enjoy": _enjoy, "plot": _plot, "export": _export,
                    "bench": _bench}
        handlers[command](rest, debug)
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
