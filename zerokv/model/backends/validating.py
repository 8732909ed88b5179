"""``cache_validation_mode``: a backend and the recompute reference side by side; disagreement raises."""

from __future__ import annotations

import torch

from zerokv.model.context import CacheValidationError


class _ValidatingBatch:
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

    Keys are (primary key, reference key) pairs: each backend keeps its own addressing.
    """

    def __init__(self, primary, reference, atol: float) -> None:
        self.primary, self.reference, self.atol = primary, reference, atol
        self.name = f"{primary.name}+validation"
        self.store = primary.store

    def root_keys(self, env_ids, latents, epoch):
        return list(zip(self.primary.root_keys(env_ids, latents, epoch),
                        self.reference.root_keys(env_ids, latents, epoch), strict=True))

    def node_keys(self, env_ids, latents, node_ids, epoch):
        return list(zip(self.primary.node_keys(env_ids, latents, node_ids, epoch),
                        self.reference.node_keys(env_ids, latents, node_ids, epoch), strict=True))

    def lookup(self, env_ids, keys):
        prim, ref = _split(keys)
        pairs = []
        for p, r in zip(self.primary.lookup(env_ids, prim), self.reference.lookup(env_ids, ref), strict=True):
            if (p is None) != (r is None):
                found = "the cache" if r is None else "the reference"
                raise CacheValidationError(f"only {found} found a node's past (an eviction or a key mismatch)")
            pairs.append(None if p is None else (p, r))
        return pairs

    def generate(self, latents, env_ids, keys):
        prim, ref = _split(keys)
        return list(zip(self.primary.generate(latents, env_ids, prim),
                        self.reference.generate(latents, env_ids, ref), strict=True))

    def sizes(self, pasts) -> list[int]:
        return self.primary.sizes([p for p, _ in pasts])

    def empty(self):
        return (self.primary.empty(), self.reference.empty())

    def assemble(self, pasts, new_tokens: int) -> _ValidatingBatch:
        return _ValidatingBatch(
            self.primary.assemble([p for p, _ in pasts], new_tokens),
            self.reference.assemble([r for _, r in pasts], new_tokens),
            self.atol,
        )

    def store_batch(self, batch: _ValidatingBatch, env_ids, keys, root: bool) -> None:
        prim, ref = _split(keys)
        self.primary.store_batch(batch.primary, env_ids, prim, root)
        self.reference.store_batch(batch.reference, env_ids, ref, root)

    def clear(self) -> None:
        self.primary.clear()
        self.reference.clear()


def _split(pairs) -> tuple[list, list]:
    return [None if p is None else p[0] for p in pairs], [None if p is None else p[1] for p in pairs]
