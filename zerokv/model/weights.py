"""Copying a world model's weights: into another model (cast to its dtype), or into a new one."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn


def check_state_dict(target: nn.Module, state: dict, *, strict: bool = True) -> None:
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


class WeightsMixin:
    """Mixin of :class:`~zerokv.model.world_model.WorldModel`: its weights copied in or out, all
    or nothing, and the caches built from the old weights cleared."""

    def copy_with(self, **changes):
        """A new model with this one's weights (cast) under ``dataclasses.replace(config, **changes)``
        (e.g. ``dtype="bfloat16"``, ``cache_backend="none"``): its own weights and caches, this
        model's train/eval mode; the caller's torch RNG is left untouched."""
        return copy_model(self, **changes)

    def load_weights_from(self, other: nn.Module) -> None:
        """Copy ``other``'s weights, cast to this model's dtype, and clear the caches (their keys and
        values came from the old weights; ``rebuild_root_contexts`` restores root contexts). How a
        bfloat16 search copy follows its float32 training model. The architectures must match.
        All or nothing: the thread and every shape are checked before the first tensor is copied."""
        self._owner.check("load_weights_from")
        load_weights(self, other)
        self.clear_caches()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, all or nothing: the calling thread (as for every entry
        point), the names, shapes and finiteness of every tensor are checked before the first is
        copied; then the caches built from the old weights are cleared."""
        self._owner.check("load_state_dict")
        check_state_dict(self, state_dict, strict=strict)
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.clear_caches()
        return result
