"""A causal, sliding-window transformer with rotary positions and a batch KV context.

Every layer attends to the last ``window`` tokens (itself included), using absolute token
positions for the window and rotary phases. Keys and values of a token therefore depend only on
its past, and a cached token never needs a positional shift: the property zerokv's exactness
rests on (docs/design.md, "Contracts", Exactness).

:class:`BatchContext` is the *WM cache*: the keys/values of B rows' pasts plus the tokens being
added, in preallocated buffers ``(B, H, S, hd)``, and the transformer that runs new tokens on
them. Rows are right-aligned (padding, if any, sits on the left and is masked out through
``valid``). The same forward serves the "none" reference (a
fresh context over a node's whole token sequence), the cached backends (a context assembled from
stored caches), and training (``context=None``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from zerokv.model.config import WorldModelConfig
from zerokv.model.linear import MLP, Linear


class KVContext(Protocol):
    """Where a forward's new keys/values go and what the new tokens attend to.

    ``begin`` is called once per forward with the new tokens' positions; ``attend`` once per
    layer with that layer's new ``q, k, v (B, H, T, hd)``: it keeps k/v and returns the
    attention output ``(B, H, T, hd)``; ``end`` commits the T new tokens.
    """

    def begin(self, positions: torch.Tensor) -> None: ...

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...

    def end(self, t: int) -> None: ...


class TokenRunner:
    """Mixin of a KV context that runs new tokens through its ``transformer``: a batch the world
    model can call ``forward`` on (:class:`~zerokv.model.backends.protocol.ContextBatch`)."""

    __slots__ = ()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens (B, t, E)`` → hidden states ``(B, t, E)``, appended to the context."""
        t = tokens.shape[1]
        pos = self.next_positions().unsqueeze(1) + torch.arange(t, device=tokens.device)
        return self.transformer(tokens, pos, self)


@dataclass(slots=True)
class BatchContext(TokenRunner):
    """Past and new keys/values of B rows in dense buffers (the WM cache of the seeds' design).

    k, v:       per layer ``(B, H, S, hd)`` buffers, slots ``[:fill]`` in use
    positions:  ``(B, S)`` absolute token position of each slot (rotary phase and window)
    valid:      ``(B, S)`` True where a slot holds a real token (False: left padding)
    fill:       slots in use, equal for all rows
    start_fill: slots the pasts filled (``fill - start_fill`` tokens were run on the batch)
    """

    transformer: Transformer
    k: list[torch.Tensor]
    v: list[torch.Tensor]
    positions: torch.Tensor
    valid: torch.Tensor
    fill: int = 0
    start_fill: int = 0
    _mask: torch.Tensor | None = None

    @classmethod
    def empty(cls, transformer: Transformer, batch: int, slots: int) -> BatchContext:
        """Zeroed buffers of ``batch`` rows and ``slots`` slots, on the transformer's device and dtype."""
        cfg = transformer.cfg
        shape = (batch, cfg.num_heads, slots, cfg.head_dim)
        device, dtype = cfg.device, cfg.torch_dtype
        return cls(
            transformer,
            k=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)],
            v=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)],
            positions=torch.zeros(batch, slots, dtype=torch.long, device=device),
            valid=torch.zeros(batch, slots, dtype=torch.bool, device=device),
        )

    @property
    def capacity(self) -> int:
        return self.positions.shape[1]

    @property
    def new_tokens(self) -> int:
        """Tokens run on this batch since its pasts were assembled."""
        return self.fill - self.start_fill

    def next_positions(self) -> torch.Tensor:
        """``(B,)`` the position the next token of each row takes (last real position + 1)."""
        last = torch.where(self.valid[:, : self.fill], self.positions[:, : self.fill], -1)
        return last.max(dim=1).values + 1 if self.fill else torch.zeros_like(self.positions[:, 0])

    def begin(self, positions: torch.Tensor) -> None:
        s0, t = self.fill, positions.shape[1]
        if s0 + t > self.capacity:
            raise ValueError(f"batch context overflow: {s0} slots used + {t} new > capacity {self.capacity}")
        self.positions[:, s0 : s0 + t] = positions
        self.valid[:, s0 : s0 + t] = True
        window = self.transformer.cfg.context_length
        self._mask = window_mask(positions, self.positions[:, : s0 + t], self.valid[:, : s0 + t], window)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        s0, t = self.fill, k.shape[2]
        k_buf, v_buf = self.k[layer], self.v[layer]
        k_buf[:, :, s0 : s0 + t] = k
        v_buf[:, :, s0 : s0 + t] = v
        return attention(q, k_buf[:, :, : s0 + t], v_buf[:, :, : s0 + t], self._mask)

    def end(self, t: int) -> None:
        self.fill += t
        self._mask = None


