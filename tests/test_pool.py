"""KVCachePool with hand-sized inputs and exact answers (pools of 2-4 slots)."""

import math

import pytest
import torch
from kvutil import make_kv, value_of

from zerokv.cache import EvictionStrategy, KVCachePool

FIFO, LRU, PRIORITY = EvictionStrategy.FIFO, EvictionStrategy.LRU, EvictionStrategy.PRIORITY






def fill(pool: KVCachePool, *keys: str, **priorities: float) -> None:
    for i, key in enumerate(keys):
        pool.set(key, make_kv(float(i)), priorities.get(key))
        pool.check_invariants()


# -- eviction order -------------------------------------------------------------------------------

def test_fifo_evicts_oldest_inserted():
    pool = KVCachePool(3, FIFO)
    fill(pool, "a", "b", "c")
    assert pool.get("a") is not None  # reads do not matter to FIFO
    fill(pool, "d")
    assert pool.keys() == ["b", "c", "d"] and "a" not in pool
    assert pool.stats.evictions == 1 and len(pool) == 3 == pool.stats.size
    pool.set("e", make_kv(5.0))
    assert pool.keys() == ["c", "d", "e"] and pool.stats.evictions == 2
    pool.check_invariants()


def test_fifo_update_keeps_insertion_position():
    pool = KVCachePool(3, FIFO)
    fill(pool, "a", "b", "c")
    slot = pool.set("a", make_kv(9.0))
    assert slot == 0 and value_of(pool.get("a")) == 9.0 and pool.stats.evictions == 0
    pool.set("d", make_kv(3.0))
    assert pool.keys() == ["b", "c", "d"]  # "a" was still the oldest insertion


def test_lru_after_a_pattern_of_gets():
    pool = KVCachePool(3, LRU)
    fill(pool, "a", "b", "c")
    pool.get("a")                       # recency: b, c, a
    pool.set("d", make_kv(3.0))         # evicts b -> c, a, d
    assert pool.keys() == ["c", "a", "d"]
    pool.get("c")                       # a, d, c
    pool.get("zzz")                     # a miss changes nothing
    pool.set("e", make_kv(4.0))         # evicts a -> d, c, e
    assert pool.keys() == ["d", "c", "e"] and pool.stats.evictions == 2
    pool.set("d", make_kv(5.0))         # an update is a use: c, e, d
    pool.set("f", make_kv(6.0))         # evicts c
    assert pool.keys() == ["e", "d", "f"] and value_of(pool.get("d")) == 5.0
    pool.check_invariants()


def test_priority_keeps_the_highest():
    pool = KVCachePool(3, "priority")
    fill(pool, "a", "b", "c", a=1.0, b=5.0, c=3.0)
    pool.set("d", make_kv(3.0), priority=2.0)   # evicts a (1.0)
    assert sorted(pool.keys()) == ["b", "c", "d"]
    pool.set("e", make_kv(4.0), priority=0.0)   # evicts d (2.0); e itself is new, so it stays
    assert sorted(pool.keys()) == ["b", "c", "e"]
    pool.set("f", make_kv(5.0), priority=10.0)  # evicts e (0.0)
    assert sorted(pool.keys()) == ["b", "c", "f"] and pool.stats.evictions == 3
    pool.check_invariants()


def test_priority_ties_evict_oldest_and_default_is_zero():
    pool = KVCachePool(3, PRIORITY)
    fill(pool, "x", "y", "z")           # all priority 0.0
    pool.set("w", make_kv(1.0))
    assert sorted(pool.keys()) == ["w", "y", "z"]
    pool.set("v", make_kv(1.0), priority=-1.0)
    assert sorted(pool.keys()) == ["v", "w", "z"]  # y was the oldest of the 0.0s
    pool.set("u", make_kv(1.0), priority=-1.0)     # v (-1.0) is now the lowest
    assert sorted(pool.keys()) == ["u", "w", "z"]


def test_priority_update_changes_priority_only_when_given():
    pool = KVCachePool(3, PRIORITY)
    fill(pool, "a", "b", "c", a=1.0, b=2.0, c=3.0)
    pool.set("a", make_kv(7.0), priority=10.0)  # a is now the highest
    pool.set("b", make_kv(8.0))                 # value refreshed, priority stays 2.0
    assert value_of(pool.get("b")) == 8.0
    pool.set("d", make_kv(0.0), priority=5.0)   # evicts b (2.0)
    assert sorted(pool.keys()) == ["a", "c", "d"]
    pool.set("a", make_kv(7.0), priority=-5.0)  # lowered: next victim
    pool.set("e", make_kv(0.0), priority=5.0)
    assert sorted(pool.keys()) == ["c", "d", "e"]
    pool.check_invariants()


