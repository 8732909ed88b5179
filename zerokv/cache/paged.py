"""``PagedArena``: node-addressed KV storage for one search, where each node keeps only its own tokens.

A search tree's child shares its parent's whole context and adds exactly two tokens (action,
predicted latent). So, as in vLLM's block tables, a node stores only the keys/values of *its* two
tokens, plus a small table naming the token rows of its visible past; each env's root context is
stored once and shared by all its descendants.

Layout: one token-row arena ``kv (L, 2, H, rows, hd)`` — head-major, so that one
``index_select`` over the row axis moves tokens for every layer and head at once *and* yields a
buffer whose per-layer keys are contiguous ``(H, B, S, hd)`` matrices for attention — with

    rows [e·W, (e+1)·W)                         env e's root window (W = context_length − 1)
    rows R + 2·(e·S + n − 1) + {0, 1}           node n ≥ 1 of env e: its action and latent tokens

(R = env_num·W root rows, S = num_simulations). ``table[e, n]`` (W ints) lists the rows of node
n's last W tokens, oldest first, right-aligned and padded with ``NO_TOKEN``; ``last_position[e, n]``
is the absolute position of its newest token. A batch is assembled by one index gather
through the table — no clone, no pad-then-slice, no copy back.

Invariant (checked by :meth:`check_invariants`): node (e, n) is *live* iff
``node_generation[e, n] == generation[e]``; ``live[e]`` counts env e's live search nodes; a live
node's table names only env e's root rows and rows of live nodes of env e; a new root for env e
starts a new generation — an O(1) reset that retires the previous search's nodes, so nothing is
ever evicted inside a search and nothing leaks across searches. Host-side bookkeeping
(generations, lengths, tables) is numpy: no device→host synchronisation per simulation.
"""

from __future__ import annotations

import numpy as np
import torch

from zerokv.cache.stats import CacheStats
from zerokv.checks import check_positive_int

NO_TOKEN = -1  # table entry of a padding slot
ROOT_NODE = 0  # node id of every tree's root
NO_GENERATION = -1