def rope_tables(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables for absolute ``positions (B, T)``, each ``(B, 1, T, hd)`` in ``dtype``: cos of
    each pair's angle at both of its slots, and sin with the sign of its slot (−sin at ``2i``,
    +sin at ``2i+1``), the form :func:`apply_rope` multiplies with.

    Angles are computed in float32 whatever ``dtype``: bfloat16 holds integer positions exactly
    only up to 256, and an angle of ~1000 rad only to ±2 rad. Only cos/sin are cast, to the
    activations' dtype (``apply_rope`` then stays in that dtype).
    """
    # Traced by torch.compile: the uncached function (its results become graph constants).
    constants = _rotary_constants.__wrapped__ if torch.compiler.is_compiling() else _rotary_constants
    freqs, signs = constants(head_dim, theta, positions.device)
    angles = positions.to(torch.float32).unsqueeze(-1) * freqs  # (B, T, hd): pair i's angle at 2i, 2i+1
    return angles.cos().unsqueeze(1).to(dtype), (angles.sin() * signs).unsqueeze(1).to(dtype)


@functools.lru_cache(maxsize=16)
def _rotary_constants(head_dim: int, theta: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hd,)`` float32 frequencies θ^(-2i/hd), each repeated for its pair's two slots, and the
    ``(hd,)`` signs ``[-1, 1, -1, 1, …]``; computed once per shape (every forward would otherwise
    rebuild them)."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    signs = torch.tensor([-1.0, 1.0], device=device).repeat(head_dim // 2)
    return freqs.repeat_interleave(2), signs


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of ``x (..., B, H, T, hd)`` by the position's angle:
    ``(x[2i]·cos − x[2i+1]·sin, x[2i+1]·cos + x[2i]·sin)`` with :func:`rope_tables`' ``cos, sin``.

    Written as ``x·cos + swap(x)·sin`` (``swap`` exchanges each pair): the same products and sums
    bit for bit as the pairwise form, in three contiguous kernels instead of strided halves
    (faster at search shapes: docs/benchmarks.md, "Kernel choices, measured").
    """
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return x * cos + swapped * sin


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax attention of ``q (B, H, T, hd)`` over ``k, v (B, H, S, hd)`` where ``mask (B, 1, T, S)``
    is True; every query must see at least one key (each sees itself).

    With gradients (training): ``F.scaled_dot_product_attention`` and its fused backward. Without
    (search, reanalysis): two explicit matmuls with the softmax in float32, which at search shapes
    (1–2 queries over ≤ context_length keys) ran faster than ``scaled_dot_product_attention`` in
    both dtypes (docs/benchmarks.md, "Kernel choices, measured"). Every inference path
    (cached or recomputed) uses this one formula, so backends agree.
    """
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q @ k.transpose(-1, -2)).float().mul_(q.shape[-1] ** -0.5)  # (B, H, T, S)
    weights = torch.softmax(scores.masked_fill_(~mask, float("-inf")), dim=-1)
    return weights.to(v.dtype) @ v


def window_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, k_valid: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, 1, T, S)`` bool: query i sees key j iff valid and ``q - window < k <= q``."""
    diff = q_pos.unsqueeze(-1) - k_pos.unsqueeze(-2)  # (B, T, S)
    return ((diff >= 0) & (diff < window) & k_valid.unsqueeze(-2)).unsqueeze(1)


class Block(nn.Module):
    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        e = cfg.embed_dim
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.ln1 = nn.LayerNorm(e)
        self.qkv = Linear(e, 3 * e)  # fused projection: one matmul for q, k and v
        self.proj = Linear(e, e)
        self.ln2 = nn.LayerNorm(e)
        self.mlp = MLP(e, cfg.mlp_ratio * e, e)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend) -> torch.Tensor:
        b, t, e = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(qkv[:2], cos, sin)  # q and k rotated together: (2, B, H, T, hd)
        v = qkv[2]  # each (B, H, T, hd)
        y = attend(q, k, v)  # (B, H, T, hd)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, e))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(cfg.embed_dim)

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, context: KVContext | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run tokens ``x (B, T, E)`` at absolute ``positions (B, T)``; returns ``(B, T, E)``.

        With a ``context`` the new tokens' keys/values are appended to it (slots
        ``fill … fill+T``) and attention covers the context's past. Without one (training, the
        "none" reference) the tokens attend among themselves; ``valid (B, T)`` marks real tokens
        (padding is invisible to them and attends only to itself, so every row stays finite).
        """
        cfg = self.cfg
        b, t, _ = x.shape
        cos, sin = rope_tables(positions, cfg.head_dim, cfg.rope_theta, x.dtype)
        if context is None:
            valid = torch.ones(b, t, dtype=torch.bool, device=x.device) if valid is None else valid
            mask = window_mask(positions, positions, valid, cfg.context_length)
            mask = mask | torch.eye(t, dtype=torch.bool, device=x.device)
            for block in self.blocks:
                x = block(x, cos, sin, lambda q, k, v: attention(q, k, v, mask))
            return self.ln_f(x)
        context.begin(positions)
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, functools.partial(context.attend, layer))
        context.end(t)
        return self.ln_f(x)
