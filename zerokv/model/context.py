"""How a node gets its past: the context backends, chosen once when the world model is built.

Every backend offers the same four steps, named after the seeds' world-model methods:

``lookup``    find each row's past by key (``retrieve_or_generate_kvcache``'s lookup half)
``generate``  a context-free one-token past from a latent, for a miss (its generate half)
``assemble``  batch the pasts for one transformer forward (``trim_and_pad_kv_cache``)
``store``     keep each row's new past under its key (``update_cache_context``)

* :class:`RecomputeBackend` ("none", the reference) keeps each node's *input tokens* (its last
  ``receptive_field`` tokens) and recomputes the transformer over them at every expansion.
* :class:`KVStoreBackend` ("legacy", "manager") keeps each node's keys/values of its last
  ``context_length - 1`` tokens in a :class:`~zerokv.cache.KVStore` — exact because attention is a
  sliding window with rotary positions (see :class:`~zerokv.model.config.WorldModelConfig`).
* :class:`ValidatingBackend` runs a backend and the reference side by side and raises on any
  disagreement (``cache_validation_mode``).

Keys are :class:`NodeKey`: (env, search epoch, the latent's exact bytes). A lookup only hits an
entry whose key is *equal* — the hash just picks a bucket — so a colliding hash function can slow
a lookup down but never return another node's past.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from zerokv.cache import CacheStats, KeysValues, KVStore
from zerokv.model.config import WorldModelConfig
from zerokv.model.transformer import BatchContext, Transformer

KeyHash = Callable[[int, int, bytes], int]


@dataclass(slots=True)
class CacheWork:
    """What the cache costs, accumulated by the backends and the world model (bench reads it)."""

    bytes_copied: int = 0
    """Key/value (or token) bytes copied while assembling batches and storing nodes."""
    host_syncs: int = 0
    """Device→host transfers (latent keys, row sizes) made for cache bookkeeping."""
    cache_seconds: float = 0.0
    """Wall time in lookup, batch assembly, key making and storing."""
    forward_seconds: float = 0.0
    """Wall time in the transformer forward of the new tokens and their heads."""

    def reset(self) -> None:
        self.bytes_copied = self.host_syncs = 0
        self.cache_seconds = self.forward_seconds = 0.0


def default_key_hash(env_id: int, epoch: int, payload: bytes) -> int:
    return hash((env_id, epoch, payload))


@dataclass(frozen=True, slots=True, eq=False)
class NodeKey:
    """A search node's address: env, search epoch and the exact bytes of its latent state."""

    env_id: int
    epoch: int
    payload: bytes
    hash_value: int = field(repr=False)

    def __hash__(self) -> int:
        return self.hash_value

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, NodeKey)
            and self.env_id == other.env_id
            and self.epoch == other.epoch
            and self.payload == other.payload
        )


def make_keys(
    latents: torch.Tensor, env_ids: Sequence[int], epoch: int, key_hash: KeyHash, work: CacheWork
) -> list[NodeKey]:
    """One key per row of ``latents (B, E)``: one device→host copy for the whole batch."""
    work.host_syncs += 1
    rows = latents.detach().to("cpu", torch.float32).contiguous().numpy()
    keys = []
    for env_id, row in zip(env_ids, rows, strict=True):
        payload = row.tobytes()
        keys.append(NodeKey(int(env_id), epoch, payload, key_hash(int(env_id), epoch, payload)))
    return keys


