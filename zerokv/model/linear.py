"""Linear layers (and the image encoder's convolutions) whose inference runs through oneDNN on the CPU.

Why: ``F.linear`` in float32 goes to MKL's sgemm, which runs the world model's search shapes
slower than oneDNN's ``mkldnn::_linear_pointwise`` (the kernel ``torch.compile`` emits for CPU
linears) on AVX-512 CPUs. In bfloat16 both already use oneDNN; there the gain is the fused GELU
epilogue.

The weight goes to oneDNN *prepacked* (:func:`packed_weight`: its blocked layout, made once per
weight version), as ``torch.compile``'s freezing pass does: given the plain ``(out, in)`` matrix,
oneDNN reorders it on every call. Packed outputs are bit-identical to plain ones at every row
count. oneDNN costs more per call than MKL, so small float32 matmuls (CartPole's embed-64 model)
stay on MKL: oneDNN is used from :data:`ONEDNN_MIN_MACS` multiply-adds per call, where it
measured at least as fast. The figures behind each choice are in docs/benchmarks.md ("Kernel
choices, measured").

The fast path is taken only where it cannot change training: CPU tensors, float32 (large enough)
or bfloat16, no autograd (search, reanalysis and evaluation run under ``torch.no_grad``) and no
autocast (the learner's bfloat16 mode: ``F.linear`` and the convolution then run in the autocast
dtype). Training's large float32 matmuls take oneDNN too, through the autograd function of
:mod:`zerokv.model.train_linear`; everything else — other devices, other dtypes — is plain
``F.linear``. The two compute the same sums in another order, ≈1e-6 relative apart; since the choice depends on the row count, a
``none`` recompute (more rows) may take oneDNN where a cached call took MKL, which the exactness
tests' 1e-5 tolerance covers (and the search's visit counts are still identical: tested).

:class:`Linear` and :class:`MLP` keep ``nn.Linear``'s and ``nn.Sequential``'s parameter names, so
checkpoints are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.weak import WeakIdKeyDictionary

from zerokv.model.train_linear import OneDNNLinear, onednn_training

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
ONEDNN_MIN_MACS = 1_100_000
"""Smallest float32 matmul (rows × in × out multiply-adds) sent to oneDNN (prepacked weight): the
measured crossover (docs/benchmarks.md, "Kernel choices, measured")."""


def onednn_inference(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True where oneDNN's fused inference kernels may run: CPU, float32 or bfloat16 (the same for
    ``x`` and ``weight``), no autograd and no CPU autocast."""
    if not _ONEDNN or x.device.type != "cpu" or weight.dtype != x.dtype or torch.is_autocast_enabled("cpu"):
        return False
    if x.dtype not in (torch.float32, torch.bfloat16):
        return False
    return not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True where :func:`linear` runs through oneDNN: :func:`onednn_inference`, and bfloat16 or a
    float32 matmul of at least :data:`ONEDNN_MIN_MACS` multiply-adds."""
    if not onednn_inference(x, weight):
        return False
    return x.dtype == torch.bfloat16 or x.numel() * weight.shape[0] >= ONEDNN_MIN_MACS


_PACKED: WeakIdKeyDictionary = WeakIdKeyDictionary()
"""weight → ((version, data pointer), its oneDNN-packed copy); an entry dies with its weight."""


def packed_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight (out, in)`` in oneDNN's blocked layout (an opaque ``torch._mkldnn`` tensor), for
    ``mkldnn::_linear_pointwise``.

    Made on first use and again whenever the weight changes, so a search never sees stale
    weights: an in-place update (``load_state_dict``, ``copy_``, ``lerp_``, a foreach optimizer
    step) bumps ``weight._version``, a swapped ``.data`` moves its data pointer, and every
    optimizer step — including fused ones (``AdamW(fused=True)``), which write without bumping
    the version — drops the packed copies of that optimizer's parameters (a global step hook,
    :func:`_drop_packed_after_step`). Only a write through ``weight.data`` (which autograd does
    not see either) needs :func:`forget_packed_weights`. Costs a second copy of every packed
    weight. Inference tensors (made under ``torch.inference_mode``) have no version counter, so
    they are never packed (plain-weight oneDNN: same results, slower).
    """
    if weight.is_inference():
        return weight
    stamp = (weight._version, weight.data_ptr())
    entry = _PACKED.get(weight)
    if entry is None or entry[0] != stamp:
        entry = (stamp, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None))
        _PACKED[weight] = entry
    return entry[1]


