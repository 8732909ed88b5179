"""Config presets shipped inside the package: ``zerokv train --preset NAME`` loads ``NAME.yaml``.

A preset is a YAML file of ``TrainConfig`` keys, read exactly like a ``--config`` file (flags
override it), one per env as RL Zoo ships them. It lives here, as package data, so a
pip-installed zerokv has it too. ``measured.yaml`` records what each preset reached in a run
that was actually made (return, env steps, wall time, command), or says it is unmeasured;
``zerokv train --list-presets`` prints it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Literal, get_args

__all__ = ["PRESETS", "Preset", "describe_presets", "preset_path"]

Preset = Literal["cartpole", "acrobot", "lunarlander", "atari", "atari100k", "atari100k-cpu", "memory", "pendulum",
                 "dmc"]
"""The preset names (``--preset`` lists them); ``atari`` is UniZero on ALE/Pong-v5, ``pendulum`` and
``dmc`` are Sampled UniZero (continuous actions) on Pendulum-v1 and the DeepMind Control Suite."""
PRESETS: tuple[str, ...] = get_args(Preset)
MEASURED = "measured.yaml"


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name``; ValueError naming the allowed ones for another name."""
    from zerokv.checks import check_choice

    check_choice("preset", name, PRESETS)
    return Path(__file__).with_name(f"{name}.yaml")


def measured() -> dict[str, dict]:
    """``measured.yaml``: per preset, its env and what a real run of it reached (or why none)."""
    import yaml

    return yaml.safe_load(Path(__file__).with_name(MEASURED).read_text()) or {}


def describe_presets() -> str:
    """The table ``zerokv train --list-presets`` prints: each preset, its env, what it reached."""
    records = measured()
    lines = ["presets (zerokv train --preset NAME; flags override a preset):", ""]
    for name in PRESETS:
        record = records.get(name, {})
        lines.append(f"{name:12s} {record.get('env', '?')}")
        if record.get("eval_return") is not None:
            lines.append(f"{'':12s} reached {record['eval_return']} evaluation return at {record['env_steps']:,} env "
                         f"steps in {record['wall_minutes']} min ({record['date']}, {record['machine']})")
        status = record.get("status", "unmeasured: no run of this preset has been recorded")
        lines += textwrap.wrap(status, 100, initial_indent=" " * 13, subsequent_indent=" " * 13,
                               break_on_hyphens=False)
        lines.append(f"{'':12s} $ {record.get('command', f'zerokv train --preset {name}')}")
    return "\n".join(lines)
