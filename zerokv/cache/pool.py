"""A fixed-capacity pool of ``KeysValues`` slots with FIFO, LRU or priority eviction."""

from __future__ import annotations

import heapq
import logging
import math
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from enum import Enum
from itertools import count

from zerokv.cache.kv import KeysValues
from zerokv.cache.stats import CacheStats
from zerokv.checks import check_positive_int

__all__ = ["EvictionStrategy", "KVCachePool"]

logger = logging.getLogger(__name__)

_FREE = object()
"""Sentinel in the slot→key map for a slot that holds no live key (keys may be ``None``)."""


class EvictionStrategy(str, Enum):
    """Which live entry a full pool drops to make room for a new key."""

    FIFO = "fifo"
    """The oldest inserted (updating a key does not make it younger)."""
    LRU = "lru"
    """The least recently read or written."""
    PRIORITY = "priority"
    """The lowest priority; ties go to the oldest inserted."""

    @classmethod
    def parse(cls, value: EvictionStrategy | str) -> EvictionStrategy:
        """The strategy named by ``value`` (an enum member or its name, any case)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        allowed = ", ".join(repr(s.value) for s in cls)
        raise ValueError(f"unknown eviction strategy {value!r}; allowed: {allowed}")


class KVCachePool:
    """Up to ``pool_size`` entries key → private ``KeysValues``, in preallocated slots.

    Invariants (``check_invariants`` asserts them; the tests call it after every operation):

    - live + free = capacity: every slot index is either live (holds one key) or on the free list,
      never both, and ``len(self) == stats.size``;
    - the key→slot map and the slot→key map are inverse on live slots; free slots map to no key;
    - every live slot holds storage of the pool's spec (fixed by the first ``set``). A free slot may
      keep storage from an earlier entry: ``clear`` and eviction keep it for reuse, so a pool in
      steady state allocates nothing (``set`` refreshes a slot with ``copy_from``);
    - PRIORITY only: the heap holds a current entry for every live slot.

    Order bookkeeping. FIFO and LRU keep the key→slot map as an ``OrderedDict`` whose order *is* the
    eviction order (insertion order for FIFO; LRU moves a key to the end on every get/set), so the
    victim is ``popitem(last=False)`` in O(1). PRIORITY keeps a binary heap of
    ``(priority, insertion_seq, slot)`` with lazy invalidation: re-prioritising pushes a new entry
    and leaves the old one in place; an entry is current only while ``self._rank[slot]`` still
    equals its ``(priority, insertion_seq)`` (seqs are unique, so an entry of an evicted key can
    never match the slot's next occupant). Stale entries are skipped when popped and the heap is
    rebuilt when they outnumber the live ones, which keeps every operation O(log n) amortised.

    ``get`` returns the stored object itself: callers must treat it as read-only (copy before
    extending it), since the next ``set`` that reuses the slot overwrites it in place.
    """

    def __init__(
        self, pool_size: int, eviction_strategy: EvictionStrategy | str = EvictionStrategy.FIFO,
        enable_stats: bool = True, name: str = "default",
    ) -> None:
        check_positive_int("pool_size", pool_size, owner=f"KVCachePool {name!r}")
        self._pool_size = pool_size
        self._strategy = EvictionStrategy.parse(eviction_strategy)
        self._stats_on = bool(enable_stats)
        self._name = name
        self._stats = CacheStats()
        self._spec: tuple[int, ...] | None = None
        self._slots: list[KeysValues | None] = [None] * pool_size  # storage, allocated on first use
        self._slot_to_key: list[object] = [_FREE] * pool_size
        # Popped from the end, so slot 0 is used first; clear() restores this order, which reuses
        # the slots that already have storage before touching fresh ones.
        self._free: list[int] = list(range(pool_size - 1, -1, -1))
        self._key_to_slot: dict[Hashable, int] = (
            {} if self._strategy is EvictionStrategy.PRIORITY else OrderedDict()
        )
        self._heap: list[tuple[float, int, int]] = []  # (priority, insertion seq, slot)
        self._rank: list[tuple[float, int] | None] = [None] * pool_size  # current heap key per live slot
        self._seq = count()
        logger.debug("KVCachePool %r: size=%d, strategy=%s", name, pool_size, self._strategy.value)

    # -- read-only attributes ------------------------------------------------------------------

    @property
    def pool_size(self) -> int:
        return self._pool_size

    @property
    def eviction_strategy(self) -> EvictionStrategy:
        return self._strategy

    @property
    def name(self) -> str:
        return self._name

    @property
    def stats(self) -> CacheStats:
        return self._stats

    @property
    def spec(self) -> tuple[int, ...] | None:
        """The ``KeysValues.spec`` every entry shares; None until the first ``set``."""
        return self._spec

    @property
    def nbytes(self) -> int:
        """Bytes allocated by all slots, live or free."""
        return sum(s.nbytes for s in self._slots if s is not None)

    def __len__(self) -> int:
        return len(self._key_to_slot)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._key_to_slot

    def keys(self) -> list[Hashable]:
        """Live keys in eviction order for FIFO/LRU (next victim first), insertion order for PRIORITY."""
        return list(self._key_to_slot)

    def __iter__(self) -> Iterator[Hashable]:
        """Over a snapshot of ``keys()``: safe while the pool changes."""
        return iter(self.keys())

    def __repr__(self) -> str:
        return (f"KVCachePool(name={self._name!r}, pool_size={self._pool_size}, "
                f"strategy={self._strategy.value}, {self._stats})")

    # -- operations ----------------------------------------------------------------------------

    def get(self, key: Hashable) -> KeysValues | None:
        """The stored cache of ``key`` (the pool's own object, read-only), or None."""
        slot = self._key_to_slot.get(key)
        if slot is None:
            if self._stats_on:
                self._stats.misses += 1
            return None
        if self._stats_on:
            self._stats.hits += 1
        if self._strategy is EvictionStrategy.LRU:
            self._key_to_slot.move_to_end(key)
        return self._slots[slot]

    def peek(self, key: Hashable) -> KeysValues | None:
        """Like ``get`` but invisible: no stats, no LRU refresh (for validation and tests)."""
        slot = self._key_to_slot.get(key)
        return None if slot is None else self._slots[slot]

    def set(self, key: Hashable, kv: KeysValues, priority: float | None = None) -> int:
        """Store a private copy of ``kv`` under ``key`` and return its slot.

        ``priority`` is used by PRIORITY only (default 0.0 for a new key; an update keeps the old
        priority unless a new one is given). Validation happens before any state changes.
        """
        if priority is not None:
            priority = float(priority)
            if math.isnan(priority):  # NaN compares false both ways and would corrupt the heap
                raise ValueError(f"KVCachePool {self._name!r}: priority=nan; must be a number")
        if self._spec is None:
            self._spec = kv.spec
        elif kv.spec != self._spec:
            raise ValueError(
                f"KVCachePool {self._name!r}: cache of spec {kv.spec} does not match the pool's spec "
                f"{self._spec} (n, num_heads, max_tokens, embed_dim, num_layers)"
            )
        slot = self._key_to_slot.get(key)
        if slot is not None:  # update: refresh in place, keep the FIFO position
            self._slots[slot].copy_from(kv)
            if self._strategy is EvictionStrategy.LRU:
                self._key_to_slot.move_to_end(key)
            elif self._strategy is EvictionStrategy.PRIORITY and priority is not None:
                _, seq = self._rank[slot]
                self._push(slot, priority, seq)
            return slot

        slot = self._free.pop() if self._free else self._evict()
        storage = self._slots[slot]
        if storage is None:
            self._slots[slot] = kv.clone()
        else:
            storage.copy_from(kv)
        self._key_to_slot[key] = slot
        self._slot_to_key[slot] = key
        if self._strategy is EvictionStrategy.PRIORITY:
            self._push(slot, 0.0 if priority is None else priority, next(self._seq))
        self._stats.size = len(self._key_to_slot)
        return slot

    def clear(self) -> None:
        """Drop every key; slots keep their storage (and the pool its spec) for reuse."""
        self._key_to_slot.clear()
        self._slot_to_key = [_FREE] * self._pool_size
        self._free = list(range(self._pool_size - 1, -1, -1))
        self._heap.clear()
        self._rank = [None] * self._pool_size
        self._stats.size = 0

    # -- internals -----------------------------------------------------------------------------

    def _evict(self) -> int:
        """Unlink the victim chosen by the strategy and return its (now unowned) slot."""
        if self._strategy is EvictionStrategy.PRIORITY:
            while True:
                prio, seq, slot = heapq.heappop(self._heap)
                if self._rank[slot] == (prio, seq):
                    break
            self._rank[slot] = None
            del self._key_to_slot[self._slot_to_key[slot]]
        else:
            _, slot = self._key_to_slot.popitem(last=False)
        self._slot_to_key[slot] = _FREE
        if self._stats_on:
            self._stats.evictions += 1
        return slot

    def _push(self, slot: int, priority: float, seq: int) -> None:
        self._rank[slot] = (priority, seq)
        heapq.heappush(self._heap, (priority, seq, slot))
        if len(self._heap) > 2 * self._pool_size + 16:
            # Mostly stale entries: rebuild from the live ones (O(n), once per >= n pushes).
            self._heap = [(r[0], r[1], s) for s, r in enumerate(self._rank) if r is not None]
            heapq.heapify(self._heap)

    def check_invariants(self) -> None:
        """Raise AssertionError if any invariant of the class docstring is broken."""
        n = self._pool_size
        live = set(self._key_to_slot.values())
        free = set(self._free)
        assert len(self._free) == len(free), f"{self._name}: duplicate free slots {self._free}"
        assert len(live) == len(self._key_to_slot), f"{self._name}: two keys share a slot"
        assert not live & free, f"{self._name}: slots both live and free: {live & free}"
        assert len(live) + len(free) == n, f"{self._name}: live {len(live)} + free {len(free)} != {n}"
        assert self._stats.size == len(self), f"{self._name}: stats.size {self._stats.size} != {len(self)}"
        for key, slot in self._key_to_slot.items():
            assert 0 <= slot < n, f"{self._name}: slot {slot} out of range"
            assert self._slot_to_key[slot] is key or self._slot_to_key[slot] == key, (
                f"{self._name}: slot {slot} maps back to {self._slot_to_key[slot]!r}, not {key!r}"
            )
            storage = self._slots[slot]
            assert storage is not None and storage.spec == self._spec, (
                f"{self._name}: live slot {slot} holds {None if storage is None else storage.spec}, "
                f"pool spec {self._spec}"
            )
        for slot in free:
            assert self._slot_to_key[slot] is _FREE, f"{self._name}: free slot {slot} still has a key"
        if self._strategy is EvictionStrategy.PRIORITY:
            current = {(p, s, slot) for p, s, slot in self._heap if self._rank[slot] == (p, s)}
            assert {slot for _, _, slot in current} == live, f"{self._name}: heap misses live slots"
            assert all(self._rank[s] is None for s in free), f"{self._name}: free slot has a rank"
