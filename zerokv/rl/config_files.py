"""``--preset`` and ``--config`` files: the keys they set for a `zerokv.rl.config.TrainConfig`.

Values come from, lowest first: the defaults, a preset shipped with zerokv, a ``--config`` file
(YAML or TOML), the command line's flags; :func:`file_overrides` merges the middle two. A file is
data: unknown keys, keys only the command line may set and an ``env`` that would import code
without the user's opt-in are refused with a ValueError naming them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from zerokv.presets import preset_path
from zerokv.rl.config import TrainConfig
from zerokv.rl.envs import check_env_id

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["FILE_REFUSED_KEYS", "file_overrides", "load_overrides"]

FILE_REFUSED_KEYS = ("allow_env_import",)  # a config file cannot allow itself to import code


def file_overrides(preset: str | None, config: str | Path | None, *, allow_env_import: bool = False) -> dict:
    """The keys a ``--preset`` and a ``--config`` file set, the file's over the preset's (a
    file may name its own ``preset``, used when none is given); an ``env`` in either must pass
    :func:`zerokv.rl.envs.check_env_id` (``allow_env_import``: the caller's opt-in or a typed --env)."""
    data = load_overrides(config, allow_env_import=allow_env_import) if config is not None else {}
    preset = preset if preset is not None else data.get("preset")
    base = load_overrides(preset_path(preset), allow_env_import=allow_env_import) if preset is not None else {}
    return {**base, **data, **({"preset": preset} if preset is not None else {})}


def load_overrides(path: str | Path, *, allow_env_import: bool = False) -> dict:
    """Keys of a YAML (.yaml/.yml) or TOML (.toml) file; unknown keys raise ValueError naming them,
    and so do keys of :data:`FILE_REFUSED_KEYS` and an ``env`` that :func:`check_env_id` refuses."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ValueError(f"config file {path}: unknown suffix {path.suffix!r}; allowed: .yaml, .yml, .toml")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else (yaml.safe_load(text) or {})
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"config file {path} is not valid {path.suffix[1:].upper()}: {e}") from e
    except RecursionError:
        raise ValueError(f"config file {path} nests too deeply: expected a flat mapping of flags to values") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of flag names to values")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"config file {path}: unknown keys {unknown}; allowed: {sorted(known)}")
    refused = sorted(set(data) & set(FILE_REFUSED_KEYS))
    if refused:
        raise ValueError(f"config file {path} sets {refused}: only the command line (or Python) may set it")
    if "env" in data:  # a file's env is data: a registered id, or imported only when allowed
        check_env_id(data["env"], source=f"config file {path}", allow_import=allow_env_import)
    return data

