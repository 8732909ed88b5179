"""A world model's weights on their own, to share: ``model.safetensors`` plus ``config.json``.

``save_pretrained(directory, model_config, weights, extra)`` writes a directory that
``WorldModel.from_pretrained(directory)`` turns back into a model (``zerokv export`` writes one
from a training checkpoint). The weights are a flat safetensors file — tensors only, no code:
loading it runs nothing, and other tools (``safetensors.torch.load_file``) read it as is. The JSON
beside it holds the model's ``WorldModelConfig`` and whatever ``extra`` the writer added (``zerokv
export``: the env id, the training config, the step and evaluation return).

Layout of ``config.json``::

    {"format": "zerokv-world-model", "format_version": 1, "zerokv_version": "0.1.0",
     "world_model_config": {...WorldModelConfig fields...}, ...extra}
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from zerokv.errors import PretrainedError
from zerokv.io import atomic_write_bytes
from zerokv.model.config import WorldModelConfig
from zerokv.version import __version__

__all__ = ["CONFIG_NAME", "FORMAT", "WEIGHTS_NAME", "PretrainedError", "build_checked", "check_weights",
           "load_pretrained", "read_pretrained_config", "save_pretrained"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "zerokv-world-model"
FORMAT_VERSION = 1




def save_pretrained(directory: str | os.PathLike[str], model_config: WorldModelConfig | dict,
                    weights: dict[str, torch.Tensor], extra: dict[str, Any] | None = None) -> Path:
    """Writes ``weights`` (a world model's ``state_dict``, saved as float32 contiguous CPU
    tensors) and ``model_config`` (plus ``extra`` keys, JSON-serialisable) into ``directory``,
    created if needed; returns it."""
    from safetensors.torch import save

    directory = Path(directory)
    config = dataclasses.asdict(model_config) if isinstance(model_config, WorldModelConfig) else dict(model_config)
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    config["dtype"] = "float32"  # what is stored; from_pretrained(dtype="bfloat16") casts
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in weights.items()}
    atomic_write_bytes(directory / WEIGHTS_NAME, save(tensors, metadata={"format": FORMAT}))
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "zerokv_version": __version__,
                "world_model_config": config, **(extra or {})}
    atomic_write_bytes(directory / CONFIG_NAME, (json.dumps(document, indent=2) + "\n").encode())
    return directory


def read_pretrained_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` of an exported directory, checked to be one (a PretrainedError
    names the file and the problem)."""
    path = Path(directory) / CONFIG_NAME
    if not Path(directory).is_dir():
        raise PretrainedError(f"{directory} is not a directory written by zerokv export / save_pretrained")
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise PretrainedError(f"{path} does not exist: {directory} is not an exported zerokv model") from None
    except json.JSONDecodeError as e:
        raise PretrainedError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise PretrainedError(f"{path} is not a zerokv model config (no \"format\": \"{FORMAT}\")")
    if document.get("format_version") != FORMAT_VERSION:
        raise PretrainedError(f"{path} has format_version {document.get('format_version')!r}; this zerokv "
                              f"reads {FORMAT_VERSION}")
    return document


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors file, from its header alone (no tensor is
    read; the library checks the header's offsets against the file's size)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118
    except FileNotFoundError:
        raise PretrainedError(f"{path} does not exist") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise PretrainedError(f"{path} is not a readable safetensors file: {e}") from None


def check_weights(weights: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], source: str) -> None:
    """Raises PretrainedError unless ``weights`` has exactly the ``expected`` names and shapes and
    holds only finite floating-point numbers (naming the first tensor that does not)."""
    for name in [*expected, *(k for k in weights if k not in expected)]:
        a, b = expected.get(name), weights.get(name)
        if a is None or not isinstance(b, torch.Tensor) or tuple(b.shape) != tuple(a):
            found = tuple(b.shape) if isinstance(b, torch.Tensor) else (None if b is None else type(b).__name__)
            raise PretrainedError(f"{source}: tensor {name!r} is {found} in the file and {a} in the model of its "
                                  "config: the weights and the config do not belong together")
        if not b.is_floating_point():
            raise PretrainedError(f"{source}: tensor {name!r} has dtype {b.dtype}; weights are floating point")
        if not bool(torch.isfinite(b).all()):
            raise PretrainedError(f"{source}: tensor {name!r} holds NaN or infinite values")


