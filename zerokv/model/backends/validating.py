"""``cache_validation_mode``: a backend and the recompute reference side by side; disagreement raises."""

from __future__ import annotations

import torch

from zerokv.errors import CacheValidationError
from zerokv.model.backends.keys import PairedKeys
from zerokv.model.backends.protocol import PastPair


class ValidatingBatch:
    """Both backends' batches; every forward runs on both and compares the hidden states."""

    def __init__(self, primary, reference, atol: float) -> None:
        self.primary, self.reference, self.atol = primary, reference, atol

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.primary.forward(tokens)
        ref = self.reference.forward(tokens)
        diff = (h - ref).abs().max().item() if h.numel() else 0.0
        if not diff <= self.atol:
            raise CacheValidationError(
                f"cache disagrees with recomputation: max |diff| = {diff:.3g} > atol {self.atol:g}"
            )
        return h


class ValidatingBackend:
    """Runs ``primary`` and the "none" reference side by side; any disagreement raises.

    Pasts are :class:`PastPair` (primary, reference) and keys are pairs of both backends' keys:
    each backend keeps its own addressing.
    """

    def __init__(self, primary, reference, atol: float) -> None:
        self.primary, self.reference, self.atol = primary, reference, atol
        self.name = f"{primary.name}+validation"
        self.store = primary.store
        self.keys = PairedKeys(primary.keys, reference.keys)

    def lookup_roots(self, env_ids, keys) -> list[PastPair | None]:
        prim, ref = _split(keys)
        return _pairs(self.primary.lookup_roots(env_ids, prim), self.reference.lookup_roots(env_ids, ref))

    def lookup_nodes(self, env_ids, keys) -> list[PastPair | None]:
        prim, ref = _split(keys)
        return _pairs(self.primary.lookup_nodes(env_ids, prim), self.reference.lookup_nodes(env_ids, ref))

    def generate(self, latents, env_ids, keys) -> list[PastPair]:
        prim, ref = _split(keys)
        return [PastPair(p, r) for p, r in zip(self.primary.generate(latents, env_ids, prim),
                                               self.reference.generate(latents, env_ids, ref), strict=True)]

    def sizes(self, pasts) -> list[int]:
        return self.primary.sizes([p.primary for p in pasts])

    def assemble(self, pasts, new_tokens: int) -> ValidatingBatch:
        return ValidatingBatch(
            self.primary.assemble([None if p is None else p.primary for p in pasts], new_tokens),
            self.reference.assemble([None if p is None else p.reference for p in pasts], new_tokens),
            self.atol,
        )

    def store_roots(self, batch: ValidatingBatch, env_ids, keys) -> None:
        prim, ref = _split(keys)
        self.primary.store_roots(batch.primary, env_ids, prim)
        self.reference.store_roots(batch.reference, env_ids, ref)

    def store_nodes(self, batch: ValidatingBatch, env_ids, keys) -> None:
        prim, ref = _split(keys)
        self.primary.store_nodes(batch.primary, env_ids, prim)
        self.reference.store_nodes(batch.reference, env_ids, ref)

    def clear(self) -> None:
        self.primary.clear()
        self.reference.clear()


def _pairs(primary: list, reference: list) -> list[PastPair | None]:
    out = []
    for p, r in zip(primary, reference, strict=True):
        if (p is None) != (r is None):
            found = "the cache" if r is None else "the reference"
            raise CacheValidationError(f"only {found} found a node's past (an eviction or a key mismatch)")
        out.append(None if p is None else PastPair(p, r))
    return out


def _split(pairs) -> tuple[list, list]:
    return [None if p is None else p[0] for p in pairs], [None if p is None else p[1] for p in pairs]
