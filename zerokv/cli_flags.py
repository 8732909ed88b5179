"""What the CLI knows about a config dataclass's flags, without tyro: their names, which ones a
command line set, the nearest flag to a typo, and ``zerokv train --help`` grouped into sections.

Flags are the dataclass's fields, ``--field-name`` (``--field_name`` too, as tyro accepts), and
``--no-field-name`` for a boolean. The help text of a field is its docstring (the string
literal under it in the class body), as tyro reads it.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import os
import textwrap
import types
import typing
from collections.abc import Sequence
from functools import cache

import tyro

__all__ = ["TRAIN_SECTIONS", "explicit_fields", "field_docs", "render_help", "unknown_flag"]

TRAIN_SECTIONS: dict[str, tuple[str, ...]] = {
    "run": ("out", "resume", "overwrite", "config", "preset", "seed", "device", "threads"),
    "env": ("env", "total_env_steps", "num_envs", "vector_env", "clip_rewards", "terminal_on_life_loss",
            "frame_skip", "sticky_action_prob", "full_action_space", "max_episode_frames", "memory_length",
            "action_repeat", "allow_env_import"),
    "model": ("embed_dim", "num_layers", "num_heads", "context_length", "support_size", "compile", "encoder", "encoder_channels",
              "encoder_blocks", "cache_backend",
              "use_new_cache_manager", "keep_root_context", "history_steps"),
    "search": ("num_simulations", "leaves_per_call", "num_sampled_actions", "search_dtype", "discount", "dirichlet_alpha",
               "exploration_fraction", "temperature_start", "temperature_end", "temperature_decay_steps"),
    "learning": ("batch_size", "unroll_steps", "td_steps", "learning_rate", "weight_decay", "grad_clip",
                 "fresh_value_targets", "value_bootstrap", "target_update_rate", "target_label_smoothing",
                 "replay_ratio", "collect_steps", "segment_length",
                 "min_replay_steps", "replay_capacity", "replay_sampling", "reanalyze_per_iteration", "reanalyze_batch",
                 "learner_dtype"),
    "evaluation": ("eval_every", "eval_episodes", "final_eval_episodes", "eval_max_steps", "stop_return"),
    "checkpoints": ("checkpoint_every", "checkpoint_every_minutes", "keep_checkpoints", "save_replay"),
    "collectors": ("collectors", "weight_sync_every", "collector_queue", "collector_cpus", "collector_gpus",
                   "collector_restarts", "collector_timeout", "ray_address"),
    "logging": ("progress", "track", "wandb_project", "wandb_entity"),
}
"""``zerokv train --help``'s sections, in order; a field in none of them is listed under "other"."""
HELP_WIDTH = 100


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_bool(hint) -> bool:
    """A flag pair ``--x``/``--no-x`` (``bool | None`` takes a value: True, False or None)."""
    return hint is bool


def _optional_of(hint):
    """X for ``X | None``, else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return None


@cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls, include_extras=True)


def known_flags(cls) -> dict[str, str]:
    """Every flag the command accepts -> its field (``--no-x`` for booleans; both spellings)."""
    flags = {"--help": "help", "-h": "help"}
    for f in dataclasses.fields(cls):
        for spelling in (_flag(f.name), "--" + f.name):
            flags[spelling] = f.name
            if _is_bool(_hints(cls)[f.name]):
                flags[spelling[:2] + "no-" + spelling[2:]] = f.name
                flags[spelling[:2] + "no_" + spelling[2:]] = f.name
    return flags


def _flags_in(argv: Sequence[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in argv if arg.startswith("--")]


def explicit_fields(argv: Sequence[str], cls) -> set[str]:
    """The fields ``argv`` sets, whatever their values (a flag given the default value counts)."""
    flags = known_flags(cls)
    return {flags[flag] for flag in _flags_in(argv) if flag in flags} - {"help"}


def unknown_flag(argv: Sequence[str], cls) -> str | None:
    """One line naming the first flag of ``argv`` that ``cls`` lacks and the nearest ones it has,
    or None if every flag is known."""
    flags = known_flags(cls)
    for flag in _flags_in(argv):
        if flag not in flags:
            close = difflib.get_close_matches(flag, [f for f in flags if "_" not in f], n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            return f"unknown flag {flag}{hint}"
    return None


@cache
def field_docs(cls) -> dict[str, str]:
    """Each field's docstring, on one line, from the class body (and its bases')."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _metavar(hint) -> str:
    """A readable value name: INT, FLOAT, STR, {a,b}, or the metavar a field's annotation gives."""
    inner = _optional_of(hint)
    if inner is not None and typing.get_origin(inner) is typing.Annotated:
        hint = inner
    if typing.get_origin(hint) is typing.Annotated:
        for extra in hint.__metadata__:
            metavar = getattr(extra, "metavar", None)
            if metavar:
                return metavar
        hint = typing.get_args(hint)[0]
    inner = _optional_of(hint)
    if inner is bool:
        return "{True,False,None}"
    hint = inner if inner is not None else hint
    if typing.get_origin(hint) is typing.Literal:
        return "{" + ",".join(str(v) for v in typing.get_args(hint)) + "}"
    if typing.get_origin(hint) is tuple and typing.get_args(hint)[1:] == (Ellipsis,):  # tuple[X, ...]
        item = _metavar(typing.get_args(hint)[0])
        return f"{item} [{item} ...]"
    return {int: "INT", float: "FLOAT", str: "STR"}.get(hint, "VALUE")


