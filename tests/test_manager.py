"""KVCacheManager and CacheConfig: pool sizing, lookups, housekeeping, stats, logging, bad input."""

import logging

import pytest
from kvutil import make_kv, value_of

from zerokv.cache import (
    CacheConfig,
    CacheStats,
    EvictionStrategy,
    KVCacheManager,
    KVStore,
    LegacyKVStore,
)
from zerokv.cache.manager import pool_sizes

WARNING = "evictions inside a search are possible"






def small(env_num: int = 2, **overrides) -> KVCacheManager:
    fields = {"num_simulations": 3, "game_segment_length": 2, **overrides}
    return KVCacheManager(CacheConfig(**fields), env_num)


# -- config ---------------------------------------------------------------------------------------

def test_config_defaults_and_normalisation():
    c = CacheConfig()
    assert (c.num_simulations, c.max_cache_size, c.game_segment_length) == (50, 10_000, 400)
    assert c.eviction_strategy is EvictionStrategy.FIFO and c.enable_stats is True
    assert c.init_pool_size is None and c.recur_pool_size is None
    assert CacheConfig(eviction_strategy="LRU").eviction_strategy is EvictionStrategy.LRU


@pytest.mark.parametrize("field,bad", [
    ("num_simulations", 0), ("max_cache_size", -1), ("game_segment_length", 2.5),
    ("init_pool_size", 0), ("recur_pool_size", True), ("enable_stats", "yes"),
])
def test_config_rejects_bad_values(field, bad):
    with pytest.raises(ValueError, match=rf"{field}={bad!r}"):
        CacheConfig(**{field: bad})


def test_config_rejects_unknown_strategy():
    with pytest.raises(ValueError, match="'random'; allowed: 'fifo', 'lru', 'priority'"):
        CacheConfig(eviction_strategy="random")


# -- pool sizes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fields,env_num,init,recur", [
    ({}, 8, 400, 408),                                           # UniZero Atari: 8 x (50 + 1)
    ({"game_segment_length": 20}, 8, 51, 408),                   # never below one search
    ({"num_simulations": 500}, 2, 501, 1002),
    ({"max_cache_size": 300}, 8, 300, 300),                      # capped (and warned)
    ({"init_pool_size": 7, "recur_pool_size": 9}, 8, 7, 9),      # explicit overrides win
    ({"max_cache_size": 5, "init_pool_size": 64}, 1, 64, 5),     # overrides are not capped
])
def test_pool_sizes_follow_the_formula(fields, env_num, init, recur):
    config = CacheConfig(**fields)
    assert pool_sizes(config, env_num) == (init, recur)
    m = KVCacheManager(config, env_num)
    assert [p.pool_size for p in m.init_pools] == [init] * env_num
    assert m.recur_pool.pool_size == recur and m.wm_pool.pool_size == env_num
    assert LegacyKVStore(config, env_num).shared_pool_size_recur == recur


def test_pool_names_and_strategy():
    m = KVCacheManager(CacheConfig(eviction_strategy="priority"), 3)
    assert [p.name for p in m.init_pools] == ["init_env0", "init_env1", "init_env2"]
    assert (m.recur_pool.name, m.wm_pool.name) == ("recurrent", "world_model")
    assert all(p.eviction_strategy is EvictionStrategy.PRIORITY for p in [*m.init_pools, m.recur_pool, m.wm_pool])
    assert m.env_num == 3 and isinstance(m.config, CacheConfig)


def test_one_search_never_evicts():
    """Every env stores a root and num_simulations children: default sizes hold them all."""
    m = KVCacheManager(CacheConfig(num_simulations=6, game_segment_length=3), env_num=3)
    for env in range(3):
        m.set_init_cache(env, ("root", env), make_kv(env))
        for sim in range(6):
            m.set_recur_cache((env, sim), make_kv(100 * env + sim))
    assert m.totals().evictions == 0
    for env in range(3):
        assert value_of(m.hierarchical_get(env, ("root", env))) == env
        assert all(value_of(m.get_recur_cache((env, s))) == 100 * env + s for s in range(6))


# -- logging --------------------------------------------------------------------------------------

