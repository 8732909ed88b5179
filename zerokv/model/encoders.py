"""Observation encoders and UniZero's SimNorm latent normalisation.

Vectors go through an MLP. Small views ``(C, H, W)`` with H, W <= 16 go through
a small conv net (:class:`SmallViewEncoder`). Images ``(C, 64, 64)`` go through one of two conv nets, chosen by
``WorldModelConfig.encoder``: "light" (three stride-2 convolutions) or "unizero" (LightZero's
``RepresentationNetworkUniZero``: a downsampling stem with residual blocks, then a linear
projection to ``embed_dim`` and SimNorm).
"""

from __future__ import annotations

import torch
from torch import nn

from zerokv.model.config import WorldModelConfig
from zerokv.model.linear import MLP, Linear, conv2d_gelu


class SimNorm(nn.Module):
    """Softmax within groups of ``group_size`` features: the latent is a set of simplices (UniZero)."""

    def __init__(self, group_size: int) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        return torch.softmax(x.view(*shape[:-1], -1, self.group_size), dim=-1).view(shape)


class VectorEncoder(nn.Module):
    """``(B, D)`` → latent ``(B, E)``."""

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        d, e = cfg.observation_shape[0], cfg.embed_dim
        self.net = nn.Sequential(Linear(d, 2 * e), nn.LayerNorm(2 * e), nn.GELU(), Linear(2 * e, e))
        self.norm = SimNorm(cfg.latent_group_size)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.norm(self.net(obs))


class ImageEncoder(nn.Module):
    """``(B, C, 64, 64)`` in [0, 1] → latent ``(B, E)`` through three stride-2 convolutions."""

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        c, e = cfg.observation_shape[0], cfg.embed_dim
        self.net = nn.Sequential(
            nn.Conv2d(c, 32, 4, stride=2, padding=1), nn.GELU(),   # (B, 32, 32, 32)
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.GELU(),  # (B, 64, 16, 16)
            nn.Conv2d(64, 64, 4, stride=2, padding=1), nn.GELU(),  # (B, 64, 8, 8)
            nn.Flatten(), Linear(64 * 8 * 8, e),
        )
        self.norm = SimNorm(cfg.latent_group_size)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # Channels-last: oneDNN's CPU convolutions run faster on NHWC than on NCHW (both dtypes).
        x = obs.contiguous(memory_format=torch.channels_last)
        for conv in self.net[0:6:2]:  # each Conv2d → GELU pair, fused at inference
            x = conv2d_gelu(x, conv)
        return self.norm(self.net[7](self.net[6](x)))  # Flatten → Linear


class ResBlock(nn.Module):
    """conv3x3 → norm → act → conv3x3 → norm, plus the input, then act (DI-engine's ``ResBlock``).
    With ``stride=2`` (its "downsample" type) the shortcut is a stride-2 conv3x3 without norm,
    mapping ``in_ch`` to ``out_ch`` channels."""

    def __init__(self, in_ch: int, out_ch: int | None = None, stride: int = 1) -> None:
        super().__init__()
        out_ch = in_ch if out_ch is None else out_ch
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = _norm(out_ch)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=False) if stride == 2 else None
        self.act = nn.GELU(approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.norm2(self.conv2(self.act(self.norm1(self.conv1(x))))) + identity)


def _norm(channels: int) -> nn.Module:
    """LightZero's "LN" norm of a conv feature map (DI-engine's ``conv2d_block``: one group over
    channels × height × width). Per sample, unlike "BN": a root's latent must not depend on which
    other envs share its batch, or on train/eval mode, for the caches to stay exact."""
    return nn.GroupNorm(1, channels)


class UniZeroEncoder(nn.Module):
    """LightZero's ``RepresentationNetworkUniZero`` (with its ``DownSample`` stem, norm "LN"):
    ``(B, C, 64, 64)`` in [0, 1] → latent ``(B, E)``.

    stem:  conv3x3/2 (C → ch/2) → norm → GELU            (B, ch/2, 32, 32)
           ``blocks`` × ResBlock(ch/2)
           ResBlock(ch/2 → ch, stride 2)                  (B, ch, 16, 16)
           ``blocks`` × ResBlock(ch)
           avgpool3x3/2                                   (B, ch, 8, 8)
           ``blocks`` × ResBlock(ch)
    trunk: ``blocks`` × ResBlock(ch)
    head:  flatten → Linear(ch·8·8 → E, no bias) → SimNorm
    """

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        c, ch, n = cfg.observation_shape[0], cfg.encoder_channels, cfg.encoder_blocks
        half = ch // 2
        self.stem = nn.Sequential(
            nn.Conv2d(c, half, 3, stride=2, padding=1, bias=False), _norm(half), nn.GELU(approximate="tanh"),
            *[ResBlock(half) for _ in range(n)],
            ResBlock(half, ch, stride=2),
            *[ResBlock(ch) for _ in range(n)],
            nn.AvgPool2d(3, stride=2, padding=1),
            *[ResBlock(ch) for _ in range(n)],
        )
        self.trunk = nn.Sequential(*[ResBlock(ch) for _ in range(n)])
        self.project = Linear(ch * 8 * 8, cfg.embed_dim, bias=False)
        self.norm = SimNorm(cfg.latent_group_size)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.trunk(self.stem(obs.contiguous(memory_format=torch.channels_last)))  # (B, ch, 8, 8)
        return self.norm(self.project(x.flatten(1)))  # (B, E)


class SmallViewEncoder(nn.Module):
    """``(B, C, H, W)`` with H, W <= 16 (the memory envs' 3×5×5 view) → latent ``(B, E)``.

    UniZero's memory encoder (three 3×3 stride-1 convolutions, 16/32/64 channels), without its
    batch norm (a model's outputs must not depend on its batch) and flattened instead of
    average-pooled: in an egocentric view *where* a colour is matters.
    """

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        c, h, w = cfg.observation_shape
        self.net = nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1), nn.GELU(),   # (B, 16, H, W)
            nn.Conv2d(16, 32, 3, padding=1), nn.GELU(),  # (B, 32, H, W)
            nn.Conv2d(32, 64, 3, padding=1), nn.GELU(),  # (B, 64, H, W)
            nn.Flatten(), Linear(64 * h * w, cfg.embed_dim),
        )
        self.norm = SimNorm(cfg.latent_group_size)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.norm(self.net(obs))


def make_encoder(cfg: WorldModelConfig) -> nn.Module:
    if not cfg.obs_is_image:
        return VectorEncoder(cfg)
    if cfg.observation_shape[1:] != (64, 64):
        return SmallViewEncoder(cfg)  # e.g. the memory tasks' 3×5×5 view
    return UniZeroEncoder(cfg) if cfg.encoder == "unizero" else ImageEncoder(cfg)


def mlp_head(in_dim: int, out_dim: int) -> MLP:
    """UniZero's prediction head: Linear → GELU → Linear."""
    return MLP(in_dim, in_dim, out_dim)
