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
node's table names only env e's root rows and rows of live nodes of env e, and holds
``length[e, n]`` real rows; a new root for env e starts a new generation — an O(1) reset that
retires the previous search's nodes, so nothing is ever evicted inside a search and nothing leaks
across searches. Host-side bookkeeping (generations, lengths, tables) is numpy: no device→host
synchronisation per simulation.

Ownership. Nobody else writes the arena: its storage and tables change only through
:meth:`write_roots`, :meth:`write_children`, :meth:`write_fallbacks`, :meth:`import_roots` and
:meth:`clear`, and it is read through :meth:`gather`, :meth:`live_mask`, :meth:`has_root`,
:meth:`lengths` and :meth:`export_roots`. Every storage access goes through :meth:`_put`
(writes) and :meth:`_take` (the gather), over a :class:`~zerokv.cache.storage.KVStorage`: a
storage dtype other than the compute dtype (bfloat16, float8_e4m3fn or int8 with per-token,
per-head scales) quantizes there and dequantizes there, and nowhere else; the gathered buffer is
always in the compute dtype. float32 storage of a float32 model (and bfloat16 of a bfloat16 one)
stores exactly what was computed.

Snapshots. :meth:`export_roots` copies the live roots' rows in their *stored* form, with their
lengths, newest positions and keys (a root's table row follows from its length, as
:meth:`write_roots` lays it out); :meth:`import_roots` writes them back through the same
bookkeeping as :meth:`write_roots`, without a second rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from zerokv.cache.protocol import RootRows
from zerokv.cache.stats import CacheStats
from zerokv.cache.storage import KV_STORAGE_DTYPES, KVStorage
from zerokv.checks import check_choice, check_positive_int

__all__ = ["NO_TOKEN", "ROOT_NODE", "Gathered", "PagedArena", "RootRows"]

NO_TOKEN = -1  # table entry of a padding slot
ROOT_NODE = 0  # node id of every tree's root
NO_GENERATION = -1  # node_generation of a node never written
KEPT_NEW_TOKENS = 2
"""Gather buffers (and dequantization staging) are kept for reuse only for batches of at most this
many new tokens — the shapes a search repeats every call. A history pass's (one per reanalysis
chunk, up to 2·root_history_steps − 1 new tokens) is allocated for its call and freed after: at 2,048
roots of the atari config it would hold ~0.5 GB in float32."""


@dataclass(frozen=True, slots=True)
class Gathered:
    """One batch's pasts, gathered: B rows, W past slots each, then T slots for new tokens.

    kv:        ``(L, 2, H, B, W + T, hd)`` in the compute dtype; the T new-token slots hold
               placeholders the forward overwrites before reading them
    positions: ``(B, W + T)`` int64 (device): absolute position of each past slot (a path suffix)
    valid:     ``(B, W + T)`` bool (device): True where a past slot holds a real token
    last:      ``(B,)`` int64 (host): position of each row's newest past token (-1: no past)
    lengths:   ``(B,)`` int64 (host): real past tokens per row (≤ W)
    """

    kv: torch.Tensor
    positions: torch.Tensor
    valid: torch.Tensor
    last: np.ndarray
    lengths: np.ndarray