def test_tiny_override_warns_once(caplog):
    caplog.set_level(logging.INFO, logger="zerokv")
    m = KVCacheManager(CacheConfig(num_simulations=4, init_pool_size=2, recur_pool_size=3), 2)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and WARNING in warnings[0].getMessage()
    assert "init pools hold 2 < num_simulations + 1 = 5" in warnings[0].getMessage()
    assert "recurrent pool holds 3 < env_num * (num_simulations + 1) = 10" in warnings[0].getMessage()
    caplog.clear()
    for i in range(20):  # evictions are counted, never logged
        m.set_recur_cache(i, make_kv(i))
        m.get_recur_cache(i)
    assert caplog.records == [] and m.recur_pool.stats.evictions == 17


def test_safe_sizes_do_not_warn_and_log_one_info_line(caplog):
    caplog.set_level(logging.DEBUG, logger="zerokv")
    m = KVCacheManager(CacheConfig(), 8)
    infos = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(infos) == 1 and infos[0].levelno == logging.INFO and infos[0].name == "zerokv.cache.manager"
    assert "8 envs" in infos[0].getMessage()
    caplog.clear()
    m.set_init_cache(0, "a", make_kv(1.0))
    m.hierarchical_get(0, "a")
    m.hierarchical_get(0, "b")
    assert caplog.records == []  # not even debug lines on get/set


def test_library_leaves_the_root_logger_alone():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    KVCacheManager(CacheConfig(init_pool_size=1), 2)
    LegacyKVStore(CacheConfig(recur_pool_size=1), 2)
    assert root.handlers == handlers and root.level == level
    assert logging.getLogger("zerokv.cache.manager").handlers == []


# -- lookups --------------------------------------------------------------------------------------

def test_init_pools_are_per_env():
    m = small(env_num=2)
    m.set_init_cache(0, "k", make_kv(1.0))
    m.set_init_cache(1, "k", make_kv(2.0))
    assert value_of(m.get_init_cache(0, "k")) == 1.0 and value_of(m.get_init_cache(1, "k")) == 2.0


def test_hierarchical_get_init_before_recurrent():
    m = small()
    m.set_init_cache(1, "both", make_kv(1.0))
    m.set_recur_cache("both", make_kv(2.0))
    m.set_recur_cache("recur_only", make_kv(3.0))
    assert value_of(m.hierarchical_get(1, "both")) == 1.0
    assert value_of(m.hierarchical_get(1, "recur_only")) == 3.0
    assert value_of(m.hierarchical_get(0, "both")) == 2.0  # env 0's init pool does not have it
    assert m.hierarchical_get(1, "nowhere") is None
    # Hits: init 1; recurrent 2. Misses: init env 0 once and env 1 twice; recurrent once.
    s = m.get_stats_summary()
    assert s["init_pools"]["env_1"].startswith("hits=1, misses=2,")
    assert s["init_pools"]["env_0"].startswith("hits=0, misses=1,")
    assert s["recur_pool"].startswith("hits=2, misses=1,")


def test_wm_pool_holds_env_num_entries_fifo():
    m = small(env_num=2)
    for i in range(3):
        m.set_wm_cache(i, make_kv(float(i)))
    assert m.get_wm_cache(0) is None and value_of(m.get_wm_cache(2)) == 2.0
    assert m.wm_pool.stats.evictions == 1


def test_priority_passes_through():
    m = small(env_num=1, eviction_strategy="priority", init_pool_size=2, recur_pool_size=2)
    m.set_recur_cache("a", make_kv(1.0), priority=5.0)
    m.set_recur_cache("b", make_kv(2.0), priority=1.0)
    m.set_recur_cache("c", make_kv(3.0), priority=3.0)
    m.set_init_cache(0, "x", make_kv(1.0), priority=9.0)
    m.set_init_cache(0, "y", make_kv(1.0), priority=0.0)
    m.set_init_cache(0, "z", make_kv(1.0), priority=1.0)
    assert sorted(m.recur_pool.keys()) == ["a", "c"] and sorted(m.init_pools[0].keys()) == ["x", "z"]


