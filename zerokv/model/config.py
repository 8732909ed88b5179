"""``WorldModelConfig``: every knob of the world model and its cache, validated once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from zerokv.cache.pool import EvictionStrategy
from zerokv.cache.storage import KV_STORAGE_DTYPES
from zerokv.checks import (
    check_bool,
    check_choice,
    check_device,
    check_float,
    check_int,
    check_positive_int,
)

CacheBackend = Literal["none", "legacy", "manager", "paged"]
"""A cache backend's name (a ``Literal``, so ``--help`` lists the choices)."""
CACHE_BACKENDS: tuple[str, ...] = get_args(CacheBackend)
Dtype = Literal["float32", "bfloat16"]
"""A model or search dtype's name."""
Encoder = Literal["light", "unizero"]
"""An image encoder's name (see :mod:`zerokv.model.encoders`)."""
ENCODERS: tuple[str, ...] = get_args(Encoder)
DTYPES: dict[str, torch.dtype] = dict(zip(get_args(Dtype), (torch.float32, torch.bfloat16), strict=True))
"""Allowed ``WorldModelConfig.dtype`` values and their torch dtypes."""
ARCHITECTURE: tuple[str, ...] = (
    "observation_shape", "action_space_size", "action_dim", "embed_dim", "num_layers", "num_heads", "context_length",
    "support_size", "latent_group_size", "encoder", "encoder_channels", "encoder_blocks", "positional_encoding", "rope_theta", "mlp_ratio", "device", "dtype",
)
"""The fields that shape the network's weights (the rest configure its caches and search)."""