class ContextBatch:
    """The WM cache of one forward: a :class:`BatchContext` and how to run new tokens on it."""

    def __init__(self, transformer: Transformer, context: BatchContext) -> None:
        self.transformer = transformer
        self.context = context

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens (B, t, E)`` → hidden states ``(B, t, E)``, appended to the context."""
        t = tokens.shape[1]
        pos = self.context.next_positions().unsqueeze(1) + torch.arange(t, device=tokens.device)
        return self.transformer(tokens, pos, self.context)


# --------------------------------------------------------------------------- reference: "none"
@dataclass(slots=True)
class TokenHistory:
    """A node's input tokens ``(n, E)`` (its last receptive_field tokens) and the first one's position."""

    tokens: torch.Tensor
    start_position: int

    @property
    def size(self) -> int:
        return self.tokens.shape[0]


class _RecomputeBatch:
    """Keeps input tokens; every forward recomputes the transformer over past + new tokens."""

    def __init__(self, transformer: Transformer, pasts: list[TokenHistory], new_capacity: int) -> None:
        cfg = transformer.cfg
        self.transformer = transformer
        self.past = max((p.size for p in pasts), default=0)
        b, slots = len(pasts), self.past + new_capacity
        device = transformer.ln_f.weight.device
        self.tokens = torch.zeros(b, slots, cfg.embed_dim, device=device)
        self.positions = torch.zeros(b, slots, dtype=torch.long, device=device)
        self.valid = torch.zeros(b, slots, dtype=torch.bool, device=device)
        self.next_pos = torch.zeros(b, dtype=torch.long, device=device)
        for i, p in enumerate(pasts):  # right-aligned, padding on the left
            lo = self.past - p.size
            self.tokens[i, lo : self.past] = p.tokens
            self.positions[i, lo : self.past] = torch.arange(p.start_position, p.start_position + p.size)
            self.valid[i, lo : self.past] = True
            self.next_pos[i] = p.start_position + p.size
        self.fill = self.past

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        s0, s1 = self.fill, self.fill + t
        self.tokens[:, s0:s1] = tokens
        self.positions[:, s0:s1] = self.next_pos.unsqueeze(1) + torch.arange(t, device=tokens.device)
        self.valid[:, s0:s1] = True
        self.next_pos += t
        self.fill = s1
        h = self.transformer(self.tokens[:, :s1], self.positions[:, :s1], valid=self.valid[:, :s1])
        return h[:, s0:s1]

    def history(self, row: int, keep: int) -> TokenHistory:
        n = min(int(self.valid[row, : self.fill].sum()), keep)
        lo = self.fill - n
        return TokenHistory(self.tokens[row, lo : self.fill].clone(), int(self.positions[row, lo]))


class RecomputeBackend:
    """The "none" backend: no KV cache; every node is recomputed from its input tokens."""

    name = "none"

    def __init__(self, cfg: WorldModelConfig, transformer: Transformer, work: CacheWork) -> None:
        self.cfg, self.transformer, self.work = cfg, transformer, work
        self.store = TokenStore()

    def lookup(self, env_ids: Sequence[int], keys: Sequence[NodeKey | None]) -> list[TokenHistory | None]:
        return [None if k is None else self.store.get(k) for k in keys]

    def generate(self, latents: torch.Tensor) -> list[TokenHistory]:
        return [TokenHistory(row.unsqueeze(0).clone(), 0) for row in latents]

    def empty(self) -> TokenHistory:
        return TokenHistory(torch.zeros(0, self.cfg.embed_dim, device=self.cfg.device), 0)

    def assemble(self, pasts: list[TokenHistory], new_tokens: int) -> _RecomputeBatch:
        self.work.bytes_copied += sum(p.tokens.numel() * p.tokens.element_size() for p in pasts)
        return _RecomputeBatch(self.transformer, pasts, new_tokens)

    def store_batch(self, batch: _RecomputeBatch, env_ids: Sequence[int], keys: Sequence[NodeKey], root: bool) -> None:
        self.work.host_syncs += 1  # history() reads row sizes
        for row, key in enumerate(keys):
            history = batch.history(row, self.cfg.receptive_field)
            self.work.bytes_copied += history.tokens.numel() * history.tokens.element_size()
            self.store.set(key, history)

    def clear(self) -> None:
        self.store.clear()


class TokenStore:
    """The reference's storage: a plain dict key → :class:`TokenHistory`, never evicting."""

    def __init__(self) -> None:
        self._entries: dict[NodeKey, TokenHistory] = {}
        self.stats = CacheStats()
        self.keys_values_wm_list: list = []
        self.keys_values_wm_size_list: list[int] = []

    def get(self, key: NodeKey) -> TokenHistory | None:
        found = self._entries.get(key)
        if found is None:
            self.stats.record_miss()
        else:
            self.stats.record_hit()
        return found

    def set(self, key: NodeKey, history: TokenHistory) -> None:
        self._entries[key] = history
        self.stats.size = len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.stats.size = 0
        self.keys_values_wm_list.clear()
        self.keys_values_wm_size_list.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def totals(self) -> CacheStats:
        return CacheStats(self.stats.hits, self.stats.misses, self.stats.evictions, self.stats.size)

    def reset_stats(self) -> None:
        self.stats.reset()

    def get_stats_summary(self) -> dict:
        return {"stats_enabled": True, "tokens": str(self.stats)}

    @property
    def nbytes(self) -> int:
        return sum(h.tokens.numel() * h.tokens.element_size() for h in self._entries.values())


