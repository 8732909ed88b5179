"""One collector of a distributed run: its own envs, search model and caches; no learning.

`CollectorWorker` is plain Python (no Ray import): `zerokv.rl.distributed` runs it as a Ray
actor, and the tests drive it in-process. Each `collect` call first takes the newest weights it
is offered (`WeightsOffer`), if newer than its own: it loads them into its search model (cast to
``search_dtype``), which clears every cache, and rebuilds each env's root context from its recent
history — no key or value computed with old weights survives, as in the in-process loop. Then it
runs ``steps`` vector steps and returns a `CollectReport` with the segments finished meanwhile,
each stamped with the version of the weights that searched its first step.

Threads: a world model belongs to one thread (``zerokv.model.session``). A Ray actor runs its
methods one at a time on its own thread, so the worker calls its model from that thread only.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zerokv.model.world_model import WorldModel
from zerokv.rl.config import TrainConfig
from zerokv.rl.factory import make_collector, world_model_config
from zerokv.rl.segment import GameSegment
from zerokv.rl.sources import cache_counts, refresh_search_model

__all__ = ["NO_WEIGHTS", "CollectReport", "CollectorWorker", "WeightsOffer", "collector_seed"]

NO_WEIGHTS = -1
"""`CollectorWorker.weights_version` before any weights arrived (a new or restarted actor)."""


@dataclass(frozen=True, slots=True)
class WeightsOffer:
    """The newest published weights, offered with every call (only a newer version is loaded)."""

    version: int
    """The learner's update count when the weights were published."""
    ref: Any
    """The float32 state dict, or (on Ray) an ObjectRef to it, nested so Ray does not fetch it
    for every call: the worker fetches it only when the version is newer than its own."""


@dataclass(frozen=True, slots=True)
class CollectReport:
    """What one `collect` call sends back."""

    index: int
    """The collector's index in the run."""
    pid: int
    """Its process id (a new one after Ray restarted it)."""
    segments: list[GameSegment]
    """Segments closed during the call, each with its `weights_version`."""
    finished_returns: list[float]
    """Raw returns of the episodes that ended during the call."""
    env_steps: int
    """steps × num_envs."""
    weights_version: int
    """The version it searched with (the one it loaded at the call's start, or kept)."""
    cache: dict[str, int]
    """Cache counters of the call's searches: hits, misses, evictions, fallbacks."""
    hit_rate: float
    search_seconds: float
    """Time in the searches and env steps."""
    seconds: float
    """The call's whole time in the actor, loading the weights included."""
    simulations: int
    """MCTS simulations run (steps × num_simulations)."""


def collector_seed(seed: int, index: int, start_env_steps: int) -> int:
    """Collector ``index``'s seed: its episodes differ from every other collector's and, after a
    resume (a new ``start_env_steps``), from the ones it played before."""
    return int(np.random.SeedSequence([seed, index, start_env_steps]).generate_state(1)[0])


class CollectorWorker:
    """``cfg.num_envs`` envs searched by a ``cfg.search_dtype`` model on ``device``, threads set."""

    def __init__(self, cfg: dict, index: int, *, start_env_steps: int, device: str = "cpu",
                 threads: int = 1) -> None:
        self.cfg = TrainConfig(**cfg)
        self.index = index
        torch.set_num_threads(threads)
        model_config = dataclasses.replace(world_model_config(self.cfg), device=device, dtype=self.cfg.search_dtype)
        self.model = WorldModel(model_config)  # random weights until the first offer is loaded
        self.outbox: list[GameSegment] = []
        seed = collector_seed(self.cfg.seed, index, start_env_steps)
        self.collector = make_collector(self.cfg, self.model, _Outbox(self.outbox), seed=seed)
        self.weights_version = NO_WEIGHTS

    def pid(self) -> int:
        return os.getpid()

    def collect(self, steps: int, temperature: float, offer: WeightsOffer) -> CollectReport:
        """Loads ``offer`` if newer, then ``steps`` vector steps at ``temperature``."""
        t0 = time.monotonic()
        if offer.version > self.weights_version:
            self.load_weights(offer.version, self._fetch(offer.ref))
        if self.weights_version == NO_WEIGHTS:
            raise RuntimeError(f"collector {self.index}: offered no weights (version {offer.version})")
        finished: list[float] = []
        ts = time.monotonic()
        for _ in range(steps):
            finished += self.collector.step(temperature).finished_returns
        search_seconds = time.monotonic() - ts
        stats = self.model.cache_stats()
        self.model.reset_cache_stats()
        segments, self.outbox[:] = list(self.outbox), []
        return CollectReport(
            index=self.index, pid=os.getpid(), segments=segments, finished_returns=finished,
            env_steps=steps * self.cfg.num_envs, weights_version=self.weights_version,
            cache=cache_counts(stats),
            hit_rate=float(stats.hit_rate), search_seconds=search_seconds, seconds=time.monotonic() - t0,
            simulations=steps * self.cfg.num_simulations,
        )

    def load_weights(self, version: int, state: dict[str, torch.Tensor]) -> None:
        """The learner's float32 ``state`` into the search model (cast to its dtype); then every
        cache is cleared and the root contexts are rebuilt with these weights."""
        refresh_search_model(self.model, state)
        self.weights_version = self.collector.weights_version = version
        self.collector.rebuild_contexts()

    def _fetch(self, ref: Any) -> dict[str, torch.Tensor]:
        """The state dict behind ``ref`` (in-process: ``ref`` itself; on Ray: ``ray.get``)."""
        return ref

    def close(self) -> None:
        self.collector.close()


@dataclass(frozen=True, slots=True)
class _Outbox:
    """The collector's segment sink inside a worker: finished segments wait for the next report."""

    segments: list[GameSegment]

    def add(self, segment: GameSegment) -> None:
        self.segments.append(segment)
