"""Actions as the world model takes them: discrete ints or continuous vectors, checked once.

A model with ``config.action_dim`` = 0 takes ints ``0 … action_space_size-1`` and embeds them with
a table; with D > 0 it takes float32 vectors of D entries in [-1, 1] (an env's bounded ``Box``
rescaled) and embeds them with a learned linear projection. The world model's entry points call
these helpers and never branch on the action kind themselves.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from zerokv.model import inputs
from zerokv.model.config import WorldModelConfig
from zerokv.model.linear import Linear

__all__ = ["as_tensor", "checked", "embedding", "history", "sequence"]


def embedding(config: WorldModelConfig) -> nn.Module:
    """The action-token layer: a table of A embeddings, or a projection ``Linear(D, E)`` of the vector."""
    if config.continuous:
        return Linear(config.action_dim, config.embed_dim)
    return nn.Embedding(config.action_space_size, config.embed_dim)


def checked(config: WorldModelConfig, values, batch: int, *, name: str, allow_no_action: bool) -> tuple:
    """Checked actions of ``batch`` rows and, per row, ``NO_ACTION`` or an action (the cache's "was one given").

    Discrete: a list of ints (both). Continuous: a float32 array ``[batch, D]`` (see
    :func:`inputs.action_vectors`) and a list of 0 / ``NO_ACTION``.
    """
    if not config.continuous:
        acts = inputs.actions(values, batch, config.action_space_size, name=name, allow_no_action=allow_no_action)
        return acts, acts
    acts, present = inputs.action_vectors(values, batch, config.action_dim, name=name,
                                          allow_no_action=allow_no_action)
    return acts, [0 if p else inputs.NO_ACTION for p in present]


def history(config: WorldModelConfig, actions, b: int, t: int) -> np.ndarray:
    """``actions`` of ``b`` histories of ``t`` observations: int64 ``[b, t-1]`` (continuous ``[b, t-1, D]``)."""
    if config.continuous:
        d = config.action_dim
        arr = np.asarray(actions.detach().cpu() if torch.is_tensor(actions) else actions, np.float32)
        if arr.size != b * (t - 1) * d:
            raise ValueError(f"actions of shape {arr.shape} for {b} histories of {t} observations "
                             f"(need [B, T-1, {d}])")
        arr = arr.reshape(b, t - 1, d)
        inputs.action_vectors(arr.reshape(-1, d), b * (t - 1), d, name="actions", allow_no_action=False)
        return arr
    acts = inputs.integers(actions, "actions")
    if acts.size != b * (t - 1):
        raise ValueError(f"{acts.size} actions for {b} histories of {t} observations (need [B, T-1])")
    acts = acts.reshape(b, t - 1)
    inputs.actions(acts.reshape(-1), acts.size, config.action_space_size, name="actions", allow_no_action=False)
    return acts


def as_tensor(config: WorldModelConfig, actions, device) -> torch.Tensor:
    """Checked actions as the action embedding takes them: int64, or ``[..., D]`` in the model's dtype."""
    if config.continuous:
        return torch.as_tensor(np.asarray(actions), device=device, dtype=config.torch_dtype)
    return torch.as_tensor(actions, device=device)


def sequence(config: WorldModelConfig, actions: torch.Tensor) -> torch.Tensor:
    """Training actions ``[B, K+1]`` int64 (continuous ``[B, K+1, D]``) as the embedding takes them."""
    return actions.float() if config.continuous else actions