def test_priority_update_keeps_the_insertion_age_for_ties():
    pool = KVCachePool(2, PRIORITY)
    fill(pool, "a", "b", a=1.0, b=0.0)
    pool.set("a", make_kv(2.0), priority=0.0)  # now tied with b, and still the older insertion
    pool.set("c", make_kv(3.0), priority=5.0)
    assert sorted(pool.keys()) == ["b", "c"]


def test_priority_heap_stays_bounded_under_many_updates():
    pool = KVCachePool(4, PRIORITY)
    kv = make_kv(1.0)
    fill(pool, "a", "b", "c", "d")
    for i in range(2000):
        pool.set("abcd"[i % 4], kv, priority=float(i))
    # Lazy invalidation leaves stale entries; the rebuild caps them at O(pool_size).
    assert len(pool._heap) <= 2 * 4 + 17
    pool.check_invariants()
    pool.set("e", kv, priority=0.0)             # lowest current priority is 1996 ("a")
    assert "a" not in pool and len(pool) == 4


def test_priority_is_ignored_by_fifo_and_lru():
    for strategy in (FIFO, LRU):
        pool = KVCachePool(2, strategy)
        pool.set("a", make_kv(0.0), priority=100.0)
        pool.set("b", make_kv(1.0), priority=-100.0)
        pool.set("c", make_kv(2.0))
        assert pool.keys() == ["b", "c"]


@pytest.mark.parametrize("strategy", list(EvictionStrategy))
def test_pool_of_one(strategy):
    pool = KVCachePool(1, strategy)
    for i, key in enumerate("abc"):
        assert pool.set(key, make_kv(float(i))) == 0
        assert pool.keys() == [key]
        pool.check_invariants()
    assert pool.stats.evictions == 2 and value_of(pool.get("c")) == 2.0


# -- stats ----------------------------------------------------------------------------------------

def test_stats_count_hits_misses_evictions_and_size():
    pool = KVCachePool(2, FIFO, name="p")
    assert pool.get("a") is None
    fill(pool, "a", "b", "c")
    pool.get("b"), pool.get("c"), pool.get("a")
    assert str(pool.stats) == "hits=2, misses=2, evictions=1, size=2, hit_rate=50.0%"
    pool.stats.reset()
    assert str(pool.stats) == "hits=0, misses=0, evictions=0, size=2, hit_rate=0.0%"


def test_stats_disabled_counts_nothing_but_size():
    pool = KVCachePool(1, FIFO, enable_stats=False)
    pool.get("a")
    fill(pool, "a", "b")
    pool.get("b")
    s = pool.stats
    assert (s.hits, s.misses, s.evictions, s.size) == (0, 0, 0, 1)


# -- updates, clear, copies, storage reuse --------------------------------------------------------

def test_update_existing_key_refreshes_in_place():
    pool = KVCachePool(2, FIFO)
    slot = pool.set("a", make_kv(1.0))
    stored = pool.get("a")
    ptrs = stored.data_ptrs()
    assert pool.set("a", make_kv(2.0, tokens=3)) == slot
    assert pool.get("a") is stored and stored.data_ptrs() == ptrs
    assert value_of(stored) == 2.0 and stored.size == 3 and len(pool) == 1
    assert pool.stats.evictions == 0


def test_clear_drops_keys_and_keeps_storage_for_reuse():
    pool = KVCachePool(3, LRU)
    fill(pool, "a", "b")
    old = pool.get("a")
    ptrs, nbytes = old.data_ptrs(), pool.nbytes
    pool.clear()
    pool.check_invariants()
    assert len(pool) == 0 and pool.keys() == [] and "a" not in pool and pool.get("a") is None
    assert pool.stats.size == 0 and pool.stats.evictions == 0 and pool.nbytes == nbytes
    assert pool.set("z", make_kv(5.0)) == 0       # slot 0 again, same storage
    assert pool.get("z") is old and old.data_ptrs() == ptrs and value_of(old) == 5.0
    assert pool.nbytes == nbytes
    fill(pool, "y", "x")                          # slot 1 reused, slot 2 allocated
    assert pool.nbytes == nbytes * 3 // 2


