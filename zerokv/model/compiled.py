"""The recurrent step of search, eager or compiled with ``torch.compile`` (inductor).

One recurrent call is: action token → transformer over each parent's cached window → reward and
latent heads → the predicted latent's token → value and policy heads. :class:`RecurrentStep` runs
it on the batch the cache assembled. Eager, it runs the batch's own ``forward`` (any backend).
Compiled (``WorldModelConfig.compile``), a "paged" batch — the arena's one gather into a
``(L, 2, H, B, W + 2, hd)`` buffer, a static shape for a given B — runs as one inductor graph:

* **Shape buckets.** B is padded up to a power of two (empty rows: no past, invisible to the real
  rows) so a search of any width compiles a handful of graphs, not one per batch size;
  ``compile_report()`` counts the graphs, the compile seconds and dynamo's recompiles.
* **Functional.** The graph reads the gathered past and returns the two new tokens' keys and
  values ``(L, 2, H, B, 2, hd)``; they are written into the batch afterwards, so the arena's
  buffer is never an input mutated in place (what CUDA graphs, "reduce-overhead", would need).
* **Weights stay inputs (no freezing).** Large matmuls stay oneDNN with their prepacked weights
  (:func:`zerokv.model.linear.onednn_linear_op`, repacked whenever a weight changes), the rest
  (layer norms, rotary phases, attention over a few keys, GELU, SimNorm, softmax) is fused by
  inductor. A weight update therefore needs no recompilation and invalidates exactly the packed
  copies the eager path would (docs/compile.md gives the measurements behind this choice).

Other backends (their batches are not a static buffer) run eagerly under ``compile`` too. Where
compilation fails (no C++ compiler, an unsupported platform) the step warns once and stays eager.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from zerokv.model.backends.paged import PagedContext
from zerokv.model.transformer import TokenRunner, Transformer, attention, window_mask

__all__ = ["CompileReport", "RecurrentHeads", "RecurrentStep", "bucket"]


class RecurrentHeads(NamedTuple):
    """One recurrent call's network outputs for B rows (the model's dtype)."""

    next_latent: torch.Tensor  # (B, E)
    value_logits: torch.Tensor  # (B, support_bins)
    policy_logits: torch.Tensor  # (B, A)
    reward_logits: torch.Tensor  # (B, support_bins)


@dataclass
class CompileReport:
    """What compiling the recurrent step cost: graphs (one per shape bucket), the wall seconds of the
    calls that compiled them, dynamo's recompiles since the step was made, and the calls per path."""

    graphs: dict[int, float] = field(default_factory=dict)  # bucket (rows) → compile seconds
    compiled_calls: int = 0
    eager_calls: int = 0
    recompiles: int = 0
    failed: str | None = None  # why compilation was given up (then every call is eager)

    @property
    def compile_seconds(self) -> float:
        return sum(self.graphs.values())


def bucket(rows: int) -> int:
    """The padded batch size of ``rows`` rows: the next power of two (1, 2, 4, 8, …)."""
    return 1 << max(0, rows - 1).bit_length()


class _Heads(nn.Module):
    """The modules one recurrent call uses (a view of the world model's, not a copy)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.transformer: Transformer = model.transformer
        self.action_embedding = model.action_embedding
        self.head_latent, self.head_reward = model.head_latent, model.head_reward
        self.head_value, self.head_policy = model.head_value, model.head_policy

    def run(self, batch, actions: torch.Tensor) -> RecurrentHeads:
        """The two tokens of one expansion on ``batch`` (a context batch of B rows), ``actions (B,)``."""
        h_act = batch.forward(self.action_embedding(actions).unsqueeze(1))[:, 0]  # (B, E)
        next_latent = self.head_latent(h_act)
        h_obs = batch.forward(next_latent.unsqueeze(1))[:, 0]
        return RecurrentHeads(next_latent, self.head_value(h_obs), self.head_policy(h_obs), self.head_reward(h_act))


class _GraphContext(TokenRunner):
    """A paged batch inside the compiled graph: the gathered past ``(L, 2, H, B, W, hd)`` read in
    place, the new tokens' keys/values kept in lists (concatenated per layer for attention)."""

    def __init__(self, transformer: Transformer, past: torch.Tensor, positions: torch.Tensor,
                 valid: torch.Tensor) -> None:
        self.transformer, self.past = transformer, past
        self.positions, self.valid = positions, valid  # (B, W)
        layers = past.shape[0]
        self.new_k: list[list[torch.Tensor]] = [[] for _ in range(layers)]  # per layer: (H, B, t, hd)
        self.new_v: list[list[torch.Tensor]] = [[] for _ in range(layers)]
        self.new_positions: list[torch.Tensor] = []  # (B, t) each
        self.fill = 0
        self._mask = None

    def next_positions(self) -> torch.Tensor:
        return self.positions[:, -1] + 1 + self.fill

    def begin(self, positions: torch.Tensor) -> None:
        self.new_positions.append(positions)
        b, t = positions.shape
        k_pos = torch.cat([self.positions, *self.new_positions], 1)  # (B, W + fill + t)
        k_valid = torch.cat([self.valid, self.valid.new_ones(b, self.fill + t)], 1)
        window = self.transformer.cfg.context_length
        self._mask = window_mask(positions, k_pos, k_valid, window).transpose(0, 1)  # (1, B, t, S)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.new_k[layer].append(k.transpose(0, 1))  # (B, H, t, hd) → (H, B, t, hd)
        self.new_v[layer].append(v.transpose(0, 1))
        keys = torch.cat([self.past[layer, 0], *self.new_k[layer]], 2)  # (H, B, S, hd)
        values = torch.cat([self.past[layer, 1], *self.new_v[layer]], 2)
        return attention(q.transpose(0, 1), keys, values, self._mask).transpose(0, 1)

    def end(self, t: int) -> None:
        self.fill += t
        self._mask = None

    def new_kv(self) -> torch.Tensor:
        """``(L, 2, H, B, fill, hd)``: the keys and values of the tokens run."""
        return torch.stack([torch.stack([torch.cat(k, 2), torch.cat(v, 2)]) for k, v in
                            zip(self.new_k, self.new_v, strict=True)])


