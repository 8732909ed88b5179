"""PagedArena on its own: 2 envs × 3 simulations, exact tables and the invariant after every operation.

Every token's keys are filled with a number naming it (its values with minus that number), so a
gather can be checked slot by slot. Window W = 3, so the rows are

    env 0 root window 0 1 2 · env 1 root window 3 4 5 ·
    env 0 nodes 1: 6 7, 2: 8 9, 3: 10 11 · env 1 nodes 1: 12 13, 2: 14 15, 3: 16 17
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zerokv.cache import PagedArena, StatsSource
from zerokv.cache.paged import NO_TOKEN as X

HD = 2


def tokens(*names: list[float]) -> torch.Tensor:
    """``(L=1, 2, H=1, B, T, hd)``: row b's tokens named ``names[b]`` (keys +name, values -name)."""
    k = torch.tensor(names, dtype=torch.float32)[:, :, None].expand(-1, -1, HD)  # (B, T, hd)
    return torch.stack([k, -k])[None, :, None]


def one_token(*names: float) -> torch.Tensor:
    """``(L=1, 2, H=1, B, hd)``: one token per row."""
    return tokens(*[[n] for n in names])[..., 0, :]


def names_of(kv: torch.Tensor) -> np.ndarray:
    """The names held by a gathered buffer ``(1, 2, 1, B, S, hd)``: ``(B, S)``."""
    assert torch.equal(kv[0, 1], -kv[0, 0]) and torch.equal(kv[..., 0], kv[..., 1])
    return kv[0, 0, 0, :, :, 0].numpy()


@pytest.fixture
def arena() -> PagedArena:
    return PagedArena(env_num=2, num_simulations=3, window=3, num_layers=1, num_heads=1, head_dim=HD)


def test_an_arena_through_roots_children_fallbacks_and_a_new_search(arena):
    assert arena.rows == 6 + 2 * 2 * 3 and len(arena) == 0 and isinstance(arena, StatsSource)
    # Roots: env 0 starts an episode (1 real token), env 1 has a full window; newest at 0 and 5.
    arena.write_roots(np.array([0, 1]), ["a", "b"], tokens([0, 0, 102], [200, 201, 202]),
                      np.array([1, 3]), np.array([0, 5]))
    arena.check_invariants()
    assert arena.table[0, 0].tolist() == [X, X, 2] and arena.table[1, 0].tolist() == [3, 4, 5]
    assert arena.last_position[:, 0].tolist() == [0, 5] and len(arena) == 2
    assert arena.has_root(0, "a") and arena.has_root(1, "b") and not arena.has_root(1, "a")

    g = arena.gather(np.array([0, 1, -1]), np.array([0, 0, -1]), new_tokens=2)  # row 2: no past
    assert g.kv.shape == (1, 2, 1, 3, 5, HD)
    assert names_of(g.kv)[:, 2].tolist() == [102, 202, 0] and names_of(g.kv)[1, :3].tolist() == [200, 201, 202]
    assert g.valid[:, :3].tolist() == [[False, False, True], [True, True, True], [False, False, False]]
    assert not g.valid[:, 3:].any()
    assert g.positions[:2, :3].tolist() == [[-2, -1, 0], [3, 4, 5]]
    assert g.last.tolist() == [0, 5, -1] and g.lengths.tolist() == [1, 3, 0]

    # Node 1 of each env, from its root: the parent's rows, then its own two.
    arena.write_children(np.array([0, 1]), np.array([1, 1]), np.array([0, 0]), tokens([110, 111], [210, 211]),
                         np.array([2, 7]))
    arena.check_invariants()
    assert arena.table[0, 1].tolist() == [2, 6, 7] and arena.table[1, 1].tolist() == [5, 12, 13]
    assert arena.length[:, 1].tolist() == [3, 3] and arena.live.tolist() == [1, 1]

    # Two leaves of env 0 in one call (multi-leaf): node 2 below node 1, node 3 below the root.
    arena.write_children(np.array([0, 0]), np.array([2, 3]), np.array([1, 0]), tokens([120, 121], [130, 131]),
                         np.array([4, 2]))
    arena.check_invariants()
    assert arena.table[0, 2].tolist() == [7, 8, 9] and arena.table[0, 3].tolist() == [2, 10, 11]
    assert arena.live.tolist() == [3, 1] and len(arena) == 2 + 4
    g = arena.gather(np.array([0, 0]), np.array([2, 3]), new_tokens=2)
    assert names_of(g.kv)[:, :3].tolist() == [[111, 120, 121], [102, 130, 131]]
    assert g.positions[:, :3].tolist() == [[2, 3, 4], [0, 1, 2]]
    assert arena.live_mask(np.array([0, 0, 1, 1]), np.array([1, 2, 2, 0])).tolist() == [True, True, False, True]

    # Refused writes change nothing.
    before = (arena.table.copy(), arena.live.copy(), arena.kv.clone())
    for bad in (dict(children=[4], parents=[0], envs=[1]), dict(children=[2], parents=[-1], envs=[1]),
                dict(children=[2], parents=[0], envs=[2]), dict(children=[0], parents=[0], envs=[1])):
        with pytest.raises(ValueError, match="PagedArena: (node|env) id"):
            arena.write_children(np.array(bad["envs"]), np.array(bad["children"]), np.array(bad["parents"]),
                                 tokens([999, 999]), np.array([9]))
    assert (arena.table == before[0]).all() and (arena.live == before[1]).all() and torch.equal(arena.kv, before[2])

    # A lost past: env 1's node 2 continues from one context-free token at position 0, in its own rows.
    arena.write_fallbacks(np.array([1]), np.array([2]), one_token(299))
    arena.check_invariants()
    assert arena.table[1, 2].tolist() == [X, X, 14] and arena.length[1, 2] == 1 and arena.last_position[1, 2] == 0
    assert names_of(arena.gather(np.array([1]), np.array([2]), 0).kv).tolist() == [[0, 0, 299]]

    # A new root for env 0 retires its search in O(1); env 1's is untouched.
    tables = arena.table[1].copy()
    arena.write_roots(np.array([0]), ["a2"], tokens([110, 111, 140]), np.array([3]), np.array([3]))
    arena.check_invariants()
    assert arena.live.tolist() == [0, 2] and (arena.table[1] == tables).all()
    assert arena.has_root(0, "a2") and not arena.has_root(0, "a") and arena.has_root(1, "b")
    assert arena.live_mask(np.array([0, 0]), np.array([1, 2])).tolist() == [False, False]
    assert arena.totals().size == 2 + 2 and arena.totals().hits == 0  # lookups are counted by the world model
    assert arena.get_stats_summary() == {"stats_enabled": True, "live_roots": 2, "live_nodes": 2,
                                         "capacity_nodes": 6}

    arena.clear()
    arena.check_invariants()
    assert len(arena) == 0 and not arena.has_root(1, "b")


def test_a_root_fallback_and_the_arena_sizes(arena):
    arena.write_fallbacks(np.array([1]), np.array([0]), one_token(7))  # a root whose window was lost
    arena.check_invariants()
    assert arena.table[1, 0].tolist() == [X, X, 5] and arena.length[1, 0] == 1 and len(arena) == 1
    assert arena.node_bytes == 2 * 2 * HD * 4  # two tokens' keys and values, float32
    assert arena.nbytes == arena.kv.numel() * 4 + arena.table.nbytes + arena.last_position.nbytes
    with pytest.raises(ValueError, match="num_simulations=0"):
        PagedArena(env_num=2, num_simulations=0, window=3, num_layers=1, num_heads=1, head_dim=HD)