def test_stored_entry_is_a_private_copy():
    pool = KVCachePool(2, FIFO)
    src = make_kv(1.0)
    src.start_position = 3
    pool.set("a", src)
    for layer in src:
        layer.get()[0].fill_(99.0)
        layer.update(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
    src.start_position = 8
    stored = pool.get("a")
    assert stored is not src and value_of(stored) == 1.0
    assert stored.size == 1 and stored.start_position == 3


def test_steady_state_set_reuses_slot_storage():
    pool = KVCachePool(2, FIFO)
    fill(pool, "a", "b")
    ptrs = {key: pool.get(key).data_ptrs() for key in "ab"}
    nbytes = pool.nbytes
    assert pool.set("c", make_kv(7.0, tokens=2)) == 0   # evicts a, takes its slot and storage
    assert pool.get("c").data_ptrs() == ptrs["a"]
    pool.set("b", make_kv(8.0))
    assert pool.get("b").data_ptrs() == ptrs["b"]
    assert pool.nbytes == nbytes == 2 * make_kv(0.0).nbytes


def test_get_returns_the_stored_object():
    pool = KVCachePool(2)
    pool.set("a", make_kv(1.0))
    assert pool.get("a") is pool.get("a")


def test_peek_touches_neither_stats_nor_recency():
    pool = KVCachePool(2, LRU)
    fill(pool, "a", "b")
    assert value_of(pool.peek("a")) == 0.0 and pool.peek("zzz") is None
    pool.get("b")
    pool.set("c", make_kv(2.0))
    assert pool.keys() == ["b", "c"]  # peeking "a" did not save it
    assert (pool.stats.hits, pool.stats.misses) == (1, 0)


# -- keys -----------------------------------------------------------------------------------------

class CollidingKey:
    """Every instance hashes alike; equality decides (as the world model's node keys may)."""

    def __init__(self, ident: int) -> None:
        self.ident = ident

    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CollidingKey) and other.ident == self.ident


def test_keys_with_equal_hashes_are_kept_apart():
    pool = KVCachePool(3, FIFO)
    pool.set(CollidingKey(1), make_kv(1.0))
    pool.set(CollidingKey(2), make_kv(2.0))
    assert value_of(pool.get(CollidingKey(1))) == 1.0
    assert value_of(pool.get(CollidingKey(2))) == 2.0
    assert pool.get(CollidingKey(3)) is None and len(pool) == 2
    pool.check_invariants()


def test_any_hashable_key_including_none():
    pool = KVCachePool(3, PRIORITY)
    for i, key in enumerate([None, (1, 2), 3.5]):
        pool.set(key, make_kv(float(i)))
    assert value_of(pool.get(None)) == 0.0 and value_of(pool.get((1, 2))) == 1.0
    pool.check_invariants()


# -- attributes and bad input ---------------------------------------------------------------------

def test_attributes():
    pool = KVCachePool(4, "LRU", name="recurrent")
    assert pool.pool_size == 4 and pool.eviction_strategy is LRU and pool.name == "recurrent"
    assert list(pool) == [] and pool.keys() == []
    assert pool.spec is None and pool.nbytes == 0 and len(pool) == 0
    pool.set("a", make_kv(0.0))
    assert pool.spec == (1, 2, 4, 8, 2) and "recurrent" in repr(pool) and list(pool) == ["a"]
    assert KVCachePool(1).eviction_strategy is FIFO


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3", None])
def test_bad_pool_size(bad):
    with pytest.raises(ValueError, match=rf"pool_size={bad!r}.*positive int"):
        KVCachePool(bad)


@pytest.mark.parametrize("bad", ["random", "", 3, None])
def test_unknown_strategy(bad):
    with pytest.raises(ValueError, match=rf"{bad!r}; allowed: 'fifo', 'lru', 'priority'"):
        KVCachePool(2, bad)


@pytest.mark.parametrize("text,expected", [("fifo", FIFO), ("LRU", LRU), (" Priority ", PRIORITY), (LRU, LRU)])
def test_parse_strategy(text, expected):
    assert EvictionStrategy.parse(text) is expected
    assert expected == expected.value  # a str enum compares equal to its value


def test_spec_mismatch_names_both_specs_and_changes_nothing():
    pool = KVCachePool(2, FIFO)
    pool.set("a", make_kv(1.0))
    with pytest.raises(ValueError, match=r"spec \(1, 2, 6, 8, 2\) does not match the pool's spec \(1, 2, 4, 8, 2\)"):
        pool.set("b", make_kv(1.0, max_tokens=6))
    assert pool.keys() == ["a"]
    pool.check_invariants()
    pool.clear()  # the spec outlives clear: the slots keep their storage
    with pytest.raises(ValueError, match="does not match"):
        pool.set("b", make_kv(1.0, max_tokens=6))


def test_nan_priority_rejected():
    pool = KVCachePool(2, PRIORITY)
    with pytest.raises(ValueError, match="priority=nan"):
        pool.set("a", make_kv(1.0), priority=math.nan)
    assert len(pool) == 0


def test_check_invariants_detects_corruption():
    pool = KVCachePool(3, FIFO)
    fill(pool, "a", "b")
    pool._slot_to_key[0] = "b"
    with pytest.raises(AssertionError, match="maps back"):
        pool.check_invariants()
    pool = KVCachePool(3, FIFO)
    fill(pool, "a")
    pool._free.append(2)  # slot 2 listed twice
    with pytest.raises(AssertionError):
        pool.check_invariants()
