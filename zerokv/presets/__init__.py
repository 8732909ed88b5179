"""Config presets shipped inside the package: ``zerokv train --preset NAME`` loads ``NAME.yaml``.

A preset is a YAML file of ``TrainConfig`` keys, read exactly like a ``--config`` file (flags
override it). It lives here, as package data, so a pip-installed zerokv has it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

__all__ = ["PRESETS", "Preset", "preset_path"]

Preset = Literal["atari", "dmc"]
"""The preset names (``--preset`` lists them)."""
PRESETS: tuple[str, ...] = ("atari", "dmc")


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name``; ValueError naming the allowed ones for another name."""
    from zerokv.checks import check_choice

    check_choice("preset", name, PRESETS)
    return Path(__file__).with_name(f"{name}.yaml")
