"""The continuous policy: a diagonal Gaussian over pre-squash actions u, squashed a = tanh(u) into [-1, 1].

The policy head's ``policy_logits [..., 2D]`` hold the means (first D) and the log standard
deviations (last D) of u. The standard deviation is ``exp(clamp(log_std, LOG_STD_MIN, LOG_STD_MAX))``
so it never collapses to 0 nor explodes. Actions handed to the model and stored in replay are the
squashed ``a`` in [-1, 1]; an env's bounds are applied by the env wrapper, not here.

Log-likelihood of a squashed action (change of variables):
``log π(a) = log N(atanh(a); μ, σ) − Σ_d log(1 − a_d²)``, with ``a`` clamped to
``±(1 − SQUASH_EPS)`` first (tanh never reaches ±1; a stored ±1 would give −inf).
"""

from __future__ import annotations

import math

import torch

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
"""Clamp of the head's log standard deviation: σ in [0.0067, 7.4]."""
SQUASH_EPS = 1e-3
"""Actions are clamped to [-1 + eps, 1 - eps] before atanh (LightZero clamps at 0.999 too)."""
_LOG_2PI = math.log(2.0 * math.pi)


def split(policy_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``policy_logits [..., 2D]`` → (mean [..., D], std [..., D]) of the pre-squash Gaussian."""
    mean, log_std = policy_logits.chunk(2, dim=-1)
    return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()


def log_prob(mean: torch.Tensor, std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Log-density of squashed ``actions [..., D]`` in [-1, 1] under tanh(N(mean, std)) → ``[...]``.

    ``mean``/``std`` broadcast against ``actions`` (e.g. ``[B, 1, D]`` against K samples ``[B, K, D]``).
    """
    a = actions.clamp(-1.0 + SQUASH_EPS, 1.0 - SQUASH_EPS)
    u = torch.atanh(a)
    z = (u - mean) / std
    gauss = -0.5 * (z * z + _LOG_2PI) - std.log()
    return (gauss - torch.log1p(-a * a)).sum(-1)


def entropy(std: torch.Tensor) -> torch.Tensor:
    """Entropy of the pre-squash Gaussian ``[..., D]`` → ``[...]`` (the squashed one has no closed form;
    LightZero's Sampled UniZero uses this one too)."""
    return (0.5 * (1.0 + _LOG_2PI) + std.log()).sum(-1)
