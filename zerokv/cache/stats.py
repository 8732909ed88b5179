"""Hit / miss / eviction counters of one cache pool."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["CacheStats"]


@dataclass(slots=True)
class CacheStats:
    """Counters of one pool.

    Invariants: every counter is >= 0; ``total_queries == hits + misses``; ``size`` is written by
    the owning pool and always equals its number of live entries (``reset`` keeps it, because
    resetting counters does not empty the pool).
    """

    hits: int = 0
    """Lookups that found their key."""
    misses: int = 0
    """Lookups that did not."""
    evictions: int = 0
    """Live entries dropped to make room for a new key (``clear`` is not an eviction)."""
    size: int = 0
    """Live entries right now; set by the pool, not counted here."""

    @property
    def total_queries(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        """Fraction of lookups that hit, in [0, 1]; 0.0 before the first lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    @property
    def miss_rate(self) -> float:
        """Fraction of lookups that missed, in [0, 1]; 0.0 before the first lookup."""
        total = self.hits + self.misses
        return self.misses / total if total else 0.0

    def record_hit(self) -> None:
        self.hits += 1

    def record_miss(self) -> None:
        self.misses += 1

    def record_eviction(self) -> None:
        self.evictions += 1

    def reset(self) -> None:
        """Zero the counters; ``size`` describes the pool's contents and is kept."""
        self.hits = self.misses = self.evictions = 0

    def __add__(self, other: CacheStats) -> CacheStats:
        if not isinstance(other, CacheStats):
            return NotImplemented
        return CacheStats(
            self.hits + other.hits, self.misses + other.misses,
            self.evictions + other.evictions, self.size + other.size,
        )

    @classmethod
    def total(cls, parts: Iterable[CacheStats]) -> CacheStats:
        """Field-wise sum of ``parts`` (an empty iterable gives all zeros)."""
        out = cls()
        for part in parts:
            out = out + part
        return out

    def __str__(self) -> str:
        # The seeds' log format, kept byte for byte: dashboards and tests parse it.
        return (
            f"hits={self.hits}, misses={self.misses}, evictions={self.evictions}, "
            f"size={self.size}, hit_rate={self.hit_rate * 100:.1f}%"
        )
