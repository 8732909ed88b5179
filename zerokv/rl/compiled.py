"""The learner's update, eager or compiled with ``torch.compile`` (inductor).

Three parts of :meth:`zerokv.rl.learner.Learner.update` are compiled, each one graph for the
fixed training shapes (batch size × unroll steps): the teacher-forced forward
(``WorldModel.forward_sequence``; its backward becomes inductor's backward graph through
AOTAutograd), the momentum target encoder (no gradient) and the UniZero losses (their backward
too). What stays eager, and why: the fresh value targets between forward and losses (their rows
are data-dependent), gradient clipping and AdamW, already one fused kernel per parameter group
(``fused=True``). Under the learner's bfloat16 option the graphs are traced inside CPU autocast,
as the eager update runs them. Weights are graph inputs (no freezing): an optimizer step needs
no recompilation.

The first update compiles (tens of seconds to minutes on two cores); a compile failure warns
once and the learner stays eager.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from zerokv.model.losses import unizero_losses

__all__ = ["UpdateParts", "compile_note", "compile_update_parts"]


@dataclass
class UpdateParts:
    """The callables ``Learner.update`` runs: compiled (with eager fallbacks) or the eager ones."""

    forward: callable
    target: callable
    losses: callable
    compiled: bool = False
    compile_seconds: dict[str, float] = field(default_factory=dict)  # part → seconds of its first call
    failed: str | None = None


class _Compiled:
    """One compiled part: timed at its first call; on a compiler error, one warning and eager from then on."""

    def __init__(self, name: str, eager, parts: UpdateParts) -> None:
        self.name, self.eager, self.parts = name, eager, parts
        self.fn = torch.compile(eager, dynamic=False)

    def __call__(self, *args, **kwargs):
        if self.parts.failed is not None:
            return self.eager(*args, **kwargs)
        if self.name in self.parts.compile_seconds:
            return self.fn(*args, **kwargs)
        t0 = time.perf_counter()
        try:
            out = self.fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any compiler failure: warn once, stay eager
            self.parts.failed = f"{type(err).__name__}: {err}".splitlines()[0]
            warnings.warn(f"torch.compile of the learner update failed ({self.parts.failed}); "
                          "training with the eager update instead", RuntimeWarning, stacklevel=3)
            return self.eager(*args, **kwargs)
        self.parts.compile_seconds[self.name] = time.perf_counter() - t0
        return out


def compile_update_parts(model: nn.Module, target_encoder: nn.Module, *, compile: bool) -> UpdateParts:
    """The update's forward, target encoder and losses for ``model``: compiled if ``compile``."""
    parts = UpdateParts(model.forward_sequence, target_encoder, unizero_losses, compiled=compile)
    if compile:
        parts.forward = _Compiled("forward", model.forward_sequence, parts)
        parts.target = _Compiled("target", target_encoder, parts)
        parts.losses = _Compiled("losses", unizero_losses, parts)
    return parts


def compile_note(parts: UpdateParts, search) -> str:
    """One line for a training run's log: the compile seconds of the learner's parts and of the search
    step's graphs (``search``: a :class:`~zerokv.model.compiled.CompileReport`), and any fallback."""
    learner = ", ".join(f"{k} {v:.1f} s" for k, v in parts.compile_seconds.items()) or "not compiled"
    graphs = ", ".join(f"{rows} rows {s:.1f} s" for rows, s in sorted(search.graphs.items())) or "none"
    failed = [f"{who} fell back to eager ({why})" for who, why in (("learner", parts.failed),
                                                                  ("search", search.failed)) if why]
    return (f"compile: learner {learner} (the first backward's compile not included); search step graphs: "
            f"{graphs}; {search.recompiles} recompiles" + "".join(f"; {f}" for f in failed))
