"""Preallocated per-layer key/value tensors (the layout of iris's ``kv_caching.py``).

``KeysValues`` holds one ``KVCache`` per transformer layer. Each ``KVCache`` owns two buffers of
shape ``(n, num_heads, max_tokens, head_dim)`` and a fill level ``size``: tokens are appended by
position (gpt-fast style), capacity is checked *before* writing, and nobody outside this module
touches the buffers or the fill level.
"""

from __future__ import annotations

import torch

from zerokv.checks import check_positive_int

__all__ = ["KVCache", "KeysValues"]


class KVCache:
    """Keys and values of one layer: buffers ``(n, num_heads, max_tokens, head_dim)``, valid ``[:size]``."""

    def __init__(
        self, n: int, num_heads: int, max_tokens: int, head_dim: int, device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (n, num_heads, max_tokens, head_dim)
        self._k = torch.zeros(shape, device=device, dtype=dtype)
        self._v = torch.zeros(shape, device=device, dtype=dtype)
        self._size = 0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(n, num_heads, size, head_dim)`` of the valid part."""
        n, h, _, d = self._k.shape
        return n, h, self._size, d

    @property
    def size(self) -> int:
        return self._size

    @property
    def max_tokens(self) -> int:
        return self._k.shape[2]

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of the valid part, each ``(n, num_heads, size, head_dim)``."""
        return self._k[:, :, : self._size], self._v[:, :, : self._size]

    def update(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Append ``t`` tokens; ``k`` and ``v`` are ``(n, num_heads, t, head_dim)``."""
        n, h, _, d = self._k.shape
        if k.shape != v.shape or k.dim() != 4 or (k.shape[0], k.shape[1], k.shape[3]) != (n, h, d):
            raise ValueError(
                f"k/v of shape {tuple(k.shape)}/{tuple(v.shape)} do not fit a cache of "
                f"(n, heads, *, head_dim) = ({n}, {h}, *, {d})"
            )
        t = k.shape[2]
        if self._size + t > self.max_tokens:
            raise ValueError(
                f"KV cache overflow: {self._size} tokens stored + {t} new > capacity {self.max_tokens}"
            )
        self._k[:, :, self._size : self._size + t].copy_(k)
        self._v[:, :, self._size : self._size + t].copy_(v)
        self._size += t

    def reset(self) -> None:
        self._size = 0

    def prune(self, mask: torch.Tensor) -> None:
        """Keep only the rows (samples) where the boolean ``mask`` of shape ``(n,)`` is true."""
        mask = torch.as_tensor(mask, dtype=torch.bool, device=self._k.device)
        if mask.shape != (self._k.shape[0],):
            raise ValueError(f"prune mask of shape {tuple(mask.shape)}; expected ({self._k.shape[0]},)")
        self._k = self._k[mask]
        self._v = self._v[mask]

    def copy_from(self, other: KVCache) -> None:
        """Refresh this cache's storage from ``other`` in place (no allocation); shapes must match."""
        if other._k.shape != self._k.shape:
            raise ValueError(
                f"cannot copy a KV cache of buffer shape {tuple(other._k.shape)} into one of "
                f"{tuple(self._k.shape)}"
            )
        s = other._size
        self._k[:, :, :s].copy_(other._k[:, :, :s])
        self._v[:, :, :s].copy_(other._v[:, :, :s])
        self._size = s

    @property
    def nbytes(self) -> int:
        """Bytes allocated by both buffers (not only the valid part)."""
        return 2 * self._k.numel() * self._k.element_size()


class KeysValues:
    """Keys and values of every layer for ``n`` sequences, each layer a :class:`KVCache`.

    ``kv[layer].update(k, v)`` appends tokens to one layer; ``kv.size`` is the token count (all
    layers hold the same number once a forward pass has finished).
    """

    def __init__(
        self, n: int, num_heads: int, max_tokens: int, embed_dim: int, num_layers: int,
        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    ) -> None:
        for name, value in (("n", n), ("num_heads", num_heads), ("max_tokens", max_tokens),
                            ("embed_dim", embed_dim), ("num_layers", num_layers)):
            check_positive_int(name, value, owner="KeysValues")
        if embed_dim % num_heads:
            raise ValueError(f"KeysValues: embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self._layers = tuple(
            KVCache(n, num_heads, max_tokens, embed_dim // num_heads, device, dtype) for _ in range(num_layers)
        )
        self._spec = (n, num_heads, max_tokens, embed_dim, num_layers)
        # Absolute position (token index in the env's history) of stored token 0. Rotary
        # positions are baked into the keys, so a reader needs it to place the next tokens.
        self.start_position = 0

    @property
    def spec(self) -> tuple[int, int, int, int, int]:
        """``(n, num_heads, max_tokens, embed_dim, num_layers)``: two caches with equal specs are interchangeable."""
        return self._spec

    def __getitem__(self, layer: int) -> KVCache:
        return self._layers[layer]

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self):
        return iter(self._layers)

    @property
    def size(self) -> int:
        return self._layers[0].size

    @property
    def device(self) -> torch.device:
        return self._layers[0]._k.device

    def reset(self) -> None:
        for layer in self._layers:
            layer.reset()
        self.start_position = 0

    def prune(self, mask: torch.Tensor) -> None:
        for layer in self._layers:
            layer.prune(mask)
        self._spec = (self._layers[0].shape[0], *self._spec[1:])

    def clone(self) -> KeysValues:
        """A private deep copy with its own storage."""
        n, h, t, e, num_layers = self._spec
        out = KeysValues(n, h, t, e, num_layers, self.device, self._layers[0]._k.dtype)
        out.copy_from(self)
        return out

    def copy_from(self, other: KeysValues) -> None:
        """Refresh every layer in place from ``other`` (same spec), allocating nothing."""
        if other.spec != self.spec:
            raise ValueError(f"cannot copy KeysValues of spec {other.spec} into one of spec {self.spec}")
        for mine, theirs in zip(self._layers, other._layers, strict=True):
            mine.copy_from(theirs)
        self.start_position = other.start_position

    @property
    def nbytes(self) -> int:
        """Bytes allocated by all layers' buffers."""
        return sum(layer.nbytes for layer in self._layers)

    def data_ptrs(self) -> tuple[int, ...]:
        """Addresses of every buffer: equal before and after an in-place refresh."""
        return tuple(p for layer in self._layers for p in (layer._k.data_ptr(), layer._v.data_ptr()))