def test_private_copy_and_steady_state_storage():
    m = small(env_num=1, init_pool_size=1)
    src = make_kv(1.0)
    m.set_init_cache(0, "a", src)
    stored = m.get_init_cache(0, "a")
    ptrs = stored.data_ptrs()
    src[0].get()[0].fill_(50.0)
    assert value_of(stored) == 1.0
    m.set_init_cache(0, "b", make_kv(2.0))  # evicts a, reuses its storage
    assert m.get_init_cache(0, "b").data_ptrs() == ptrs


# -- housekeeping and stats -----------------------------------------------------------------------

def fill_everything(m: KVCacheManager) -> None:
    for env in range(m.env_num):
        m.set_init_cache(env, "root", make_kv(env))
    m.set_recur_cache("node", make_kv(9.0))
    m.set_wm_cache("batch", make_kv(8.0))
    m.keys_values_wm_list.append(make_kv(0.0))
    m.keys_values_wm_size_list.append(1)


def test_clear_all_and_partial_clears():
    m = small(env_num=2)
    fill_everything(m)
    nbytes = m.nbytes
    assert nbytes == 4 * make_kv(0.0).nbytes
    m.clear_recur_cache()
    assert len(m.recur_pool) == 0 and len(m.init_pools[0]) == 1 and len(m.wm_pool) == 1
    m.clear_init_caches()
    assert all(len(p) == 0 for p in m.init_pools) and len(m.wm_pool) == 1
    fill_everything(m)
    m.clear_all()
    assert all(len(p) == 0 for p in [*m.init_pools, m.recur_pool, m.wm_pool])
    assert m.keys_values_wm_list == [] and m.keys_values_wm_size_list == []
    assert m.nbytes == nbytes  # storage is kept for reuse
    assert m.totals().size == 0


def test_summary_shape_and_exact_strings():
    m = small(env_num=2, init_pool_size=2)
    for key in "abc":
        m.set_init_cache(0, key, make_kv(1.0))
    m.get_init_cache(0, "c"), m.get_init_cache(0, "a"), m.get_wm_cache("w")
    assert m.get_stats_summary() == {
        "stats_enabled": True,
        "init_pools": {
            "env_0": "hits=1, misses=1, evictions=1, size=2, hit_rate=50.0%",
            "env_1": "hits=0, misses=0, evictions=0, size=0, hit_rate=0.0%",
        },
        "recur_pool": "hits=0, misses=0, evictions=0, size=0, hit_rate=0.0%",
        "wm_pool": "hits=0, misses=1, evictions=0, size=0, hit_rate=0.0%",
    }
    assert m.totals() == CacheStats(hits=1, misses=2, evictions=1, size=2)
    m.reset_stats()
    assert m.totals() == CacheStats(size=2)


@pytest.mark.parametrize("manager_flag,config_flag", [(False, True), (True, False)])
def test_stats_disabled(manager_flag, config_flag):
    m = KVCacheManager(CacheConfig(enable_stats=config_flag), 2, enable_stats=manager_flag)
    m.set_init_cache(0, "a", make_kv(1.0))
    m.get_init_cache(0, "a"), m.get_recur_cache("zz")
    assert m.get_stats_summary() == {"stats_enabled": False}
    assert m.totals() == CacheStats(size=1)


def test_both_stores_satisfy_the_protocol():
    assert isinstance(small(), KVStore)
    assert isinstance(LegacyKVStore(CacheConfig(), 1), KVStore)
    assert not isinstance(object(), KVStore)


# -- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("env_id", [-1, 2, 17, True])
def test_env_id_outside_range(env_id):
    m = small(env_num=2)
    calls = [
        lambda: m.get_init_cache(env_id, "k"),
        lambda: m.set_init_cache(env_id, "k", make_kv(1.0)),
        lambda: m.hierarchical_get(env_id, "k"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=rf"env_id={env_id!r} outside the allowed range \[0, 2\)"):
            call()
    assert m.totals() == CacheStats()


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_bad_env_num(bad):
    with pytest.raises(ValueError, match=rf"env_num={bad!r}; must be a positive int"):
        KVCacheManager(CacheConfig(), bad)


def test_config_must_be_a_cache_config():
    with pytest.raises(TypeError, match="config is a dict; expected CacheConfig"):
        KVCacheManager({"num_simulations": 50}, 2)
