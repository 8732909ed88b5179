"""Observation encoders (vector MLP, 64×64 conv net) and UniZero's SimNorm latent normalisation."""

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


def make_encoder(cfg: WorldModelConfig) -> nn.Module:
    return ImageEncoder(cfg) if cfg.obs_is_image else VectorEncoder(cfg)


def mlp_head(in_dim: int, out_dim: int) -> MLP:
    """UniZero's prediction head: Linear → GELU → Linear."""
    return MLP(in_dim, in_dim, out_dim)