# ----------------------------------------------------------------- cached: "legacy", "manager"
class KVStoreBackend:
    """Keeps each node's keys/values of its last ``context_length - 1`` tokens in a KV store.

    Batch assembly and storage copy per row, as the seeds do (clone from pool → pad into the
    batch → copy into a scratch cache → copy into a pool slot); the paged backend removes them.
    """

    def __init__(
        self, cfg: WorldModelConfig, transformer: Transformer, store: KVStore, name: str, work: CacheWork
    ) -> None:
        self.cfg, self.transformer, self.store, self.name, self.work = cfg, transformer, store, name, work
        # Bytes of one token's keys and values over all layers.
        self.token_bytes = 2 * cfg.num_layers * cfg.embed_dim * 4
        self.window = cfg.context_length - 1  # past tokens a new token can see
        # The seeds' `keys_values_wm_single_env`: the scratch cache a row is written into before
        # the store copies it into a slot.
        self.keys_values_wm_single_env = self._new_kv()

    def _new_kv(self) -> KeysValues:
        c = self.cfg
        return KeysValues(1, c.num_heads, c.max_tokens, c.embed_dim, c.num_layers, c.device)

    def lookup(self, env_ids: Sequence[int], keys: Sequence[NodeKey | None]) -> list[KeysValues | None]:
        return [None if k is None else self.store.hierarchical_get(e, k) for e, k in zip(env_ids, keys, strict=True)]

    def generate(self, latents: torch.Tensor) -> list[KeysValues]:
        """Context-free one-token caches: each latent run alone at position 0 (the seeds' miss path)."""
        ctx = BatchContext.empty(self.cfg, latents.shape[0], 1, latents.device)
        ContextBatch(self.transformer, ctx).forward(latents.unsqueeze(1))
        out = []
        for row in range(latents.shape[0]):
            kv = self._new_kv()
            for layer, (k, v) in enumerate(zip(ctx.k, ctx.v, strict=True)):
                kv[layer].update(k[row : row + 1], v[row : row + 1])
            out.append(kv)
        return out

    def empty(self) -> KeysValues:
        return self._new_kv()

    def assemble(self, pasts: list[KeysValues], new_tokens: int) -> ContextBatch:
        """``trim_and_pad_kv_cache``: right-align each row's past in a fresh batch context."""
        p = max((kv.size for kv in pasts), default=0)
        self.work.bytes_copied += self.token_bytes * sum(kv.size for kv in pasts)
        ctx = BatchContext.empty(self.cfg, len(pasts), p + new_tokens, self.cfg.device)
        for row, kv in enumerate(pasts):
            n = kv.size
            lo = p - n
            for layer in range(self.cfg.num_layers):
                k, v = kv[layer].get()  # (1, H, n, hd)
                ctx.k[layer][row, :, lo:p] = k[0]
                ctx.v[layer][row, :, lo:p] = v[0]
            ctx.positions[row, lo:p] = torch.arange(kv.start_position, kv.start_position + n)
            ctx.valid[row, lo:p] = True
        ctx.fill = p
        return ContextBatch(self.transformer, ctx)

    def store_batch(self, batch: ContextBatch, env_ids: Sequence[int], keys: Sequence[NodeKey], root: bool) -> None:
        """``update_cache_context``: keep each row's last ``window`` tokens under its key."""
        ctx, scratch = batch.context, self.keys_values_wm_single_env
        real = ctx.valid[:, : ctx.fill].sum(dim=1).tolist()
        self.work.host_syncs += 1
        for row, (env_id, key) in enumerate(zip(env_ids, keys, strict=True)):
            n = min(real[row], self.window)
            lo = ctx.fill - n
            scratch.reset()
            for layer in range(self.cfg.num_layers):
                scratch[layer].update(ctx.k[layer][row : row + 1, :, lo : ctx.fill], ctx.v[layer][row : row + 1, :, lo : ctx.fill])
            scratch.start_position = int(ctx.positions[row, lo])
            self.work.bytes_copied += 2 * self.token_bytes * n  # into the scratch, then into a slot
            if root:
                self.store.set_init_cache(env_id, key, scratch)
            else:
                self.store.set_recur_cache(key, scratch)

    def clear(self) -> None:
        self.store.clear_all()


# ------------------------------------------------------------------------- validation mode
class CacheValidationError(RuntimeError):
    """A cached forward disagreed with the recompute reference (``cache_validation_mode``)."""


class _ValidatingBatch:
    def __init__(self, primary, reference, atol: float) -> None:
        self.primary, self.reference, self.atol = primary, reference, atol

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.primary.forward(tokens)
        ref = self.reference.forward(tokens)
        diff = (h - ref).abs().max().item() if h.numel() else 0.0
        if not diff <= self.atol:
            raise CacheValidationError(
                f"cache disagrees with recomputation: max |diff| = {diff:.3g} > atol {self.atol:g}"
            )
        return h


class ValidatingBackend:
    """Runs ``primary`` and the "none" reference side by side; any disagreement raises."""

    def __init__(self, primary: KVStoreBackend, reference: RecomputeBackend, atol: float) -> None:
        self.primary, self.reference, self.atol = primary, reference, atol
        self.name = f"{primary.name}+validation"
        self.store = primary.store

    def lookup(self, env_ids, keys):
        pairs = []
        for p, r in zip(self.primary.lookup(env_ids, keys), self.reference.lookup(env_ids, keys), strict=True):
            if (p is None) != (r is None):
                found = "the cache" if r is None else "the reference"
                raise CacheValidationError(f"only {found} found a node's past (an eviction or a key mismatch)")
            pairs.append(None if p is None else (p, r))
        return pairs

    def generate(self, latents):
        return list(zip(self.primary.generate(latents), self.reference.generate(latents), strict=True))

    def empty(self):
        return (self.primary.empty(), self.reference.empty())

    def assemble(self, pasts, new_tokens: int) -> _ValidatingBatch:
        return _ValidatingBatch(
            self.primary.assemble([p for p, _ in pasts], new_tokens),
            self.reference.assemble([r for _, r in pasts], new_tokens),
            self.atol,
        )

    def store_batch(self, batch: _ValidatingBatch, env_ids, keys, root: bool) -> None:
        self.primary.store_batch(batch.primary, env_ids, keys, root)
        self.reference.store_batch(batch.reference, env_ids, keys, root)

    def clear(self) -> None:
        self.primary.clear()
        self.reference.clear()
