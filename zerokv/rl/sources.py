"""Where the training loop's experience comes from: a collection source.

`zerokv.rl.trainer.Trainer` runs one loop — collect, update, refresh, log — and asks its source
for each iteration's experience. Two sources implement `CollectionSource`:

* `InProcessSource` (here): the envs and searches run in the loop's process, on the loop's
  search model; one `collect` = ``collect_steps`` vector steps with the current weights.
* `zerokv.rl.distributed.RaySource`: ``--collectors N`` Ray actors search with published
  weights; one `collect` = the next actor report.

Either way the source puts the segments into replay and returns a `Collected` record; the loop
does the bookkeeping that both share (env steps, recent returns, cache totals, the cache and
speed columns) once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from zerokv.rl.collector import Collector
from zerokv.rl.config import TrainConfig
from zerokv.rl.factory import temperature

__all__ = ["CACHE_COUNTERS", "CollectionSource", "Collected", "InProcessSource", "cache_counts",
           "refresh_search_model"]

CACHE_COUNTERS = ("hits", "misses", "evictions", "fallbacks")
"""The cache counters a source reports and the run sums (`TrainResult.cache_stats`)."""


def cache_counts(stats) -> dict[str, int]:
    """``CACHE_COUNTERS`` of a model's ``cache_stats()`` report, as plain ints."""
    return {key: int(getattr(stats, key)) for key in CACHE_COUNTERS}


def refresh_search_model(search_model, weights) -> None:
    """After a weight update: ``search_model`` gets ``weights`` — another model's (cast to its
    dtype), a float32 state dict, or its own (``weights is search_model``: already current) — and
    every cache is cleared: keys and values computed with the old weights must not mix with new
    ones. Root contexts are rebuilt by the caller (``Collector.rebuild_contexts``)."""
    if isinstance(weights, dict):
        search_model.load_state_dict(weights)
        search_model.clear_caches()
    elif weights is not search_model:
        search_model.load_weights_from(weights)  # clears the caches too
    else:
        search_model.clear_caches()


@dataclass(frozen=True, slots=True)
class Collected:
    """One iteration's experience, already in replay."""

    env_steps: int
    """Env steps collected (steps × num_envs)."""
    finished_returns: list[float]
    """Raw returns of the episodes that ended."""
    cache: dict[str, int]
    """`CACHE_COUNTERS` of the searches."""
    hit_rate: float
    simulations: int
    """MCTS simulations run."""
    search_seconds: float
    """Time in the searches (on a collector actor: searches and env steps)."""
    local: bool
    """Collected in the loop's process during this iteration: its times split the iteration's
    wall time (``time/*`` columns) and its speed is env steps over the iteration's time."""
    env_seconds: float = 0.0
    """Time stepping envs (local sources)."""
    row: dict[str, float] = field(default_factory=dict)
    """The source's own progress columns (e.g. policy lag, per-collector speeds)."""


class CollectionSource(Protocol):
    """What the training loop needs from collection."""

    progress_fields: tuple[str, ...]
    """progress.csv columns this source adds to `zerokv.rl.progress.CSV_FIELDS`."""
    refreshes_search_model: bool
    """Searches on the loop's search model: the loop refreshes it after every iteration."""

    def start(self, *, env_steps: int, run_id: str) -> None:
        """Called once before the first `collect` (after a resume's restore)."""

    def collect(self, env_steps: int) -> Collected:
        """The next experience, its segments added to replay; ``env_steps`` before it."""

    def weights_updated(self, version: int) -> None:
        """The learner's weights are now ``version`` (the search model's caches already cleared)."""

    def state_dict(self) -> dict | None:
        """What a checkpoint keeps of collection (None: nothing, it restarts fresh)."""

    def load_state_dict(self, state: dict | None, *, weights_version: int) -> None:
        """Continues from a checkpoint's `state_dict` searched with ``weights_version``."""

    def close(self) -> None: ...


class InProcessSource:
    """The loop's own collector: ``collect_steps`` vector steps per iteration on the search model."""

    progress_fields: tuple[str, ...] = ()
    refreshes_search_model = True

    def __init__(self, cfg: TrainConfig, collector: Collector) -> None:
        self.cfg, self.collector = cfg, collector

    def start(self, *, env_steps: int, run_id: str) -> None:
        pass

    def collect(self, env_steps: int) -> Collected:
        cfg, model = self.cfg, self.collector.world_model
        finished: list[float] = []
        search_seconds = env_seconds = 0.0
        for step in range(cfg.collect_steps):  # each step's temperature follows the env steps so far
            result = self.collector.step(temperature(cfg, env_steps + step * cfg.num_envs))
            search_seconds += result.search_seconds
            env_seconds += result.env_seconds
            finished += result.finished_returns
        stats = model.cache_stats()
        return Collected(
            env_steps=cfg.collect_steps * cfg.num_envs, finished_returns=finished, cache=cache_counts(stats),
            hit_rate=float(stats.hit_rate), simulations=cfg.collect_steps * cfg.num_simulations,
            search_seconds=search_seconds, env_seconds=env_seconds, local=True,
            row={"policy_lag": 0.0},  # its segments were searched with the current weights
        )

    def weights_updated(self, version: int) -> None:
        """Stamps later segments with ``version`` and rebuilds the root contexts with the new weights."""
        self.collector.weights_version = version
        self.collector.rebuild_contexts()

    def state_dict(self) -> dict:
        """The collector's episodes."""
        return self.collector.state_dict()

    def load_state_dict(self, state: dict | None, *, weights_version: int) -> None:
        """Continues the checkpoint's episodes, root contexts rebuilt (the caches are empty)."""
        self.collector.load_state_dict(state)
        self.weights_updated(weights_version)

    def close(self) -> None:
        self.collector.close()

    def __repr__(self) -> str:
        return f"InProcessSource({self.cfg.num_envs} envs)"
