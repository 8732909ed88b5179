"""CacheStats: counters, rates, reset and the seeds' exact log string."""

import dataclasses

import pytest

from zerokv.cache import CacheStats


def test_fresh_stats_are_zero():
    s = CacheStats()
    assert (s.hits, s.misses, s.evictions, s.size) == (0, 0, 0, 0)
    assert s.total_queries == 0 and s.hit_rate == 0.0 and s.miss_rate == 0.0
    assert str(s) == "hits=0, misses=0, evictions=0, size=0, hit_rate=0.0%"


def test_string_is_exact():
    s = CacheStats(size=4)
    for _ in range(5):
        s.record_hit()
    s.record_miss()
    s.record_miss()
    s.record_eviction()
    assert str(s) == "hits=5, misses=2, evictions=1, size=4, hit_rate=71.4%"
    assert s.total_queries == 7
    assert s.hit_rate == pytest.approx(5 / 7) and s.miss_rate == pytest.approx(2 / 7)


@pytest.mark.parametrize("hits,misses,text", [(1, 0, "100.0%"), (0, 3, "0.0%"), (1, 2, "33.3%"), (2, 1, "66.7%")])
def test_hit_rate_rounds_to_one_decimal(hits, misses, text):
    assert str(CacheStats(hits=hits, misses=misses)).endswith(f"hit_rate={text}")


def test_reset_keeps_size():
    s = CacheStats(hits=3, misses=1, evictions=2, size=9)
    s.reset()
    assert (s.hits, s.misses, s.evictions, s.size) == (0, 0, 0, 9)


def test_sum_of_stats():
    a, b = CacheStats(1, 2, 3, 4), CacheStats(10, 20, 30, 40)
    assert a + b == CacheStats(11, 22, 33, 44)
    assert CacheStats.total([a, b, a]) == CacheStats(12, 24, 36, 48)
    assert CacheStats.total([]) == CacheStats()
    assert (a, b) == (CacheStats(1, 2, 3, 4), CacheStats(10, 20, 30, 40))  # operands untouched


def test_is_a_slotted_dataclass():
    s = CacheStats()
    assert dataclasses.is_dataclass(s) and not hasattr(s, "__dict__")
    with pytest.raises(AttributeError):
        s.hit_count = 1  # a typo of a field must not silently create one
