"""The bench's one stand-in for the world model, and how two recorded searches are compared.

:class:`RecordingModel` wraps a :class:`~zerokv.WorldModel` and is handed to ``plan`` in its
place: it times every ``initial_inference`` and ``recurrent_inference`` call and, when asked,
records each call's inputs and outputs in a :class:`Trace`. A trace is what
:func:`compare_traces` compares with a reference's (the ``none`` backend's, or a float32 model
replaying the same nodes: :func:`replay`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from zerokv.model.world_model import WorldModel

__all__ = [
    "NETWORK_OUTPUTS",
    "OUTPUTS",
    "SCALAR_OUTPUTS",
    "RecordedCall",
    "RecordedRoot",
    "RecordingModel",
    "Trace",
    "TraceDiff",
    "compare_traces",
    "output_arrays",
    "replay",
]

NETWORK_OUTPUTS = ("policy_logits", "value_logits", "reward_logits", "latent_state")
"""What the network computes; ``max_abs_diff_vs_none`` is the largest |difference| over these."""
SCALAR_OUTPUTS = ("value", "reward")
"""E[support] mapped through h⁻¹: compared relatively (``max_rel_diff_scalars_vs_none``)."""
OUTPUTS = SCALAR_OUTPUTS + NETWORK_OUTPUTS
"""Every output a trace keeps (roots have no ``reward_logits``)."""


def output_arrays(out) -> dict[str, np.ndarray]:
    """The :data:`OUTPUTS` of an ``InferenceOutput`` as float32 numpy copies (absent ones left out)."""
    return {k: v.detach().cpu().numpy().copy() for k in OUTPUTS if (v := getattr(out, k, None)) is not None}


@dataclass(slots=True)
class RecordedRoot:
    """One ``initial_inference`` call: observations ``[B, *obs_shape]`` and outputs (see :func:`output_arrays`)."""

    obs: np.ndarray
    out: dict[str, np.ndarray]


@dataclass(slots=True)
class RecordedCall:
    """One ``recurrent_inference`` call of R rows: its inputs and the model's outputs."""

    env_ids: list[int]  # [R] env of each row
    action: np.ndarray  # [R]
    parent_ids: np.ndarray | None  # [R] node ids in the search's numbering (root = 0)
    child_ids: np.ndarray | None  # [R]
    out: dict[str, np.ndarray]  # see output_arrays


@dataclass(slots=True)
class Trace:
    """Everything recorded over one or more searches, in call order."""

    roots: list[RecordedRoot] = field(default_factory=list)
    calls: list[RecordedCall] = field(default_factory=list)
    visit_counts: list[np.ndarray] = field(default_factory=list)
    """Per search: root visit counts [B, A] (filled in by whoever ran the search)."""


class RecordingModel:
    """Stands in for the world model inside ``plan``: times every call and, with ``record``,
    records it in ``trace``. Recording copies every output of every call; it is off when no
    comparison is wanted.

    Per search (since :meth:`start_search`): ``root_seconds``, ``recurrent_seconds`` (summed
    over the calls), ``calls``, and the world model's ``CacheWork`` counters as they stood after
    the root call (``root_bytes``, ``root_syncs``), so the recurrent calls' share can be told apart.
    """

    def __init__(self, world_model: WorldModel, *, record: bool) -> None:
        self.wm, self.record, self.trace = world_model, record, Trace()
        self.start_search()

    def start_search(self, *, new_trace: bool = False) -> None:
        """Zero the per-search timers and the world model's ``CacheWork``; ``new_trace``: forget
        what was recorded so far (the trace then holds only the coming search)."""
        self.wm.work.reset()
        self.root_seconds = self.recurrent_seconds = 0.0
        self.calls = self.root_bytes = self.root_syncs = 0
        if new_trace:
            self.trace = Trace()

    def initial_inference(self, obs, env_ids=None, last_actions=None):
        t0 = time.perf_counter()
        out = self.wm.initial_inference(obs, env_ids=env_ids, last_actions=last_actions)
        self.root_seconds += time.perf_counter() - t0
        self.root_bytes, self.root_syncs = self.wm.work.bytes_copied, self.wm.work.host_syncs
        if self.record:
            self.trace.roots.append(RecordedRoot(np.array(obs, copy=True), output_arrays(out)))
        return out

    def recurrent_inference(self, latent_state, action, env_ids=None, *, parent_ids=None, child_ids=None):
        t0 = time.perf_counter()
        out = self.wm.recurrent_inference(latent_state, action, env_ids=env_ids, parent_ids=parent_ids,
                                          child_ids=child_ids)
        self.recurrent_seconds += time.perf_counter() - t0
        self.calls += 1
        if self.record:
            envs = list(range(latent_state.shape[0])) if env_ids is None else [int(e) for e in env_ids]
            self.trace.calls.append(RecordedCall(
                envs, np.array(action, copy=True), None if parent_ids is None else np.array(parent_ids, copy=True),
                None if child_ids is None else np.array(child_ids, copy=True), output_arrays(out),
            ))
        return out


