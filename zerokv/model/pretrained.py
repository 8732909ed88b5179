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

__all__ = ["CONFIG_NAME", "FORMAT", "WEIGHTS_NAME", "PretrainedError", "load_pretrained", "read_pretrained_config",
           "save_pretrained"]

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


def load_pretrained(cls: type[torch.nn.Module], directory: str | os.PathLike[str], **changes: Any) -> torch.nn.Module:
    """A ``cls`` model (a world model class, built as ``cls(config)``) with the saved config (``changes`` replace fields, e.g. ``device``,
    ``dtype``, ``env_num``, ``cache_backend``) and the saved weights, in eval mode.

    Raises ``PretrainedError`` for a missing or foreign file, a config this zerokv does not
    know, or weights that do not fit the config (naming the first tensor that differs)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    document = read_pretrained_config(directory)
    fields = dict(document["world_model_config"])
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(WorldModelConfig)})
    if unknown:
        raise PretrainedError(f"{Path(directory) / CONFIG_NAME}: unknown WorldModelConfig fields {unknown} "
                              f"(written by zerokv {document.get('zerokv_version')}, this is {__version__})")
    config = WorldModelConfig(**{**fields, **changes})
    path = Path(directory) / WEIGHTS_NAME
    try:
        weights = load_file(str(path))
    except FileNotFoundError:
        raise PretrainedError(f"{path} does not exist") from None
    except (SafetensorError, OSError) as e:
        raise PretrainedError(f"{path} is not a readable safetensors file: {e}") from None
    with torch.random.fork_rng(devices=[]):  # the init weights are overwritten: leave the caller's RNG alone
        model = cls(config)
    expected = model.state_dict()
    for name in [*expected, *(k for k in weights if k not in expected)]:
        a, b = expected.get(name), weights.get(name)
        if a is None or b is None or a.shape != b.shape:
            shapes = [None if t is None else tuple(t.shape) for t in (b, a)]
            raise PretrainedError(f"{path}: tensor {name!r} has shape {shapes[0]} in the file and {shapes[1]} "
                                  f"in the model of {CONFIG_NAME}: the files do not belong together")
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
