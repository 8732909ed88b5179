"""Configuration of the KV cache stores (the manager and the legacy store)."""

from __future__ import annotations

from dataclasses import dataclass

from zerokv.cache.pool import EvictionStrategy
from zerokv.checks import check_positive_int

__all__ = ["CacheConfig"]


def _positive_int(name: str, value: object) -> None:
    check_positive_int(name, value, owner="CacheConfig")


@dataclass
class CacheConfig:
    """Sizes and policy of the cache pools; validated and normalised once, in ``__post_init__``.

    The pool sizes derived from these fields (see ``zerokv.cache.manager.pool_sizes``) are what
    keeps one search from evicting an entry it still needs.
    """

    num_simulations: int = 50
    """MCTS simulations per search; each can store one node per env."""
    max_cache_size: int = 10_000
    """Upper bound on any derived pool size (explicit overrides are not capped)."""
    eviction_strategy: EvictionStrategy | str = "fifo"
    """Which entry a full pool drops: "fifo", "lru" or "priority" (normalised to the enum)."""
    enable_stats: bool = True
    """Count hits, misses and evictions per pool."""
    init_pool_size: int | None = None
    """Explicit size of each env's init (root) pool; None derives it from the fields above."""
    recur_pool_size: int | None = None
    """Explicit size of the shared recurrent pool; None derives it from env_num and num_simulations."""
    game_segment_length: int = 400
    """Steps per game segment; the seeds sized each init pool by it."""

    def __post_init__(self) -> None:
        _positive_int("num_simulations", self.num_simulations)
        _positive_int("max_cache_size", self.max_cache_size)
        _positive_int("game_segment_length", self.game_segment_length)
        for name in ("init_pool_size", "recur_pool_size"):
            value = getattr(self, name)
            if value is not None:
                _positive_int(name, value)
        if not isinstance(self.enable_stats, bool):
            raise ValueError(f"CacheConfig: enable_stats={self.enable_stats!r}; must be a bool")
        self.eviction_strategy = EvictionStrategy.parse(self.eviction_strategy)
