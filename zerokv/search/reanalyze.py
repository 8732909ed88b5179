"""Reanalysis: fresh search targets for replayed positions, many roots per model call.

MuZero Reanalyse and UniZero recompute the policy (and value) targets of stored positions with
the current weights, because the targets saved at collection came from an older, weaker model.
The reference runs those roots in chunks of ``env_num`` (8): every chunk is a full search whose
50 recurrent calls carry 8 rows each. Here a :class:`Reanalyzer` searches up to
``roots_per_call`` roots together in a cache arena of their own (:meth:`WorldModel.arena`), so each
of the 50 calls carries all of them: the matrix multiplies run at their wide-batch rate, the
per-call overheads are paid once, and the collecting envs' caches are never touched.

Each root's context is rebuilt from its real history (``initial_inference_from_history``): with
:attr:`WorldModelConfig.root_history_steps` steps of history a reanalysed root sees exactly what
the collector's root would see with the same weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from zerokv.checks import check_positive_int
from zerokv.search.config import SearchConfig
from zerokv.search.plan import search_from_roots


@dataclass(frozen=True, slots=True)
class ReanalysisOutput:
    """Targets for N roots (A actions).

    search_policy: [N, A] float32 visit distributions (the policy targets)
    root_value:    [N] float32 search values
    visit_counts:  [N, A] int64
    seconds:       wall time of the whole reanalysis
    model_calls:   recurrent calls made (num_simulations per chunk of roots)
    """

    search_policy: np.ndarray
    root_value: np.ndarray
    visit_counts: np.ndarray
    seconds: float
    model_calls: int

    @property
    def roots_per_second(self) -> float:
        return len(self.root_value) / max(self.seconds, 1e-12)


class Reanalyzer:
    """Searches batches of replayed positions with ``world_model``'s current weights.

    ``roots_per_call`` is the arena's size: roots beyond it are searched in successive chunks of
    that many (``roots_per_call=8`` reproduces the reference's chunking, for comparison).
    """

    def __init__(self, world_model, search: SearchConfig, roots_per_call: int = 256) -> None:
        check_positive_int("roots_per_call", roots_per_call, owner="Reanalyzer")
        if not isinstance(search, SearchConfig):
            raise TypeError(f"Reanalyzer: search is a {type(search).__name__}; expected a SearchConfig")
        self.search, self.roots_per_call = search, roots_per_call
        self.arena = world_model.arena(roots_per_call)

    def __call__(
        self, observations: np.ndarray, actions: np.ndarray, lengths: np.ndarray | None = None, *,
        rng: np.random.Generator, add_noise: bool = True, legal_actions_mask: np.ndarray | None = None,
    ) -> ReanalysisOutput:
        """Search N roots given their histories.

        observations: [N, T, *obs_shape], each root's last T observations (the root's is last)
        actions:      [N, T-1] the actions between them
        lengths:      [N] real observations per row (default T); earlier entries are ignored
        legal_actions_mask: [N, A] bool, or None for all legal

        Root noise is added as at collection by default, so the new targets are drawn like the
        stored ones were.
        """
        n = len(observations)
        if len(actions) != n or (lengths is not None and len(lengths) != n):
            raise ValueError(f"{n} histories but {len(actions)} action rows"
                             + ("" if lengths is None else f" and {len(lengths)} lengths"))
        if legal_actions_mask is not None and len(legal_actions_mask) != n:
            raise ValueError(f"legal_actions_mask has {len(legal_actions_mask)} rows for {n} roots")
        t0 = time.perf_counter()
        policies, values, visits, calls = [], [], [], 0
        for start in range(0, n, self.roots_per_call):
            chunk = slice(start, min(n, start + self.roots_per_call))
            env_ids = list(range(chunk.stop - chunk.start))
            self.arena.clear_caches()  # the previous chunk's trees are done with
            roots = self.arena.initial_inference_from_history(
                observations[chunk], actions[chunk], env_ids=env_ids,
                lengths=None if lengths is None else lengths[chunk],
            )
            out = search_from_roots(
                self.arena, roots, config=self.search, rng=rng, env_ids=env_ids,
                legal_actions_mask=None if legal_actions_mask is None else legal_actions_mask[chunk],
                add_noise=add_noise,
            )
            policies.append(out.search_policy)
            values.append(out.root_value)
            visits.append(out.visit_counts)
            calls += out.model_calls
        return ReanalysisOutput(
            search_policy=np.concatenate(policies), root_value=np.concatenate(values),
            visit_counts=np.concatenate(visits), seconds=time.perf_counter() - t0, model_calls=calls,
        )
