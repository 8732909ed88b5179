"""The "none" backend — the reference: no KV cache, every node recomputed from its input tokens.

It keeps each node's last ``receptive_field`` input tokens (enough to determine its outputs exactly
through the sliding windows of every layer) and reruns the transformer over them at each expansion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from zerokv.cache import CacheStats
from zerokv.model.backends.keys import ContentKeys
from zerokv.model.config import WorldModelConfig
from zerokv.model.context import CacheWork, NodeKey
from zerokv.model.transformer import Transformer


@dataclass(slots=True)
class TokenHistory:
    """A node's input tokens ``(n, E)`` (its last receptive_field tokens) and the first one's position."""

    tokens: torch.Tensor
    start_position: int

    @property
    def size(self) -> int:
        return self.tokens.shape[0]


class RecomputeBatch:
    """Keeps input tokens; every forward recomputes the transformer over past + new tokens.

    tokens, positions, valid: ``(B, P + T, E)``, ``(B, P + T)``, ``(B, P + T)``: the rows' pasts
    right-aligned in the first P slots, then the new tokens.
    """

    def __init__(self, transformer: Transformer, pasts: list[TokenHistory], new_capacity: int) -> None:
        cfg = transformer.cfg
        self.transformer = transformer
        self.past = max((p.size for p in pasts), default=0)
        b, slots = len(pasts), self.past + new_capacity
        device = transformer.ln_f.weight.device
        self.tokens = torch.zeros(b, slots, cfg.embed_dim, device=device, dtype=cfg.torch_dtype)
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

    def __init__(self, cfg: WorldModelConfig, transformer: Transformer, work: CacheWork, key_hash) -> None:
        self.cfg, self.transformer, self.work = cfg, transformer, work
        self.keys = ContentKeys(key_hash, work)
        self.store = TokenStore()

    def lookup_roots(self, env_ids: Sequence[int], keys: Sequence[NodeKey | None]) -> list[TokenHistory | None]:
        return [None if k is None else self.store.get(k) for k in keys]

    def lookup_nodes(self, env_ids: Sequence[int], keys: Sequence[NodeKey]) -> list[TokenHistory | None]:
        return [self.store.get(k) for k in keys]

    def generate(self, latents: torch.Tensor, env_ids, keys) -> list[TokenHistory]:
        return [TokenHistory(row.unsqueeze(0).clone(), 0) for row in latents]

    def sizes(self, pasts) -> list[int]:
        return [p.size for p in pasts]

    def assemble(self, pasts: Sequence[TokenHistory | None], new_tokens: int) -> RecomputeBatch:
        c = self.cfg
        none = TokenHistory(torch.zeros(0, c.embed_dim, device=c.device, dtype=c.torch_dtype), 0)
        pasts = [none if p is None else p for p in pasts]
        self.work.bytes_copied += sum(p.tokens.numel() * p.tokens.element_size() for p in pasts)
        return RecomputeBatch(self.transformer, pasts, new_tokens)

    def store_roots(self, batch: RecomputeBatch, env_ids: Sequence[int], keys: Sequence[NodeKey]) -> None:
        self.store_nodes(batch, env_ids, keys)  # one dict: roots and nodes alike

    def store_nodes(self, batch: RecomputeBatch, env_ids: Sequence[int], keys: Sequence[NodeKey]) -> None:
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

    def totals(self) -> CacheStats:
        return CacheStats(self.stats.hits, self.stats.misses, self.stats.evictions, self.stats.size)

    def reset_stats(self) -> None:
        self.stats.reset()

    def get_stats_summary(self) -> dict:
        return {"stats_enabled": True, "tokens": str(self.stats)}

    @property
    def nbytes(self) -> int:
        return sum(h.tokens.numel() * h.tokens.element_size() for h in self._entries.values())