@dataclass
class WorldModelConfig:
    """Configuration of :class:`zerokv.WorldModel`.

    Window semantics: every attention layer is a *sliding window* of ``context_length`` tokens
    (a query at position p attends to positions p-context_length+1 … p) with rotary positions,
    in training and inference alike. A token's keys and values therefore depend only on its own
    past and never change once computed, so a cache that keeps each node's last
    ``context_length - 1`` tokens is exact by construction — no positional shift, no correction,
    no rebuild. Through the layers a node's outputs depend on its last
    ``num_layers * (context_length - 1)`` tokens (:attr:`receptive_field`).
    """

    observation_shape: tuple[int, ...] = (4,)
    """Observation shape: a vector ``(D,)``, an image ``(C, 64, 64)`` or a small view ``(C, H, W)``
    with H, W <= 16 (e.g. the memory envs' 3×5×5 egocentric view)."""
    action_space_size: int = 2
    """Number of discrete actions; with ``action_dim`` > 0, the width of the search policies (K
    sampled actions), which the network does not use."""
    action_dim: int = 0
    """0: discrete actions ``0 … action_space_size-1``. D > 0: continuous actions, vectors of D
    entries in [-1, 1] (an env's bounded ``Box`` rescaled): the action token is a learned linear
    projection of the vector and the policy head gives a Gaussian's mean and log standard
    deviation (``policy_logits [B, 2D]``), squashed by tanh into [-1, 1]
    (:mod:`zerokv.model.gaussian`)."""
    embed_dim: int = 64
    """Width of every token (the latent state size)."""
    num_layers: int = 2
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads; must divide embed_dim."""
    context_length: int = 8
    """Sliding attention window in tokens (even: one observation and one action token per step)."""
    max_tokens: int = 20
    """Longest training sequence in tokens; also the per-slot capacity of the legacy/manager pools."""
    env_num: int = 8
    """Environments searched together (one init pool each)."""
    num_simulations: int = 50
    """Simulations per search; sizes the pools so one search never evicts what it still needs."""
    support_size: int = 300
    """Categorical value/reward support [-S, S] (2S+1 bins, MuZero's h-transform)."""
    latent_group_size: int = 8
    """SimNorm group size of the latent state (UniZero)."""
    encoder: str = "light"
    """Image encoder: "light" (three stride-2 convolutions) or "unizero" (LightZero's
    RepresentationNetworkUniZero: residual downsampling stem, linear projection, SimNorm). Vector
    observations always use the MLP encoder."""
    encoder_channels: int = 64
    """Channels of the "unizero" encoder after its stem (half of them in its first stage)."""
    encoder_blocks: int = 1
    """Residual blocks per stage of the "unizero" encoder (LightZero: 1)."""
    positional_encoding: Literal["rope"] = "rope"
    """Rotary positions (relative by construction: what sliding-window exactness needs)."""
    rope_theta: float = 10_000.0
    """Rotary base frequency."""
    device: str = "cpu"
    """Torch device of the model and its caches."""
    cache_backend: str | None = None
    """How a node gets its past: "none" (recompute from tokens: the reference), "legacy" (the
    seeds' hand-managed pools), "manager" (KVCacheManager) or "paged" (PagedArena: each node keeps
    only its own two tokens; needs the search's node ids). None: from use_new_cache_manager, else
    "paged" — the fastest and smallest in `zerokv bench`."""
    use_new_cache_manager: bool | None = None
    """The seeds' switch: True → "manager", False → "legacy"; a contradicting cache_backend raises."""
    cache_validation_mode: bool = False
    """Run the chosen backend and "none" side by side and raise on any disagreement."""
    validation_atol: float = 1e-5
    """Largest tolerated difference in validation mode (compared in the model's dtype: a bfloat16
    model's cache is checked against bfloat16 recomputation, which it has matched exactly in
    zerokv's tests)."""
    enable_cache_logging: bool = False
    """Log throttled cache statistics (never a line per call)."""
    max_cache_size: int = 10_000
    """Upper bound on any pool's size."""
    eviction_strategy: str = "fifo"
    """Pool eviction: "fifo", "lru" or "priority"."""
    init_pool_size: int | None = None
    """Override of the derived init-pool size (e.g. a deliberately tiny pool)."""
    recur_pool_size: int | None = None
    """Override of the derived recurrent-pool size."""
    mlp_ratio: int = 4
    """Hidden width of each block's MLP, as a multiple of embed_dim."""
    dtype: str = "float32"
    """Dtype of the parameters, activations and every KV-cache buffer: "float32" (the exact
    reference) or "bfloat16", a search-only mode (faster matmuls on CPUs with bfloat16 units;
    ~3 significant digits, so logits move by 1e-2 to 1e-1 and search policies a little —
    `zerokv bench --precision` measures both). Inputs may come in float32 and every
    InferenceOutput field is float32 whatever the dtype. A bfloat16 model is not trained:
    ``forward_sequence`` refuses; train a float32 model and copy its weights with
    ``WorldModel.load_weights_from``."""
    kv_storage_dtype: str | None = None
    """Dtype the paged arena stores keys and values in: None (the model's ``dtype``: exact),
    "float32", "bfloat16", "float8_e4m3fn" or "int8" (the last two with one bfloat16 scale per
    token and head; :mod:`zerokv.cache.storage` states each one's error bound). Writes quantize,
    the gather dequantizes; compute stays in ``dtype``. A storage dtype narrower than ``dtype`` is
    **lossy: the cache is then not exact by design** — outputs differ from the "none" reference by
    the storage rounding carried through the layers (`zerokv bench --storage-dtypes` measures it),
    so ``cache_validation_mode`` refuses it. Only the "paged" backend has a storage dtype of its own
    (the others store in ``dtype``). For wide reanalysis: int8 takes about a quarter of float32's
    arena memory."""

    compile: bool = False
    """Run search's recurrent step as a ``torch.compile`` (inductor) graph per batch-size bucket
    (:mod:`zerokv.model.compiled`; the "paged" backend, other backends stay eager): the same
    outputs to float32 rounding, a compile of tens of seconds on first use of each bucket;
    docs/compile.md measures when it pays. Falls back to eager, with one warning, where
    compilation is unavailable."""

    def __post_init__(self) -> None:
        if isinstance(self.observation_shape, (str, bytes)) or not hasattr(self.observation_shape, "__iter__"):
            raise ValueError(f"observation_shape={self.observation_shape!r}; expected a vector (D,) or an image (C, H, W)")
        self.observation_shape = tuple(check_positive_int("observation_shape[i]", d) for d in self.observation_shape)
        if len(self.observation_shape) not in (1, 3):
            raise ValueError(
                f"observation_shape={self.observation_shape}; expected a vector (D,) or an image (C, H, W)"
            )
        if self.obs_is_image and self.observation_shape[1:] != (64, 64) and max(self.observation_shape[1:]) > 16:
            raise ValueError(
                f"image observation_shape={self.observation_shape}; the conv encoders expect (C, 64, 64) "
                "or a small view (C, H, W) with H, W <= 16"
            )
        for name in ("action_space_size", "embed_dim", "num_layers", "num_heads", "context_length",
                     "max_tokens", "env_num", "num_simulations", "support_size", "latent_group_size",
                     "max_cache_size", "mlp_ratio", "encoder_channels", "encoder_blocks"):
            setattr(self, name, check_positive_int(name, getattr(self, name)))
        check_device("device", self.device)
        self.action_dim = check_int("action_dim", self.action_dim, low=0)
        for name in ("init_pool_size", "recur_pool_size"):
            if getattr(self, name) is not None:
                setattr(self, name, check_positive_int(name, getattr(self, name)))
        check_choice("encoder", self.encoder, ENCODERS)
        if self.encoder_channels % 2:
            raise ValueError(f"encoder_channels={self.encoder_channels}; must be even (the first stage has half)")
        self.rope_theta = check_float("rope_theta", self.rope_theta, low=1.0, low_open=True)
        self.validation_atol = check_float("validation_atol", self.validation_atol, low=0.0)
        self.cache_validation_mode = check_bool("cache_validation_mode", self.cache_validation_mode)
        self.enable_cache_logging = check_bool("enable_cache_logging", self.enable_cache_logging)
        self.compile = check_bool("compile", self.compile)
        if self.compile and self.action_dim:
            raise ValueError(f"compile=True with action_dim={self.action_dim}: the compiled recurrent step takes "
                             "discrete actions only; use compile=False for continuous actions")
        if self.embed_dim % self.num_heads or (self.embed_dim // self.num_heads) % 2:
            raise ValueError(
                f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads} "
                "into an even head size (rotary positions rotate pairs)"
            )
        if self.embed_dim % self.latent_group_size:
            raise ValueError(f"embed_dim={self.embed_dim} is not divisible by latent_group_size={self.latent_group_size}")
        if self.context_length < 2 or self.context_length % 2:
            raise ValueError(f"context_length={self.context_length}; must be an even number of tokens >= 2")
        if self.max_tokens < self.context_length:
            raise ValueError(f"max_tokens={self.max_tokens} must be >= context_length={self.context_length}")
        if self.positional_encoding != "rope":
            raise ValueError(f"positional_encoding={self.positional_encoding!r}; allowed: 'rope'")
        if self.use_new_cache_manager is not None:
            check_bool("use_new_cache_manager", self.use_new_cache_manager)
            implied = "manager" if self.use_new_cache_manager else "legacy"
            if self.cache_backend is not None and self.cache_backend != implied:
                raise ValueError(
                    f"use_new_cache_manager={self.use_new_cache_manager} contradicts "
                    f"cache_backend={self.cache_backend!r} (True means 'manager', False means 'legacy')"
                )
            self.cache_backend = implied
        elif self.cache_backend is None:
            self.cache_backend = "paged"
        check_choice("cache_backend", self.cache_backend, CACHE_BACKENDS)
        self.eviction_strategy = EvictionStrategy.parse(self.eviction_strategy).value
        check_choice("dtype", self.dtype, DTYPES)
        self._check_kv_storage()

    def _check_kv_storage(self) -> None:
        if self.kv_storage_dtype is None:
            return
        check_choice("kv_storage_dtype", self.kv_storage_dtype, KV_STORAGE_DTYPES)
        if self.kv_storage_dtype != self.dtype and self.cache_backend != "paged":
            raise ValueError(
                f"kv_storage_dtype={self.kv_storage_dtype!r} with cache_backend={self.cache_backend!r}: only "
                f"cache_backend='paged' stores keys and values in a dtype other than the model's "
                f"(dtype={self.dtype!r}); use 'paged' or kv_storage_dtype=None"
            )
        if self.cache_validation_mode and self.kv_storage_is_lossy:
            raise ValueError(
                f"cache_validation_mode=True with kv_storage_dtype={self.kv_storage_dtype!r}: validation checks "
                f"that the cache is exact (to validation_atol), and a {self.kv_storage_dtype} store is lossy by "
                "design; validate with kv_storage_dtype=None and measure the storage's effect with "
                "`zerokv bench --storage-dtypes`"
            )

    def check_same_architecture(self, other: WorldModelConfig) -> None:
        """Raise naming the first :data:`ARCHITECTURE` field in which ``other`` differs: two models
        can share weights only if none does."""
        for name in ARCHITECTURE:
            if getattr(self, name) != getattr(other, name):
                raise ValueError(f"{name}={getattr(self, name)!r} differs from the shared model's "
                                 f"{getattr(other, name)!r}: weights are shared only by the same architecture")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype named by :attr:`dtype`."""
        return DTYPES[self.dtype]

    @property
    def kv_storage(self) -> str:
        """The storage dtype the paged arena uses: :attr:`kv_storage_dtype`, or :attr:`dtype` if None."""
        return self.dtype if self.kv_storage_dtype is None else self.kv_storage_dtype

    @property
    def kv_storage_is_lossy(self) -> bool:
        """True when the storage dtype rounds what the model computes (narrower than :attr:`dtype`)."""
        return self.kv_storage not in ("float32", self.dtype)

    @property
    def continuous(self) -> bool:
        """True for continuous (vector) actions: ``action_dim`` > 0."""
        return self.action_dim > 0

    @property
    def policy_size(self) -> int:
        """Width of ``policy_logits``: A logits, or a Gaussian's D means and D log standard deviations."""
        return 2 * self.action_dim if self.continuous else self.action_space_size

    @property
    def obs_is_image(self) -> bool:
        return len(self.observation_shape) == 3

    @property
    def support_bins(self) -> int:
        return 2 * self.support_size + 1

    @property
    def receptive_field(self) -> int:
        """Past tokens that can influence a new token's outputs: num_layers × (context_length − 1)."""
        return self.num_layers * (self.context_length - 1)

    @property
    def root_history_steps(self) -> int:
        """Real steps of history that fix a root completely: its outputs read the last
        :attr:`receptive_field` tokens, and its stored past (the last ``context_length - 1``
        tokens) needs no more, so ``ceil(receptive_field / 2)`` steps of (observation, action)."""
        return -(-self.receptive_field // 2)