class RecurrentStep:
    """The world model's recurrent call on an assembled batch: eager, or compiled for paged batches."""

    def __init__(self, model: nn.Module, *, compile: bool) -> None:
        self.heads = _Heads(model)
        self.compile = compile
        self.report = CompileReport()
        self._graph = torch.compile(self._paged_graph, dynamic=False, fullgraph=True) if compile else None
        # Dynamo is imported only for a compiled step: the import alone costs about a second.
        self._recompiles0 = _recompiles() if compile else 0

    def __call__(self, batch, actions: torch.Tensor) -> RecurrentHeads:
        """``batch``: the backend's context batch of B rows (2 free token slots); ``actions (B,)`` int64."""
        if self._graph is None or not isinstance(batch, PagedContext):
            self.report.eager_calls += 1
            return self.heads.run(batch, actions)
        return self._compiled(batch, actions)

    def _compiled(self, batch: PagedContext, actions: torch.Tensor) -> RecurrentHeads:
        b, w = actions.shape[0], batch.past_slots
        rows = bucket(b)
        past, positions, valid = batch.kv[:, :, :, :, :w], batch.positions[:, :w], batch.valid[:, :w]
        if rows > b:  # empty rows: no past (all invalid), action 0; sliced off below
            pad = rows - b
            past = torch.cat([past, past.new_zeros(*past.shape[:3], pad, *past.shape[4:])], 3)
            positions = torch.cat([positions, positions.new_zeros(pad, w)])
            valid = torch.cat([valid, valid.new_zeros(pad, w)])
            actions = torch.cat([actions, actions.new_zeros(pad)])
        first = rows not in self.report.graphs
        t0 = time.perf_counter()
        try:
            out, new_kv = self._graph(actions, past, positions, valid)
        except Exception as err:  # noqa: BLE001 - any compiler failure: warn once, stay eager
            if not first:
                raise
            self._give_up(err)
            return self(batch, actions[:b])
        if first:
            self.report.graphs[rows] = time.perf_counter() - t0
        self.report.compiled_calls += 1
        self.report.recompiles = _recompiles() - self._recompiles0
        batch.kv[:, :, :, :, w : w + 2] = new_kv[:, :, :, :b]
        batch.positions[:, w : w + 2] = batch.positions[:, w - 1 : w] + torch.arange(1, 3, device=actions.device)
        batch.valid[:, w : w + 2] = True
        batch.fill = 2
        return RecurrentHeads(*(x[:b] for x in out))

    def _paged_graph(self, actions: torch.Tensor, past: torch.Tensor, positions: torch.Tensor,
                     valid: torch.Tensor) -> tuple[RecurrentHeads, torch.Tensor]:
        """What is compiled: ``actions (B,)``, the gathered ``past (L, 2, H, B, W, hd)``, its
        ``positions``/``valid (B, W)`` → the heads and the new tokens' keys/values ``(L, 2, H, B, 2, hd)``."""
        ctx = _GraphContext(self.heads.transformer, past, positions, valid)
        out = self.heads.run(ctx, actions)
        return out, ctx.new_kv()

    def _give_up(self, err: Exception) -> None:
        self.report.failed = f"{type(err).__name__}: {err}".splitlines()[0]
        self._graph = None
        warnings.warn(f"torch.compile of the recurrent step failed ({self.report.failed}); "
                      "searching with the eager step instead", RuntimeWarning, stacklevel=3)


def _recompiles() -> int:
    """Dynamo's count of frames compiled again after a guard failed (all functions, this process)."""
    from torch._dynamo.utils import counters

    return sum(counters["recompiles"].values())
