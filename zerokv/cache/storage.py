"""``KVStorage``: the token rows of a paged arena in a storage dtype, with the only (de)quantization.

A paged arena keeps keys and values as token rows ``(L, 2, H, rows, hd)``. Here they are held in a
*storage* dtype that may be narrower than the model's compute dtype; a write quantizes, the gather
dequantizes into the compute dtype, so attention never sees the storage format:

===============  ==========================  =====================================================
storage dtype    bytes per element           error of one stored element ``x`` (``a``: absmax of
                                             its (token, head) vector of ``hd`` elements)
===============  ==========================  =====================================================
``float32``      4                           0 (exact; the default for a float32 model)
``bfloat16``     2                           ≤ 2⁻⁸·|x| (round to nearest, 8 significant bits)
``float8_e4m3fn`` 1 + 2/hd (scale)           ≤ 2⁻⁴·|x| + 2⁻¹⁰·s (3 mantissa bits; subnormal step)
``int8``         1 + 2/hd (scale)            ≤ s/2, where s ≤ a/127·(1 + 2⁻⁷)
===============  ==========================  =====================================================

Scales. ``int8`` and ``float8_e4m3fn`` store one scale per (layer, K/V, head, token) — the absmax of
that head's ``hd`` elements over the format's largest value (127; 448 for e4m3), so every head of
every token uses the format's whole range. Scales are bfloat16, rounded *up* (so ``|x / s|`` never
exceeds the largest value and nothing is clipped); they are counted in :attr:`KVStorage.token_bytes`.
float8 is scaled too although it has an exponent: unscaled, e4m3 turns values above 448 into NaN
and stores the ~quarter of K/V elements below 2⁻⁶ as subnormals; on the ``small`` config's keys and
values scaling cut the largest error from 0.059 to 0.036 of the head's absmax (rms 0.026 → 0.024).

Dequantization ``q · s`` is exact in float32 (a 7-bit integer times an 8-bit significand), so the
same stored row always gathers to the same numbers. A lossy storage dtype makes the cache inexact by
design: a search's outputs differ from the ``none`` reference by what these errors do through the
layers (``zerokv bench --storage-dtypes`` measures it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["KV_STORAGE_DTYPES", "SCALE_DTYPE", "KVStorage", "Quantized", "dequantize", "error_bound", "quantize"]

KV_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "bfloat16": torch.bfloat16, "float8_e4m3fn": torch.float8_e4m3fn,
    "int8": torch.int8,
}
"""Allowed storage dtypes (``WorldModelConfig.kv_storage_dtype``) and their torch dtypes."""
SCALED: dict[str, float] = {"int8": 127.0, "float8_e4m3fn": 448.0}
"""Scaled formats and the largest value a scaled element may take."""
SCALE_DTYPE = torch.bfloat16
"""Dtype of the per-(token, head) scales of the scaled formats."""
_TINY = torch.finfo(torch.float32).tiny  # smallest scale: an all-zero head quantizes to zeros


@dataclass(frozen=True, slots=True)
class Quantized:
    """Values in a storage dtype.

    payload: ``(..., hd)`` in the storage dtype
    scale:   ``(...)`` bfloat16, one per vector of ``hd`` (scaled formats), else None
    """

    payload: torch.Tensor
    scale: torch.Tensor | None


def _ceil_bfloat16(x: torch.Tensor) -> torch.Tensor:
    """Positive float32 ``x`` rounded *up* to bfloat16 (exact: the low 16 bits of the float32 cleared)."""
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0xFFFF) & -0x10000).view(torch.float32).to(SCALE_DTYPE)


def quantize(x: torch.Tensor, storage: str) -> Quantized:
    """``x (..., hd)`` in the compute dtype → its stored form (see the module docstring)."""
    dtype = KV_STORAGE_DTYPES[storage]
    if storage not in SCALED:
        return Quantized(x.to(dtype), None)
    x = x.float()
    absmax = x.abs().amax(-1)  # (...)
    scale = _ceil_bfloat16((absmax / SCALED[storage]).clamp_min(_TINY))
    y = x / scale.float().unsqueeze(-1)  # |y| <= the format's largest value
    return Quantized(y.round().to(dtype) if storage == "int8" else y.to(dtype), scale)


_E4M3_AS_F16 = -16512  # 0xBF80 as int16: the sign bit and the 7 bits of an e4m3fn code shifted left by 7


def dequantize(q: Quantized, out: torch.Tensor, work: torch.Tensor | None = None) -> torch.Tensor:
    """Fill ``out`` (the compute dtype, ``q.payload``'s shape) with the stored values; returns it.
    ``work``: an int16 tensor of that shape for float8 (allocated if None)."""
    if q.scale is None:
        return out.copy_(q.payload)
    scale = q.scale.float().unsqueeze(-1)
    if q.payload.dtype == torch.float8_e4m3fn:
        # torch's float8 → float32 cast is slow on the CPU (docs/benchmarks.md, "Kernel choices, measured"); this
        # bit trick is exact: an e4m3fn code's 7 low bits shifted left by 7 (sign kept) form the
        # float16 of value × 2⁻⁸, subnormals included (the NaN codes never occur: |x / s| ≤ 448),
        # and float16 converts in hardware.
        work = torch.empty(q.payload.shape, dtype=torch.int16, device=out.device) if work is None else work
        work.copy_(q.payload.view(torch.int8)).bitwise_left_shift_(7).bitwise_and_(_E4M3_AS_F16)
        out.copy_(work.view(torch.float16))
        return out.mul_(scale * 256)
    out.copy_(q.payload)  # int8: exact in any float dtype; then one multiply (faster than a mixed-dtype mul)
    return out.mul_(scale)


def error_bound(x: torch.Tensor, storage: str) -> torch.Tensor:
    """The largest ``|x − dequantize(quantize(x))|`` the module docstring states, elementwise."""
    x = x.float()
    if storage == "float32":
        return torch.zeros_like(x)
    if storage == "bfloat16":
        return x.abs() * 2.0**-8
    scale = _ceil_bfloat16((x.abs().amax(-1) / SCALED[storage]).clamp_min(_TINY)).float().unsqueeze(-1)
    if storage == "int8":
        return scale.expand_as(x) / 2
    return x.abs() * 2.0**-4 + scale * 2.0**-10


class KVStorage:
    """Token rows ``(L, 2, H, rows, hd)`` in ``storage`` (a :data:`KV_STORAGE_DTYPES` name), read and
    written by row index in the compute dtype ``dtype``.

    Only :meth:`put` quantizes and only :meth:`take` dequantizes; :meth:`export_rows` /
    :meth:`import_rows` move rows in their stored form (no second rounding), for snapshots.
    """

    def __init__(self, shape: tuple[int, int, int, int, int], storage: str, dtype: torch.dtype,
                 device: str | torch.device) -> None:
        self.storage, self.dtype = storage, dtype
        self.storage_dtype = KV_STORAGE_DTYPES[storage]
        self.payload = torch.zeros(shape, device=device, dtype=self.storage_dtype)
        self.scale = torch.ones(shape[:-1], device=device, dtype=SCALE_DTYPE) if storage in SCALED else None
        self._staging: dict[int, tuple[Quantized, torch.Tensor | None]] = {}  # per row count: see _stage

    @property
    def token_bytes(self) -> int:
        """Bytes one token row stores: keys and values of every layer and head (scales included)."""
        layers, two, heads, _, hd = self.payload.shape
        per_head = hd * self.payload.element_size() + (0 if self.scale is None else self.scale.element_size())
        return layers * two * heads * per_head

    @property
    def nbytes(self) -> int:
        scale = 0 if self.scale is None else self.scale.numel() * self.scale.element_size()
        return self.payload.numel() * self.payload.element_size() + scale

    def put(self, index: torch.Tensor, values: torch.Tensor) -> None:
        """Store ``values (L, 2, H, n, hd)`` (compute dtype) at rows ``index (n,)``."""
        if self.payload.dtype == values.dtype:  # stored as computed: no rounding at all
            self.payload.index_copy_(3, index, values)
            return
        self._write(index, quantize(values, self.storage))

    def take(self, index: torch.Tensor, out: torch.Tensor, *, keep: bool = True) -> None:
        """Fill ``out (L, 2, H, n, hd)`` (compute dtype) with rows ``index (n,)``; ``keep``: keep
        the staging buffer of a dequantizing read for the next read of n rows."""
        if self.payload.dtype == out.dtype:
            torch.index_select(self.payload, 3, index, out=out)
            return
        stage, work = self._stage(index.numel(), keep)
        torch.index_select(self.payload, 3, index, out=stage.payload)
        if stage.scale is not None:
            torch.index_select(self.scale, 3, index, out=stage.scale)
        dequantize(stage, out, work)

    def export_rows(self, rows: np.ndarray) -> Quantized:
        """Copies of ``rows`` in their stored form: payload ``(L, 2, H, n, hd)``, scale ``(L, 2, H, n)``."""
        index = torch.from_numpy(np.ascontiguousarray(rows, np.int64)).to(self.payload.device)
        scale = None if self.scale is None else self.scale.index_select(3, index)
        return Quantized(self.payload.index_select(3, index), scale)

    def import_rows(self, rows: np.ndarray, stored: Quantized) -> None:
        """Write rows exported by :meth:`export_rows` (same storage dtype) back, bit for bit."""
        if stored.payload.dtype != self.storage_dtype or (stored.scale is None) != (self.scale is None):
            raise ValueError(f"rows stored as {stored.payload.dtype} cannot be imported into {self.storage} storage")
        self._write(torch.from_numpy(np.ascontiguousarray(rows, np.int64)).to(self.payload.device), stored)

    def _write(self, index: torch.Tensor, stored: Quantized) -> None:
        # float8 has no index_copy kernel on the CPU: its bytes are copied instead.
        as_bytes = self.storage_dtype == torch.float8_e4m3fn
        dst, src = (self.payload.view(torch.uint8), stored.payload.view(torch.uint8)) if as_bytes \
            else (self.payload, stored.payload)
        dst.index_copy_(3, index, src)
        if self.scale is not None:
            self.scale.index_copy_(3, index, stored.scale)

    @property
    def staging_nbytes(self) -> int:
        """Bytes of the kept staging buffers."""
        return sum(t.numel() * t.element_size() for stage, work in self._staging.values()
                   for t in (stage.payload, stage.scale, work) if t is not None)

    def _stage(self, n: int, keep: bool) -> tuple[Quantized, torch.Tensor | None]:
        """Buffers for a dequantizing read of n rows: the stored rows and (float8) dequantize's work."""
        if n in self._staging:
            return self._staging[n]
        layers, two, heads, _, hd = self.payload.shape
        payload = self.payload.new_empty(layers, two, heads, n, hd)
        scale = None if self.scale is None else self.scale.new_empty(layers, two, heads, n)
        work = payload.new_empty(payload.shape, dtype=torch.int16) if self.storage == "float8_e4m3fn" else None
        if keep:
            self._staging[n] = (Quantized(payload, scale), work)
        return Quantized(payload, scale), work
