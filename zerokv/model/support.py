"""MuZero's categorical value/reward representation.

Scalars are squashed with ``h(x) = sign(x)(sqrt(|x|+1) - 1) + eps·x`` and spread as a two-hot
vector over the integer support ``[-S, S]`` (``2S+1`` bins). A categorical head is trained with
cross-entropy, which is scale-free: CartPole's returns (~0–300) and Atari's clipped rewards fit the
same heads without retuning — the reason UniZero (and zerokv) use it instead of a scalar regression.
"""

from __future__ import annotations

import functools

import torch

EPS = 0.001


def h_transform(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * (torch.sqrt(torch.abs(x) + 1) - 1) + EPS * x


def h_inverse(y: torch.Tensor) -> torch.Tensor:
    # Closed form of the inverse of h (MuZero appendix F).
    return torch.sign(y) * (
        ((torch.sqrt(1 + 4 * EPS * (torch.abs(y) + 1 + EPS)) - 1) / (2 * EPS)) ** 2 - 1
    )


def scalar_to_support(x: torch.Tensor, support_size: int) -> torch.Tensor:
    """``x [...]`` → two-hot targets ``[..., 2S+1]`` over the squashed support."""
    y = h_transform(x).clamp(-support_size, support_size)
    low = y.floor()
    frac = y - low
    out = torch.zeros(*x.shape, 2 * support_size + 1, dtype=x.dtype, device=x.device)
    idx = (low + support_size).long()
    out.scatter_(-1, idx.unsqueeze(-1), (1 - frac).unsqueeze(-1))
    upper = (idx + 1).clamp(max=2 * support_size)
    # At the top bin frac is 0, so adding into the same bin is harmless.
    out.scatter_add_(-1, upper.unsqueeze(-1), frac.unsqueeze(-1))
    return out


def smooth_labels(targets: torch.Tensor, eps: float) -> torch.Tensor:
    """``targets [..., N]`` (distributions) mixed with the uniform one: ``(1-eps)·targets + eps/N``,
    LightZero's label smoothing of its two-hot targets; ``eps=0`` returns ``targets`` itself."""
    return targets if eps == 0 else (1.0 - eps) * targets + eps / targets.shape[-1]


def support_to_scalar(logits: torch.Tensor, support_size: int) -> torch.Tensor:
    """``logits [..., 2S+1]`` → expected scalar ``[...]`` (softmax, mean over support, h⁻¹).

    Computed in float64: h⁻¹'s closed form subtracts nearly equal numbers and divides by 2·eps,
    which in float32 turns a 1e-7 rounding difference into 1e-4. Returned in the logits' dtype,
    but at least float32: bfloat16 logits (a bfloat16 search model) still give a float32 scalar
    rather than one rounded to ~3 significant digits.
    """
    y = (torch.softmax(logits.double(), dim=-1) * _support(support_size, logits.device)).sum(-1)
    return h_inverse(y).to(torch.promote_types(logits.dtype, torch.float32))


@functools.lru_cache(maxsize=8)
def _support(support_size: int, device: torch.device) -> torch.Tensor:
    """``(2S+1,)`` float64 ``[-S, …, S]``, built once per (size, device): every search call needs it."""
    return torch.arange(-support_size, support_size + 1, dtype=torch.float64, device=device)
