"""Copying a world model's weights: into another model (cast to its dtype), or into a new one."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from zerokv.model.world_model import WorldModel


def check_state_dict(target: WorldModel, state: dict, *, strict: bool = True) -> None:
    """Raises ValueError before anything is copied unless ``state`` fits ``target``: a mapping of
    tensors with ``target``'s names (all of them if ``strict``), shapes, and finite values."""
    if not isinstance(state, dict):
        raise ValueError(f"load_state_dict: state_dict is a {type(state).__name__}; expected a mapping of tensors")
    mine = target.state_dict()
    names = [*mine, *(k for k in state if k not in mine)] if strict else [k for k in state if k in mine]
    for name in names:
        a, b = mine.get(name), state.get(name)
        if a is None or not isinstance(b, torch.Tensor) or a.shape != b.shape:
            found = tuple(b.shape) if isinstance(b, torch.Tensor) else (None if b is None else type(b).__name__)
            raise ValueError(f"load_state_dict: {name!r} is {found} in the state_dict and "
                             f"{None if a is None else tuple(a.shape)} in the model: nothing was loaded")
        if b.is_floating_point() and not bool(torch.isfinite(b).all()):
            raise ValueError(f"load_state_dict: {name!r} holds NaN or infinite values: nothing was loaded")


@torch.no_grad()
def load_weights(target: WorldModel, source: WorldModel) -> None:
    """Copy ``source``'s weights into ``target``, cast to ``target``'s dtype (caches untouched).

    The architectures must match: a ValueError names the first parameter that differs.
    """
    mine, theirs = target.state_dict(), source.state_dict()
    for name in [*mine, *(k for k in theirs if k not in mine)]:
        a, b = mine.get(name), theirs.get(name)
        if a is None or b is None or a.shape != b.shape:
            shapes = [None if t is None else tuple(t.shape) for t in (b, a)]
            raise ValueError(f"load_weights_from: parameter {name!r} of shape {shapes[0]} cannot be "
                             f"copied into {shapes[1]}: the architectures differ")
    for name, tensor in mine.items():
        tensor.copy_(theirs[name])  # casts (e.g. float32 → bfloat16)


def copy_model(model: WorldModel, **changes) -> WorldModel:
    """A new model with ``model``'s weights under ``dataclasses.replace(model.config, **changes)``,
    in ``model``'s train/eval mode; the caller's torch RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        copy = type(model)(dataclasses.replace(model.config, **changes), key_hash=model.key_hash)
    copy.train(model.training)
    copy.load_weights_from(model)
    return copy
