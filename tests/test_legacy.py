"""LegacyKVStore: the seeds' old layout, its write-pointer FIFO, and equivalence with the manager."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kvutil import make_kv, value_of

from zerokv.cache import CacheConfig, CacheStats, KVCacheManager, LegacyKVStore

# Safe minimums for 2 envs x 2 simulations are 3 (init) and 6 (recurrent): no warning, and
# 10 keys are plenty to force evictions.
SMALL = {"num_simulations": 2, "game_segment_length": 3, "init_pool_size": 3, "recur_pool_size": 6}






def legacy(env_num: int = 2, **overrides) -> LegacyKVStore:
    return LegacyKVStore(CacheConfig(**{**SMALL, **overrides}), env_num)


def test_old_layout():
    store = legacy(env_num=2)
    assert store.shared_pool_size_init == 3 and store.shared_pool_size_recur == 6
    assert store.past_kv_cache_init_infer_envs == [{}, {}]
    assert store.shared_pool_init_infer == [[None] * 3, [None] * 3]
    assert store.shared_pool_index_init_envs == [0, 0]
    assert store.pool_idx_to_key_map_init_envs == [[None] * 3, [None] * 3]
    assert store.past_kv_cache_recurrent_infer == {} and store.shared_pool_recur_infer == [None] * 6
    assert store.shared_pool_index_recur == 0 and store.pool_idx_to_key_map_recur_infer == [None] * 6
    assert store.env_num == 2 and store.nbytes == 0


def test_write_pointer_fifo_and_evictions():
    store = legacy(env_num=1)
    slots = [store.set_init_cache(0, key, make_kv(i)) for i, key in enumerate("abcd")]
    assert slots == [0, 1, 2, 0] and store.shared_pool_index_init_envs == [1]
    assert store.past_kv_cache_init_infer_envs[0] == {"b": 1, "c": 2, "d": 0}
    assert store.pool_idx_to_key_map_init_envs[0] == ["d", "b", "c"]
    assert store.get_init_cache(0, "a") is None and value_of(store.get_init_cache(0, "d")) == 3.0
    assert str(store.totals()) == "hits=1, misses=1, evictions=1, size=3, hit_rate=50.0%"


def test_update_refreshes_in_place_and_keeps_the_pointer():
    store = legacy(env_num=1)
    store.set_recur_cache("a", make_kv(1.0))
    store.set_recur_cache("b", make_kv(2.0))
    ptrs = store.shared_pool_recur_infer[0].data_ptrs()
    assert store.set_recur_cache("a", make_kv(5.0)) == 0
    assert store.shared_pool_index_recur == 2 and store.shared_pool_recur_infer[0].data_ptrs() == ptrs
    assert value_of(store.get_recur_cache("a")) == 5.0 and store.totals().evictions == 0


def test_stale_reverse_map_after_clear_does_not_evict_a_live_key():
    store = legacy(env_num=1)
    store.set_init_cache(0, "a", make_kv(1.0))  # slot 0
    store.set_init_cache(0, "b", make_kv(2.0))  # slot 1
    store.clear_all()                            # dicts only: idx_to_key still says a, b
    assert store.set_init_cache(0, "b", make_kv(3.0)) == 2
    store.set_init_cache(0, "c", make_kv(4.0))  # slot 0: stale "a", not live -> nothing evicted
    store.set_init_cache(0, "d", make_kv(5.0))  # slot 1: stale "b", but b lives in slot 2
    # The reference would have deleted the live "b" here.
    assert value_of(store.get_init_cache(0, "b")) == 3.0
    assert store.past_kv_cache_init_infer_envs[0] == {"b": 2, "c": 0, "d": 1}
    assert store.totals().evictions == 0
    store.set_init_cache(0, "e", make_kv(6.0))  # slot 2: now "b" really is the oldest
    assert store.get_init_cache(0, "b") is None and store.totals().evictions == 1


def test_private_copy_and_storage_reuse():
    store = legacy(env_num=1)
    src = make_kv(1.0)
    store.set_init_cache(0, "a", src)
    src[1].get()[0].fill_(-7.0)
    assert value_of(store.get_init_cache(0, "a")) == 1.0
    ptrs = [kv.data_ptrs() for kv in store.shared_pool_init_infer[0] if kv is not None]
    nbytes = store.nbytes
    for i in range(10):  # wraps the pool three times
        store.set_init_cache(0, i, make_kv(float(i)))
    assert store.shared_pool_init_infer[0][0].data_ptrs() == ptrs[0]
    assert store.nbytes == 3 * nbytes


def test_hierarchical_and_summary():
    store = legacy(env_num=2)
    store.set_init_cache(0, "k", make_kv(1.0))
    store.set_recur_cache("k", make_kv(2.0))
    assert value_of(store.hierarchical_get(0, "k")) == 1.0
    assert value_of(store.hierarchical_get(1, "k")) == 2.0
    store.set_wm_cache("w", make_kv(3.0))
    assert value_of(store.get_wm_cache("w")) == 3.0
    assert store.get_stats_summary() == {
        "stats_enabled": True,
        "init_pools": {
            "env_0": "hits=1, misses=0, evictions=0, size=1, hit_rate=100.0%",
            "env_1": "hits=0, misses=1, evictions=0, size=0, hit_rate=0.0%",
        },
        "recur_pool": "hits=1, misses=0, evictions=0, size=1, hit_rate=100.0%",
        "wm_pool": "hits=1, misses=0, evictions=0, size=1, hit_rate=100.0%",
    }
    store.reset_stats()
    assert store.totals() == CacheStats(size=3)
    store.keys_values_wm_list.append(1)
    store.keys_values_wm_size_list.append(1)
    store.clear_all()
    assert store.totals() == CacheStats() and store.keys_values_wm_list == []
    assert store.keys_values_wm_size_list == [] and store.past_kv_cache_wm == {}


def test_stats_disabled():
    store = LegacyKVStore(CacheConfig(), 1, enable_stats=False)
    store.get_init_cache(0, "a")
    store.set_init_cache(0, "a", make_kv(1.0))
    assert store.get_stats_summary() == {"stats_enabled": False}
    assert store.totals() == CacheStats(size=1)


def test_bad_input():
    with pytest.raises(ValueError, match="eviction_strategy='lru'; the legacy store supports only 'fifo'"):
        LegacyKVStore(CacheConfig(eviction_strategy="lru"), 2)
    with pytest.raises(ValueError, match=r"env_num=0; must be a positive int"):
        LegacyKVStore(CacheConfig(), 0)
    store = legacy(env_num=2)
    with pytest.raises(ValueError, match=r"env_id=2 outside the allowed range \[0, 2\)"):
        store.set_init_cache(2, "k", make_kv(1.0))
    with pytest.raises(ValueError, match=r"env_id=-1 outside"):
        store.hierarchical_get(-1, "k")


# -- equivalence with the manager (FIFO) ----------------------------------------------------------

KEY = st.integers(0, 9)
OP = st.one_of(
    st.tuples(st.just("set_init"), st.integers(0, 1), KEY),
    st.tuples(st.just("get_init"), st.integers(0, 1), KEY),
    st.tuples(st.just("set_recur"), KEY),
    st.tuples(st.just("get_recur"), KEY),
    st.tuples(st.just("hier"), st.integers(0, 1), KEY),
    st.tuples(st.just("set_wm"), KEY),
    st.tuples(st.just("get_wm"), KEY),
    st.tuples(st.sampled_from(["clear_all", "clear_init", "clear_recur", "reset_stats"])),
)


def apply(store, op: tuple, value: float) -> float | None:
    name, *args = op
    if name == "set_init":
        store.set_init_cache(args[0], args[1], make_kv(value))
    elif name == "set_recur":
        store.set_recur_cache(args[0], make_kv(value))
    elif name == "set_wm":
        store.set_wm_cache(args[0], make_kv(value))
    elif name == "get_init":
        return value_of(store.get_init_cache(*args))
    elif name == "get_recur":
        return value_of(store.get_recur_cache(*args))
    elif name == "hier":
        return value_of(store.hierarchical_get(*args))
    elif name == "get_wm":
        return value_of(store.get_wm_cache(*args))
    elif name == "clear_all":
        store.clear_all()
    elif name == "clear_init":
        store.clear_init_caches()
    elif name == "clear_recur":
        store.clear_recur_cache()
    else:
        store.reset_stats()
    return None


def contents(store) -> list[dict]:
    """Per structure (init env 0, env 1, recurrent, wm): key -> stored value."""
    if isinstance(store, KVCacheManager):
        pools = [*store.init_pools, store.recur_pool, store.wm_pool]
        return [{k: value_of(p.peek(k)) for k in p} for p in pools]
    tables = [*zip(store.past_kv_cache_init_infer_envs, store.shared_pool_init_infer, strict=True),
              (store.past_kv_cache_recurrent_infer, store.shared_pool_recur_infer),
              (store.past_kv_cache_wm, store.shared_pool_wm)]
    return [{k: value_of(slots[s]) for k, s in table.items()} for table, slots in tables]


def run_both(ops: list[tuple]) -> tuple[KVCacheManager, LegacyKVStore]:
    config = CacheConfig(**SMALL)
    new, old = KVCacheManager(config, 2), LegacyKVStore(config, 2)
    for step, op in enumerate(ops):
        assert apply(new, op, float(step)) == apply(old, op, float(step)), (step, op)
        assert contents(new) == contents(old), (step, op)
        assert new.totals() == old.totals(), (step, op)
        for pool in (*new.init_pools, new.recur_pool, new.wm_pool):
            pool.check_invariants()
    return new, old


@settings(max_examples=120, deadline=None)
@given(ops=st.lists(OP, max_size=60))
def test_legacy_and_manager_agree(ops):
    run_both(ops)


@pytest.mark.slow
def test_legacy_and_manager_agree_on_a_long_random_sequence():
    rng = random.Random(0)
    ops = []
    for _ in range(3000):
        r = rng.random()
        env, key = rng.randrange(2), rng.randrange(12)
        if r < 0.3:
            ops.append(("set_recur", key))
        elif r < 0.45:
            ops.append(("set_init", env, key))
        elif r < 0.5:
            ops.append(("set_wm", key))
        elif r < 0.8:
            ops.append(("hier", env, key))
        elif r < 0.9:
            ops.append(("get_recur", key))
        elif r < 0.995:
            ops.append(("get_wm", key))
        else:
            ops.append((rng.choice(["clear_all", "clear_init", "clear_recur"]),))
    _, old = run_both(ops)
    totals = old.totals()
    assert totals.evictions > 100 and totals.hits > 100 and totals.misses > 100
