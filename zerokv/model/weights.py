"""Copying a world model's weights: into another model (cast to its dtype), or into a new one."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn


@torch.no_grad()
def load_weights(target: nn.Module, source: nn.Module) -> None:
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


def copy_model(model: nn.Module, **changes) -> nn.Module:
    """A new world model (``type(model)``) with ``model``'s weights under ``dataclasses.replace(model.config, **changes)``,
    in ``model``'s train/eval mode; the caller's torch RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        copy = type(model)(dataclasses.replace(model.config, **changes), key_hash=model.key_hash)
    copy.train(model.training)
    copy.load_weights_from(model)
    return copy