def build_checked(cls: type[torch.nn.Module], fields: dict[str, Any], changes: dict[str, Any],
                  shapes: dict[str, tuple[int, ...]], source: str) -> torch.nn.Module:
    """A ``cls`` model of ``WorldModelConfig(**fields, **changes)`` once the config is known to fit
    weights of ``shapes`` (:func:`zerokv.model.bounds.check_config_fits`) and their shapes match
    the built model's; the caller's torch RNG is left alone (the init weights are overwritten)."""
    from zerokv.model.bounds import check_config_fits, parameter_count

    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(WorldModelConfig)})
    if unknown:
        raise PretrainedError(f"{source}: unknown WorldModelConfig fields {unknown}")
    try:
        config = WorldModelConfig(**{**fields, **changes})
    except (TypeError, ValueError) as e:
        raise PretrainedError(f"{source}: {e}") from None
    try:
        check_config_fits(config, parameter_count(shapes.values()), source, explicit=changes)
    except ValueError as e:
        raise PretrainedError(str(e)) from None
    with torch.random.fork_rng(devices=[]):
        model = cls(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    for name in [*expected, *(k for k in shapes if k not in expected)]:
        if expected.get(name) != shapes.get(name):
            raise PretrainedError(f"{source}: tensor {name!r} has shape {shapes.get(name)} in the file and "
                                  f"{expected.get(name)} in the model of its config: they do not belong together")
    return model


def load_pretrained(cls: type[torch.nn.Module], directory: str | os.PathLike[str], **changes: Any) -> torch.nn.Module:
    """A ``cls`` model (a world model class, built as ``cls(config)``) with the saved config (``changes`` replace fields, e.g. ``device``,
    ``dtype``, ``env_num``, ``cache_backend``) and the saved weights, in eval mode.

    Everything is checked before anything large is allocated: the config's fields against the
    parameters the safetensors header declares (:mod:`zerokv.model.bounds`), the built model's
    shapes against the header's, then the weights' values (finite). Raises ``PretrainedError``
    for a missing or foreign file, a config this zerokv does not know or that does not fit the
    weights, or weights that do not fit the config (naming the field or tensor)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    document = read_pretrained_config(directory)
    fields = document.get("world_model_config")
    config_path = Path(directory) / CONFIG_NAME
    if not isinstance(fields, dict):
        raise PretrainedError(f"{config_path}: world_model_config must be a mapping of field names to values")
    path = Path(directory) / WEIGHTS_NAME
    model = build_checked(cls, fields, changes, _header_shapes(path), str(config_path))
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise PretrainedError(f"{path} is not a readable safetensors file: {e}") from None
    check_weights(weights, {k: tuple(v.shape) for k, v in model.state_dict().items()}, str(path))
    model.load_state_dict(weights)  # cast to config.dtype, moved to config.device
    return model.eval()


class PretrainedMixin:
    """``from_pretrained`` / ``save_pretrained`` on :class:`zerokv.WorldModel` (as Hugging Face's
    model mixins add them)."""

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], **changes: Any):
        """The model saved in ``directory`` (by ``zerokv export`` or ``save_pretrained``), in eval
        mode; ``changes`` replace config fields (``device``, ``dtype``, ``env_num``, …)."""
        return load_pretrained(cls, directory, **changes)

    def save_pretrained(self, directory: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
        """Writes this model's weights and config into ``directory`` (``extra``: more JSON keys)."""
        return save_pretrained(directory, self.config, self.state_dict(), extra)