def forget_packed_weights(module: nn.Module | None = None) -> None:
    """Drop the packed copies of ``module``'s parameters (all of them if None); they are remade on
    next use. Needed only after a write through ``weight.data`` (see :func:`packed_weight`)."""
    if module is None:
        _PACKED.clear()
        return
    for param in module.parameters():
        _PACKED.pop(param, None)


def _drop_packed_after_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """After any optimizer's step: its parameters' packed copies are stale (a fused step writes
    the weights without bumping their version counters); they are remade on next use."""
    if not _PACKED:
        return
    for group in optimizer.param_groups:
        for param in group["params"]:
            _PACKED.pop(param, None)


if _ONEDNN:  # the packed copies are this module's; so is keeping them current
    register_optimizer_step_post_hook(_drop_packed_after_step)


def conv2d_gelu(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``gelu(conv(x))`` (exact erf GELU), the GELU fused into oneDNN's convolution at inference.

    CPU convolutions run through oneDNN anyway, so the fused kernel costs no extra call; it saves
    the GELU's pass over the activations (docs/benchmarks.md, "Kernel choices, measured"); ≤ 2.4e-7 apart
    from the unfused form in float32 (bfloat16: one rounding of the convolution's output fewer).
    """
    if onednn_inference(x, conv.weight) and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple):
        return torch.ops.mkldnn._convolution_pointwise(
            x, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
            "gelu", [], "none",
        )
    return F.gelu(conv(x))


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, gelu: bool = False
) -> torch.Tensor:
    """``x @ weight.T + bias`` for ``x (..., in)``, ``weight (out, in)``; then exact (erf) GELU if
    ``gelu`` — fused into the matmul on the oneDNN path."""
    if torch.compiler.is_compiling():
        return _traced_linear(x, weight, bias, gelu)
    if uses_onednn(x, weight):
        # (x, W, b, post-op, post-op scalars, post-op algorithm): GELU's "none" is the exact erf form.
        post_op, algorithm = ("gelu", "none") if gelu else ("none", "")
        return torch.ops.mkldnn._linear_pointwise(x, packed_weight(weight), bias, post_op, [], algorithm)
    if onednn_training(x, weight, ONEDNN_MIN_MACS):
        y = OneDNNLinear.apply(x, weight, bias)
    else:
        y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu else y


@torch.library.custom_op("zerokv::onednn_linear", mutates_args=())
def onednn_linear_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool) -> torch.Tensor:
    """:func:`linear`'s eager inference path as one opaque operator: what a compiled graph calls, so
    that the oneDNN kernel keeps its prepacked weight (remade when the weight changes) while the
    compiler fuses the elementwise work around it."""
    return linear(x, weight, bias, gelu=gelu)


@onednn_linear_op.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


TRACED_ONEDNN = True
"""Inside ``torch.compile``, inference matmuls that take oneDNN eagerly call :func:`onednn_linear_op`
(True), or are left to the compiler as ``F.linear`` (False: how docs/compile.md compares the two,
with and without inductor's freezing)."""


def _traced_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool) -> torch.Tensor:
    """:func:`linear` inside ``torch.compile``: inference matmuls taking oneDNN stay the prepacked oneDNN
    kernel (:func:`onednn_linear_op`); everything else is plain ``F.linear`` for the compiler to lower
    (training's matmuls and their backward: inductor's own kernels)."""
    if TRACED_ONEDNN and uses_onednn(x, weight):
        return onednn_linear_op(x, weight, bias, gelu)
    y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu else y


class Linear(nn.Linear):
    """``nn.Linear`` with :func:`linear`'s inference path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class MLP(nn.Sequential):
    """Linear → GELU → Linear (UniZero's heads, the transformer's feed-forward), the GELU fused into
    the first matmul at inference. Parameters are named ``0.*`` and ``2.*`` like the
    ``nn.Sequential(nn.Linear, nn.GELU, nn.Linear)`` it replaces."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(Linear(in_dim, hidden_dim), nn.GELU(), Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, _, second = self
        return second(linear(x, first.weight, first.bias, gelu=True))