def _default_text(value, grouped: bool = True) -> str:
    if value is _REQUIRED:
        return " (required)"
    if isinstance(value, bool) or value is None:
        return "" if value is None else f" (default: {'on' if value else 'off'})"
    if isinstance(value, int) and grouped:
        return f" (default: {value:,})"  # 30,000: no line break inside a number (no space in it)
    return f" (default: {value})"


def _is_positional(hint) -> bool:
    """A field annotated ``tyro.conf.Positional[...]``: given without a flag."""
    return typing.get_origin(hint) is typing.Annotated and tyro.conf.Positional in hint.__metadata__


def render_help(cls, prog: str, sections: dict[str, tuple[str, ...]] | None = None,
                default=None) -> str:
    """``prog --help`` for dataclass ``cls``: its docstring, its positional arguments, then each
    section's flags with a readable value name, the field's docstring and its default (from
    ``default`` if given)."""
    width = min(HELP_WIDTH, max(60, _terminal_width()))
    docs, hints = field_docs(cls), _hints(cls)
    positional = [f.name for f in dataclasses.fields(cls) if _is_positional(hints[f.name])]
    fields = [f.name for f in dataclasses.fields(cls) if f.name not in positional]
    sections = dict(sections or {"options": tuple(fields)})
    placed = {name for names in sections.values() for name in names}
    sections["other"] = tuple(name for name in fields if name not in placed)
    usage = " ".join([f"usage: {prog} [--help] [FLAGS]", *(f"{name.upper()}..." for name in positional)])
    lines = [usage, "", (inspect.getdoc(cls) or "").strip()]
    if positional:
        lines += ["", "positional arguments:"]
        for name in positional:
            lines.append(f"  {name.upper()}...")
            lines += textwrap.wrap(docs.get(name, ""), width, initial_indent=" " * 6, subsequent_indent=" " * 6,
                                   break_on_hyphens=False, break_long_words=False)
    for title, names in sections.items():
        names = [name for name in names if name in fields]
        if not names:
            continue
        lines += ["", f"{title}:"]
        for name in names:
            hint = hints[name]
            flag = (f"{_flag(name)}, --no-{_flag(name)[2:]}" if _is_bool(hint)
                    else f"{_flag(name)} {_metavar(hint)}")
            text = docs.get(name, "") + _default_text(_default_of(cls, name, default), grouped="seed" not in name)
            lines.append(f"  {flag}")
            lines += textwrap.wrap(text, width, initial_indent=" " * 6, subsequent_indent=" " * 6,
                                   break_on_hyphens=False, break_long_words=False)
    return "\n".join(lines)


_REQUIRED = object()


def _default_of(cls, name: str, default):
    """The value ``name`` has when not passed: ``default``'s, else the field's own."""
    if default is not None:
        return getattr(default, name)
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return _REQUIRED


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns - 2
    except OSError:
        return HELP_WIDTH
