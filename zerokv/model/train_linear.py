"""Training matmuls through oneDNN: a linear layer whose forward and backward run oneDNN's kernel.

Why: with autograd, ``F.linear`` and its backward go to MKL's sgemm, which runs float32 below
oneDNN's rate at the learner's shapes on AVX-512 CPUs (``python -m zerokv.bench.learner``
measures it; figures in docs/training.md). The three products of a linear layer — ``y = x Wᵀ + b``, ``∂x = ∂y W``, ``∂W = ∂yᵀ x`` — are each one oneDNN linear here:
the backward's as linears of transposed operands, made contiguous first (small next to the
matmul).

The results are the same sums in another order: float32 rounding apart (≈1e-6 relative) from
``F.linear`` and its autograd backward, as the inference path of :mod:`zerokv.model.linear` is.
:func:`onednn_training` says where this path is taken: float32 CPU tensors with a gradient to
compute, no autocast (under autocast ``F.linear`` runs in the autocast dtype) and matmuls of at
least ``ONEDNN_MIN_MACS`` multiply-adds (CartPole's small ones stay on MKL).
"""

from __future__ import annotations

import torch

_LINEAR = torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None


def onednn_training(x: torch.Tensor, weight: torch.Tensor, min_macs: int) -> bool:
    """True where :class:`OneDNNLinear` replaces ``F.linear``: float32 CPU ``x`` and ``weight``,
    autograd recording (``x`` or ``weight`` needs a gradient), no CPU autocast, and a matmul of at
    least ``min_macs`` multiply-adds."""
    if _LINEAR is None or x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    return x.numel() * weight.shape[0] >= min_macs


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return _LINEAR(x, weight, bias, "none", [], "")


class OneDNNLinear(torch.autograd.Function):
    """``y = x @ weight.T + bias`` for ``x (..., in)``, ``weight (out, in)``, ``bias (out,)`` or None,
    every product in oneDNN (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_rows = grad.reshape(-1, grad.shape[-1])  # (N, out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # (N, out) @ (out, in): a linear with weight Wᵀ (in, out)
            grad_x = _onednn_linear(grad_rows, weight.t().contiguous()).view(x.shape)
        if ctx.needs_input_grad[1]:  # (out, N) @ (N, in): a linear of ∂yᵀ with weight xᵀ (in, N)
            x_rows = x.reshape(-1, x.shape[-1])
            grad_w = _onednn_linear(grad_rows.t().contiguous(), x_rows.t().contiguous())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_rows.sum(0)
        return grad_x, grad_w, grad_b