class PagedArena:
    def __init__(
        self, env_num: int, num_simulations: int, window: int, num_layers: int, num_heads: int,
        head_dim: int, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    ) -> None:
        for name, value in (("env_num", env_num), ("num_simulations", num_simulations), ("window", window)):
            check_positive_int(name, value, owner="PagedArena")
        self.env_num, self.num_simulations, self.window = env_num, num_simulations, window
        self.root_rows = env_num * window
        rows = self.root_rows + 2 * env_num * num_simulations
        self.rows = rows
        self.kv = torch.zeros(num_layers, 2, num_heads, rows, head_dim, device=device, dtype=dtype)
        nodes = num_simulations + 1
        # Tables live on the host: bookkeeping is numpy (µs per op), and only the gather index of a
        # batch travels to the device — a host→device copy, never a device→host synchronisation.
        self.table = np.full((env_num, nodes, window), NO_TOKEN, np.int64)
        self.last_position = np.full((env_num, nodes), -1, np.int64)
        self.generation = np.zeros(env_num, np.int64)
        self.node_generation = np.full((env_num, nodes), NO_GENERATION, np.int64)
        self.length = np.zeros((env_num, nodes), np.int64)  # real tokens in each node's table row
        self.live = np.zeros(env_num, np.int64)  # live search nodes (children) per env
        self.root_keys: list = [None] * env_num
        self.stats = CacheStats()
        self.keys_values_wm_list: list = []  # the seeds' names: the pasts of the current batch
        self.keys_values_wm_size_list: list[int] = []

    # ------------------------------------------------------------------ addressing
    def check_env(self, env_id: int) -> None:
        if not 0 <= env_id < self.env_num:
            raise ValueError(f"env_id {env_id} outside [0, {self.env_num})")

    def check_node(self, node: int) -> None:
        if not 0 < node <= self.num_simulations:
            raise ValueError(
                f"node id {node} outside [1, {self.num_simulations}]: the arena holds num_simulations "
                f"={self.num_simulations} nodes per env and search"
            )

    def root_row_range(self, env_id: int) -> range:
        return range(env_id * self.window, (env_id + 1) * self.window)

    def node_row(self, env_id: int, node: int) -> int:
        """First of the two rows of node ``node`` (≥ 1) of env ``env_id``."""
        return self.root_rows + 2 * (env_id * self.num_simulations + node - 1)

    def is_live(self, env_id: int, node: int) -> bool:
        return self.node_generation[env_id, node] == self.generation[env_id]

    # ------------------------------------------------------------------- lifecycle
    def start_root(self, env_id: int, key, length: int) -> None:
        """A new root for ``env_id``: a new generation (the previous search's nodes retire)."""
        self.generation[env_id] += 1
        self.node_generation[env_id, ROOT_NODE] = self.generation[env_id]
        self.length[env_id, ROOT_NODE] = length
        self.live[env_id] = 0
        self.root_keys[env_id] = key

    def add_node(self, env_id: int, node: int, length: int) -> None:
        if not self.is_live(env_id, node):
            self.live[env_id] += 1
        self.node_generation[env_id, node] = self.generation[env_id]
        self.length[env_id, node] = length

    def add_nodes(self, env_ids: np.ndarray, nodes: np.ndarray, lengths: np.ndarray) -> None:
        """Vectorised :meth:`add_node` for one batch (one node per env)."""
        fresh = self.node_generation[env_ids, nodes] != self.generation[env_ids]
        np.add.at(self.live, env_ids[fresh], 1)
        self.node_generation[env_ids, nodes] = self.generation[env_ids]
        self.length[env_ids, nodes] = lengths

    def clear(self) -> None:
        """Retire every node and root (O(env_num))."""
        self.generation += 1
        self.live[:] = 0
        self.root_keys = [None] * self.env_num
        self.keys_values_wm_list.clear()
        self.keys_values_wm_size_list.clear()

    # ------------------------------------------------------------ stats protocol
    def __len__(self) -> int:
        roots = sum(self.is_live(e, ROOT_NODE) for e in range(self.env_num))
        return int(self.live.sum()) + roots

    def totals(self) -> CacheStats:
        return CacheStats(self.stats.hits, self.stats.misses, 0, len(self))

    def reset_stats(self) -> None:
        self.stats.reset()

    def get_stats_summary(self) -> dict:
        s = self.totals()
        return {"stats_enabled": True, "arena": str(s), "capacity_nodes": self.env_num * self.num_simulations}

    def clear_all(self) -> None:
        self.clear()

    @property
    def nbytes(self) -> int:
        """Bytes allocated by the arena (keys, values and tables)."""
        kv = self.kv.numel() * self.kv.element_size()
        return kv + self.table.nbytes + self.last_position.nbytes

    @property
    def node_bytes(self) -> int:
        """Bytes one search node stores: the keys and values of its two tokens, every layer."""
        return 2 * (self.kv.numel() // self.rows) * self.kv.element_size()

    def check_invariants(self) -> None:
        table = self.table
        for e in range(self.env_num):
            live_nodes = [n for n in range(1, self.num_simulations + 1) if self.is_live(e, n)]
            assert self.live[e] == len(live_nodes), (e, self.live[e], live_nodes)
            allowed = set(self.root_row_range(e))
            for n in live_nodes:
                allowed |= {self.node_row(e, n), self.node_row(e, n) + 1}
            for n in ([ROOT_NODE] if self.is_live(e, ROOT_NODE) else []) + live_nodes:
                rows = table[e, n]
                real = rows[rows != NO_TOKEN]
                assert len(real) == self.length[e, n], (e, n, rows, self.length[e, n])
                assert set(real.tolist()) <= allowed, (e, n, rows)
                assert (rows[: self.window - len(real)] == NO_TOKEN).all(), (e, n, rows)