class PagedArena:
    """Keys and values of one search's nodes for ``env_num`` envs (see the module docstring)."""

    def __init__(
        self, env_num: int, num_simulations: int, window: int, num_layers: int, num_heads: int,
        head_dim: int, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
        storage: str | None = None,
    ) -> None:
        """``dtype``: the compute dtype (what :meth:`gather` returns and writes take); ``storage``:
        a :data:`~zerokv.cache.storage.KV_STORAGE_DTYPES` name, None for the compute dtype's own."""
        for name, value in (("env_num", env_num), ("num_simulations", num_simulations), ("window", window),
                            ("num_layers", num_layers), ("num_heads", num_heads), ("head_dim", head_dim)):
            check_positive_int(name, value, owner="PagedArena")
        if storage is None:
            storage = next((n for n, d in KV_STORAGE_DTYPES.items() if d == dtype), str(dtype))
        check_choice("storage", storage, KV_STORAGE_DTYPES, owner="PagedArena")
        self.env_num, self.num_simulations, self.window = env_num, num_simulations, window
        self.root_rows = env_num * window
        self.rows = self.root_rows + 2 * env_num * num_simulations
        self.dtype = dtype
        self._storage = KVStorage((num_layers, 2, num_heads, self.rows, head_dim), storage, dtype, device)
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
        self._buffers: dict[tuple[int, int], torch.Tensor] = {}  # gather outputs, one per shape

    @property
    def kv(self) -> torch.Tensor:
        """The stored rows ``(L, 2, H, rows, hd)`` in the storage dtype, for reading (write through
        the named operations; a scaled format's scales are :attr:`scale`)."""
        return self._storage.payload

    @property
    def scale(self) -> torch.Tensor | None:
        """Per-(token, head) scales ``(L, 2, H, rows)`` of a scaled storage dtype, else None."""
        return self._storage.scale

    @property
    def storage(self) -> str:
        """The storage dtype's name (see :mod:`zerokv.cache.storage`)."""
        return self._storage.storage

    # ----------------------------------------------------------------------- reads
    def live_mask(self, envs: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        """``(B,)`` bool: node ``nodes[i]`` of env ``envs[i]`` is live (ids must be in range)."""
        return self.node_generation[envs, nodes] == self.generation[envs]

    def has_root(self, env_id: int, key) -> bool:
        """Env ``env_id``'s root is live and was stored under ``key`` (compared by equality)."""
        return self.root_keys[env_id] == key and bool(self.live_mask(np.array([env_id]), np.array([ROOT_NODE]))[0])

    def lengths(self, envs: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        """``(B,)`` real past tokens of each node; rows with ``envs < 0`` (no past) have 0."""
        return np.where(envs < 0, 0, self.length[np.maximum(envs, 0), np.maximum(nodes, 0)])

    def gather(self, envs: np.ndarray, nodes: np.ndarray, new_tokens: int) -> Gathered:
        """Every row's visible past, in one gather through the node table (``envs[i] < 0``: none).

        The buffer of a search shape (``new_tokens <= KEPT_NEW_TOKENS``) is reused across calls of
        that shape: valid until the next gather of that shape.
        """
        b, w = len(envs), self.window
        none = envs < 0
        e, n = np.maximum(envs, 0), np.maximum(nodes, 0)
        idx = np.where(none[:, None], NO_TOKEN, self.table[e, n])  # (B, W) host
        last = np.where(none, -1, self.last_position[e, n])
        positions = np.zeros((b, w + new_tokens), np.int64)
        positions[:, :w] = last[:, None] - (w - 1) + np.arange(w)  # the window is a path suffix
        valid = np.zeros((b, w + new_tokens), bool)
        valid[:, :w] = idx != NO_TOKEN
        rows = np.zeros((b, w + new_tokens), np.int64)  # new-token slots gather row 0: placeholders
        rows[:, :w] = np.maximum(idx, 0)
        buf = self._buffer(b, new_tokens)
        self._take(rows.reshape(-1), buf.flatten(3, 4), keep=new_tokens <= KEPT_NEW_TOKENS)
        dev = self._storage.payload.device
        return Gathered(buf, torch.from_numpy(positions).to(dev), torch.from_numpy(valid).to(dev), last,
                        np.where(none, 0, self.length[e, n]))

    # ---------------------------------------------------------------------- writes
    def write_roots(self, envs: np.ndarray, keys: list, window: torch.Tensor, lengths: np.ndarray,
                    last: np.ndarray) -> None:
        """New roots: env ``envs[i]``'s window is ``window[:, :, :, i]`` ``(L, 2, H, B, W, hd)``,
        its last ``lengths[i]`` slots real, the newest at position ``last[i]``; stored under ``keys[i]``.

        Each root starts a new generation of its env: the previous search's nodes retire.
        """
        self._check_envs(envs)
        self._put(self._root_rows(envs).reshape(-1), window.flatten(3, 4))
        self._set_roots(envs, keys, lengths, last)

    def write_children(self, envs: np.ndarray, children: np.ndarray, parents: np.ndarray,
                       tokens: torch.Tensor, last: np.ndarray) -> None:
        """Child ``children[i]`` of env ``envs[i]``, expanded from node ``parents[i]`` of that env:
        its two tokens ``tokens[:, :, :, i]`` ``(L, 2, H, B, 2, hd)``, the newest at ``last[i]``."""
        self._check_envs(envs)
        self._check_nodes(children, low=1)
        self._check_nodes(parents, low=0)
        first = self.root_rows + 2 * (envs * self.num_simulations + children - 1)
        rows = np.stack([first, first + 1], 1)  # (B, 2): each child's action, then latent token
        self._put(rows.reshape(-1), tokens.flatten(3, 4))
        visible = np.concatenate([self.table[envs, parents], rows], 1)[:, -self.window:]
        lengths = np.minimum(self.window, self.length[envs, parents] + 2)
        self.table[envs, children] = visible
        self.last_position[envs, children] = last
        self._add_nodes(envs, children, lengths)

    def write_fallbacks(self, envs: np.ndarray, nodes: np.ndarray, kv: torch.Tensor) -> None:
        """Context-free one-token pasts for nodes whose own were lost: node ``nodes[i]`` of env
        ``envs[i]`` gets the keys/values ``kv[:, :, :, i]`` ``(L, 2, H, B, hd)`` at position 0, in
        its own storage (a root: its window's newest row; a node: its first row)."""
        self._check_envs(envs)
        self._check_nodes(nodes, low=0)
        root = nodes == ROOT_NODE
        rows = np.where(root, envs * self.window + self.window - 1,
                        self.root_rows + 2 * (envs * self.num_simulations + nodes - 1))
        self._put(rows, kv)
        self.table[envs, nodes] = NO_TOKEN
        self.table[envs, nodes, -1] = rows
        self.last_position[envs, nodes] = 0
        for env in envs[root].tolist():
            self._start_root(env, self.root_keys[env], 1)
        self._add_nodes(envs[~root], nodes[~root], np.ones(int((~root).sum()), np.int64))

    def clear(self) -> None:
        """Retire every node and root (O(env_num))."""
        self.generation += 1
        self.live[:] = 0
        self.root_keys = [None] * self.env_num

    # ------------------------------------------------------------------- snapshots
    def export_roots(self, envs: np.ndarray) -> RootRows:
        """Copies of the live roots of ``envs`` (their windows' rows in the stored form)."""
        envs = np.asarray(envs, np.int64).reshape(-1)
        self._check_envs(envs)
        dead = envs[~self.live_mask(envs, np.full_like(envs, ROOT_NODE))]
        if dead.size:
            raise ValueError(f"PagedArena.export_roots: env {int(dead[0])} has no live root")
        return RootRows(envs, [self.root_keys[e] for e in envs.tolist()], self.length[envs, ROOT_NODE].copy(),
                        self.last_position[envs, ROOT_NODE].copy(),
                        self._storage.export_rows(self._root_rows(envs).reshape(-1)))

    def import_roots(self, roots: RootRows) -> None:
        """Write exported roots back, bit for bit, as :meth:`write_roots` would store them (each
        starts a new generation of its env); the other envs are left as they are."""
        envs = np.asarray(roots.envs, np.int64)
        self._check_envs(envs)
        lengths = np.asarray(roots.lengths, np.int64)
        if len(roots.keys) != len(envs) or lengths.shape != envs.shape or np.shape(roots.last) != envs.shape:
            raise ValueError(f"PagedArena.import_roots: {len(envs)} envs, {len(roots.keys)} keys, "
                             f"{lengths.shape[0]} lengths, {np.shape(roots.last)[0]} positions")
        if envs.size and (lengths.min() < 1 or lengths.max() > self.window):
            raise ValueError(f"PagedArena.import_roots: window lengths {lengths.tolist()} outside [1, {self.window}]")
        self._storage.import_rows(self._root_rows(envs).reshape(-1), roots.stored)
        self._set_roots(envs, roots.keys, lengths, np.asarray(roots.last, np.int64))

    def _root_rows(self, envs: np.ndarray) -> np.ndarray:
        """``(n, W)``: the rows of each env's root window, oldest first."""
        return envs[:, None] * self.window + np.arange(self.window)

    def _set_roots(self, envs: np.ndarray, keys: list, lengths: np.ndarray, last: np.ndarray) -> None:
        """Tables of new roots whose windows are stored: the last ``lengths[i]`` of env ``envs[i]``'s rows."""
        w = self.window
        self.table[envs, ROOT_NODE] = np.where(np.arange(w) >= w - lengths[:, None], self._root_rows(envs), NO_TOKEN)
        self.last_position[envs, ROOT_NODE] = last
        for env, key, length in zip(envs.tolist(), keys, lengths.tolist(), strict=True):
            self._start_root(env, key, length)

    # ------------------------------------------------------- storage: the only accesses
    def _put(self, rows: np.ndarray, values: torch.Tensor) -> None:
        """Store ``values (L, 2, H, len(rows), hd)`` at token ``rows`` (compute dtype → storage: the
        only quantization)."""
        index = torch.from_numpy(np.ascontiguousarray(rows, np.int64)).to(self._storage.payload.device)
        self._storage.put(index, values.to(self.dtype))

    def _take(self, rows: np.ndarray, out: torch.Tensor, *, keep: bool) -> None:
        """Fill ``out (L, 2, H, len(rows), hd)`` with token ``rows`` (storage → compute dtype: the
        only dequantization); ``keep``: keep the staging buffer for the next call of this size."""
        self._storage.take(torch.from_numpy(rows).to(self._storage.payload.device), out, keep=keep)

    def _buffer(self, b: int, new_tokens: int) -> torch.Tensor:
        key = (b, new_tokens)
        if key in self._buffers:
            return self._buffers[key]
        layers, _, heads, _, hd = self._storage.payload.shape
        shape = (layers, 2, heads, b, self.window + new_tokens, hd)
        buf = torch.zeros(shape, device=self._storage.payload.device, dtype=self.dtype)
        if new_tokens <= KEPT_NEW_TOKENS:
            self._buffers[key] = buf
        return buf

    @property
    def buffer_nbytes(self) -> int:
        """Bytes of the gather buffers and dequantization staging kept for reuse (not in :attr:`nbytes`)."""
        return sum(b.numel() * b.element_size() for b in self._buffers.values()) + self._storage.staging_nbytes

    # -------------------------------------------------------------------- lifecycle
    def _start_root(self, env_id: int, key, length: int) -> None:
        """A new root for ``env_id``: a new generation (the previous search's nodes retire)."""
        self.generation[env_id] += 1
        self.node_generation[env_id, ROOT_NODE] = self.generation[env_id]
        self.length[env_id, ROOT_NODE] = length
        self.live[env_id] = 0
        self.root_keys[env_id] = key

    def _add_nodes(self, envs: np.ndarray, nodes: np.ndarray, lengths: np.ndarray) -> None:
        fresh = self.node_generation[envs, nodes] != self.generation[envs]
        np.add.at(self.live, envs[fresh], 1)
        self.node_generation[envs, nodes] = self.generation[envs]
        self.length[envs, nodes] = lengths

    def _check_envs(self, envs: np.ndarray) -> None:
        if envs.size and (envs.min() < 0 or envs.max() >= self.env_num):
            bad = int(envs[(envs < 0) | (envs >= self.env_num)][0])
            raise ValueError(f"PagedArena: env id {bad} outside [0, {self.env_num})")

    def _check_nodes(self, nodes: np.ndarray, *, low: int) -> None:
        if nodes.size and (nodes.min() < low or nodes.max() > self.num_simulations):
            bad = int(nodes[(nodes < low) | (nodes > self.num_simulations)][0])
            raise ValueError(f"PagedArena: node id {bad} outside [{low}, {self.num_simulations}]: the arena "
                             f"holds num_simulations={self.num_simulations} nodes per env and search")

    # -------------------------------------------------------------- stats protocol
    def __len__(self) -> int:
        """Live entries: every live root and search node."""
        return int(self.live.sum()) + self._live_roots()

    def _live_roots(self) -> int:
        return int((self.node_generation[:, ROOT_NODE] == self.generation).sum())

    def totals(self) -> CacheStats:
        """Live entries only: lookups are counted once, by the world model's cache layer."""
        return CacheStats(size=len(self))

    def reset_stats(self) -> None:
        """Nothing to reset: the arena counts no lookups (see :meth:`totals`)."""

    def get_stats_summary(self) -> dict:
        return {"stats_enabled": True, "live_roots": self._live_roots(), "live_nodes": int(self.live.sum()),
                "capacity_nodes": self.env_num * self.num_simulations}

    @property
    def nbytes(self) -> int:
        """Bytes allocated by the arena (keys, values, their scales and the tables)."""
        return self._storage.nbytes + self.table.nbytes + self.last_position.nbytes

    @property
    def node_bytes(self) -> int:
        """Bytes one search node stores: the keys and values of its two tokens, every layer (with
        their scales in a scaled storage dtype)."""
        return 2 * self._storage.token_bytes

    def check_invariants(self) -> None:
        """Assert the invariant of the module docstring (tests call it after every operation)."""
        for e in range(self.env_num):
            live = [n for n in range(1, self.num_simulations + 1)
                    if self.node_generation[e, n] == self.generation[e]]
            assert self.live[e] == len(live), (e, self.live[e], live)
            allowed = set(range(e * self.window, (e + 1) * self.window))
            for n in live:
                first = self.root_rows + 2 * (e * self.num_simulations + n - 1)
                allowed |= {first, first + 1}
            root_live = self.node_generation[e, ROOT_NODE] == self.generation[e]
            for n in ([ROOT_NODE] if root_live else []) + live:
                rows = self.table[e, n]
                real = rows[rows != NO_TOKEN]
                assert len(real) == self.length[e, n], (e, n, rows, self.length[e, n])
                assert set(real.tolist()) <= allowed, (e, n, rows)
                assert (rows[: self.window - len(real)] == NO_TOKEN).all(), (e, n, rows)
