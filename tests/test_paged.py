"""The paged arena: nodes keep only their own two tokens, addressed by (env, node id)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zerokv import PagedArena, SearchConfig, WorldModel, WorldModelConfig, plan


def build(**overrides) -> WorldModel:
    cfg = dict(observation_shape=(5,), action_space_size=3, embed_dim=32, num_heads=4, num_layers=2,
               context_length=4, max_tokens=12, env_num=3, num_simulations=12, support_size=10,
               cache_backend="paged")
    cfg.update(overrides)
    torch.manual_seed(0)
    return WorldModel(WorldModelConfig(**cfg)).eval()


def searches(wm: WorldModel, n: int, sims: int = 12, seed: int = 0):
    rng, last = np.random.default_rng(seed), None
    for _ in range(n):
        out = plan(wm, rng.random((3, 5), dtype=np.float32), config=SearchConfig(num_simulations=sims),
                   rng=rng, last_actions=last)
        last = out.action
        yield out


def test_invariant_holds_and_nothing_leaks_over_many_searches():
    wm = build()
    arena: PagedArena = wm.kv_cache_manager
    for _ in searches(wm, 6):
        arena.check_invariants()
        # One search: every env's root plus exactly num_simulations live nodes, never more.
        assert arena.live.tolist() == [12, 12, 12]
        assert len(arena) == 3 * 13
    stats = wm.cache_stats()
    assert stats.fallbacks == 0 and stats.misses == 0 and stats.evictions == 0
    assert stats.hit_rate == 1.0


def test_a_new_root_retires_the_previous_search_in_o1():
    wm = build()
    arena = wm.kv_cache_manager
    next(searches(wm, 1))
    generation = arena.generation.copy()
    wm.initial_inference(np.zeros((3, 5), np.float32), last_actions=[0, 1, 2])
    assert (arena.generation == generation + 1).all()
    assert arena.live.tolist() == [0, 0, 0]
    arena.check_invariants()


def test_each_node_stores_only_its_two_tokens():
    wm = build()
    arena = wm.kv_cache_manager
    cfg = wm.config
    token_bytes = 2 * cfg.num_layers * cfg.embed_dim * 4  # keys and values, every layer, float32
    assert arena.node_bytes == 2 * token_bytes
    rows = arena.rows
    assert arena.kv.shape == (cfg.num_layers, 2, cfg.num_heads, rows, cfg.head_dim)
    assert rows == cfg.env_num * (cfg.context_length - 1) + 2 * cfg.env_num * cfg.num_simulations


def test_copies_per_expansion_are_one_gather_of_the_visible_past_and_the_new_slots():
    wm = build()
    list(searches(wm, 1))  # warm
    wm.work.reset()
    list(searches(wm, 1, seed=1))
    cfg = wm.config
    token_bytes = 2 * cfg.num_layers * cfg.embed_dim * 4
    w = cfg.context_length - 1
    expansions = cfg.env_num * cfg.num_simulations
    # Roots (this search starts episodes: one new token each): a gather of the (empty) window and
    # the new token's slot, then the window's w - 1 older tokens rewritten beside the new one.
    roots = cfg.env_num * (w + 1 + w - 1) * token_bytes
    # Each expansion gathers its parent's w visible tokens once, plus placeholders for its two new
    # tokens' slots (the gather fills the whole head-major buffer); attention then reads that
    # buffer in place, and writing the two new tokens into their storage is not a copy.
    assert wm.work.bytes_copied == roots + expansions * (w + 2) * token_bytes
    assert wm.work.host_syncs == 1  # the roots' content keys, once per search


def test_more_expansions_than_the_arena_holds_is_refused():
    wm = build(num_simulations=2)
    root = wm.initial_inference(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="child id 3"):
        wm.recurrent_inference(root.latent_state, np.zeros(3, int), parent_ids=np.zeros(3, int),
                               child_ids=np.full(3, 3))


def test_node_ids_are_required():
    wm = build()
    root = wm.initial_inference(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="node ids"):
        wm.recurrent_inference(root.latent_state, np.zeros(3, int))


def test_a_parent_whose_past_is_gone_is_a_counted_fallback():
    wm = build()
    root = wm.initial_inference(np.zeros((3, 5), np.float32))
    child = wm.recurrent_inference(root.latent_state, np.zeros(3, int), parent_ids=np.zeros(3, int),
                                   child_ids=np.full(3, 1))
    wm.clear_caches()  # mid-search: the nodes exist, their keys and values do not
    wm.recurrent_inference(child.latent_state, np.zeros(3, int), parent_ids=np.full(3, 1),
                           child_ids=np.full(3, 2))
    assert wm.cache_stats().fallbacks == 3
    wm.kv_cache_manager.check_invariants()


def test_clear_and_rebuild_keep_the_root_context():
    wm = build()
    list(searches(wm, 2))
    wm.clear_caches()
    assert len(wm.kv_cache_manager) == 0
    wm.rebuild_root_contexts([0, 1, 2], [np.zeros((3, 5), np.float32)] * 3, [[0, 1]] * 3)
    wm.initial_inference(np.ones((3, 5), np.float32), last_actions=[1, 1, 1])
    assert wm.cache_stats().fallbacks == 0
    wm.kv_cache_manager.check_invariants()
