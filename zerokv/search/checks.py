"""The checks ``muzero_search`` makes on each call: its per-call arguments and the root, then
every ``recurrent_fn`` result (the knobs were checked when the ``SearchConfig`` was built)."""

from __future__ import annotations

import numpy as np
import torch

from zerokv.checks import check_bool, check_float
from zerokv.search.config import SearchConfig
from zerokv.search.records import RecurrentFnOutput, RootFnOutput

__all__ = ["check_call", "check_recurrent_output", "validate_call"]


def check_call(
    config: SearchConfig,
    rng: np.random.Generator,
    legal_actions_mask: np.ndarray | None,
    add_noise: bool,
    temperature: float,
    batch: int,
    num_actions: int,
) -> np.ndarray:
    """Check the per-call arguments of a search of ``batch`` trees over ``num_actions`` actions
    (the config checked itself when it was built); return the legal mask [B, A] bool. Needs no
    root: ``plan`` calls it before the world model stores anything."""
    if not isinstance(config, SearchConfig):
        raise TypeError(f"config is a {type(config).__name__}; expected a zerokv.search.SearchConfig")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    check_bool("add_noise", add_noise)
    check_float("temperature", temperature, low=0.0)
    if legal_actions_mask is None:
        return np.ones((batch, num_actions), dtype=bool)
    legal = np.asarray(legal_actions_mask)
    if legal.shape != (batch, num_actions):
        raise ValueError(
            f"legal_actions_mask must have shape [B, A] = ({batch}, {num_actions}), "
            f"got {legal.shape}"
        )
    if legal.dtype != np.bool_:
        raise ValueError(f"legal_actions_mask must have dtype bool, got {legal.dtype}")
    no_legal = np.flatnonzero(~legal.any(axis=1))
    if no_legal.size:
        raise ValueError(
            f"every row of legal_actions_mask needs at least one legal action; "
            f"rows {no_legal.tolist()} have none"
        )
    return legal


def validate_call(
    root: RootFnOutput,
    config: SearchConfig,
    rng: np.random.Generator,
    legal_actions_mask: np.ndarray | None,
    add_noise: bool,
    temperature: float,
) -> np.ndarray:
    """Check the root (shapes, finite values and logits) and the per-call arguments of
    `muzero_search` (:func:`check_call`); return the legal mask [B, A] bool."""
    logits = np.asarray(root.policy_logits)
    if logits.ndim != 2 or logits.shape[0] < 1 or logits.shape[1] < 1:
        raise ValueError(
            f"root.policy_logits must have shape [B, A] with B, A >= 1, got shape {logits.shape}"
        )
    batch, num_actions = logits.shape
    value_shape = np.shape(root.value)
    if value_shape != (batch,):
        raise ValueError(f"root.value must have shape [B] = ({batch},), got {value_shape}")
    for name, x in (("root.value", root.value), ("root.policy_logits", logits)):
        x = np.asarray(x, dtype=np.float64)
        if not np.isfinite(x).all():
            rows = sorted({int(i) for i in np.argwhere(~np.isfinite(x.reshape(batch, -1)))[:, 0]})
            raise ValueError(f"{name} must be finite; rows {rows} hold NaN or inf")
    if not isinstance(root.latent, torch.Tensor):
        raise ValueError(f"root.latent must be a torch.Tensor, got {type(root.latent).__name__}")
    if root.latent.ndim < 2 or root.latent.shape[0] != batch:
        raise ValueError(
            f"root.latent must have shape [B, E] with B = {batch}, got {tuple(root.latent.shape)}"
        )
    return check_call(config, rng, legal_actions_mask, add_noise, temperature, batch, num_actions)


def check_recurrent_output(
    out: RecurrentFnOutput, root_latent: torch.Tensor, num_actions: int, sim: int, batch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shape/finiteness checks of one `recurrent_fn` result for `batch` rows; returns
    (reward [R], value [R], policy_logits [R, A]) as float64 arrays."""
    reward = np.asarray(out.reward, dtype=np.float64)
    value = np.asarray(out.value, dtype=np.float64)
    logits = np.asarray(out.policy_logits, dtype=np.float64)
    where = f"recurrent_fn output at call {sim}"
    if reward.shape != (batch,) or value.shape != (batch,):
        raise ValueError(
            f"{where}: reward and value must have shape ({batch},), "
            f"got {reward.shape} and {value.shape}"
        )
    if logits.shape != (batch, num_actions):
        raise ValueError(
            f"{where}: policy_logits must have shape ({batch}, {num_actions}), got {logits.shape}"
        )
    want = (batch, *root_latent.shape[1:])
    if tuple(out.latent.shape) != want:
        raise ValueError(f"{where}: latent must have shape {want}, got {tuple(out.latent.shape)}")
    if not (np.isfinite(reward).all() and np.isfinite(value).all()):
        raise ValueError(
            f"{where}: reward and value must be finite, got reward={reward}, value={value}"
        )
    if not np.isfinite(logits).all():
        rows = sorted({int(i) for i in np.argwhere(~np.isfinite(logits))[:, 0]})
        raise ValueError(f"{where}: policy_logits must be finite; rows {rows} hold NaN or inf")
    if not bool(torch.isfinite(out.latent).all()):
        raise ValueError(f"{where}: latent must be finite; it holds NaN or inf")
    return reward, value, logits