def replay(reference: WorldModel, trace: Trace) -> Trace:
    """The one search recorded in ``trace`` rerun on ``reference``: its own trace of the same calls.

    The reference expands the same nodes (same roots, same actions from the same parents) from its
    own latents, kept per (env, node id): a content-keyed backend finds each parent by them.
    """
    if len(trace.roots) != 1:
        raise ValueError(f"replay needs a trace of exactly one search; this one has {len(trace.roots)} roots")
    reference.clear_caches()  # a fresh root, as the recorded search had
    obs = trace.roots[0].obs
    root = reference.initial_inference(obs)
    b, sims = obs.shape[0], reference.config.num_simulations
    latents = root.latent_state.new_zeros(b, sims + 1, root.latent_state.shape[1])  # [env, node, E]
    latents[:, 0] = root.latent_state
    ref = Trace(roots=[RecordedRoot(obs, output_arrays(root))])
    for call in trace.calls:
        envs = torch.as_tensor(call.env_ids)
        parents, children = torch.as_tensor(call.parent_ids), torch.as_tensor(call.child_ids)
        out = reference.recurrent_inference(latents[envs, parents], call.action, env_ids=call.env_ids,
                                            parent_ids=call.parent_ids, child_ids=call.child_ids)
        latents[envs, children] = out.latent_state
        ref.calls.append(RecordedCall(call.env_ids, call.action, call.parent_ids, call.child_ids,
                                      output_arrays(out)))
    return ref


@dataclass(frozen=True, slots=True)
class TraceDiff:
    """How far a trace is from a reference trace of the same calls.

    Attributes:
        abs_by_output: largest |a - b| per output over every root and call (:data:`OUTPUTS`).
        rel_by_scalar: largest |a - b| / max(1, |b|) per scalar (:data:`SCALAR_OUTPUTS`), b the reference.
        same_tree: every call saw the same actions and every search ended with the same visit
            counts; if not, later calls expanded different nodes and their differences compare
            different questions.
    """

    abs_by_output: dict[str, float]
    rel_by_scalar: dict[str, float]
    same_tree: bool

    @property
    def max_abs_network(self) -> float:
        """Largest absolute difference over the network's outputs (:data:`NETWORK_OUTPUTS`)."""
        return max(self.abs_by_output[k] for k in NETWORK_OUTPUTS)

    @property
    def max_rel_scalars(self) -> float:
        """Largest relative difference over the scalars (value, reward)."""
        return max(self.rel_by_scalar.values())


def compare_traces(ref: Trace, other: Trace) -> TraceDiff:
    """The differences of ``other`` from ``ref`` (see :class:`TraceDiff`); traces of different
    lengths differ by ``inf`` everywhere."""
    if len(ref.roots) != len(other.roots) or len(ref.calls) != len(other.calls):
        return TraceDiff(dict.fromkeys(OUTPUTS, math.inf), dict.fromkeys(SCALAR_OUTPUTS, math.inf), False)
    worst, rel, same_tree = dict.fromkeys(OUTPUTS, 0.0), dict.fromkeys(SCALAR_OUTPUTS, 0.0), True
    pairs = [(a.out, b.out) for a, b in zip(ref.roots, other.roots, strict=True)]
    for a, b in zip(ref.calls, other.calls, strict=True):
        pairs.append((a.out, b.out))
        same_tree &= np.array_equal(a.action, b.action)
    for a, b in pairs:
        for k in OUTPUTS:
            if k not in a and k not in b:  # reward_logits at roots
                continue
            if k not in a or k not in b or a[k].shape != b[k].shape:
                worst[k] = math.inf
                if k in rel:
                    rel[k] = math.inf
                continue
            x, y = a[k].astype(np.float64), b[k].astype(np.float64)
            diff = np.abs(x - y)
            worst[k] = max(worst[k], float(diff.max()) if diff.size else 0.0)
            if k in rel and diff.size:
                rel[k] = max(rel[k], float((diff / np.maximum(1.0, np.abs(x))).max()))
    same_tree &= len(ref.visit_counts) == len(other.visit_counts) and all(
        np.array_equal(x, y) for x, y in zip(ref.visit_counts, other.visit_counts, strict=True))
    return TraceDiff(worst, rel, bool(same_tree))
