"""Collectors on Ray, one learner: ``zerokv train --collectors N``.

`RaySource` is the training loop's collection source when collection runs on N Ray actors
(`CollectorPool`), each a `zerokv.rl.worker.CollectorWorker` with its own ``--num-envs`` envs,
search model and caches; the loop (`zerokv.rl.trainer.Trainer`: learner, replay, evaluation,
checkpoints, progress log, early stop, ``best.pt``) is the in-process one. One driver
*iteration* handles one collector's report:

1. the collector gets its next call at once (the newest weights offered with it), so it keeps
   searching while the driver learns; each collector has ``1 + collector_queue`` calls in flight
   at most, which bounds how far collection runs ahead of the learner (and the policy lag);
2. the report's segments go to replay; ``policy_lag`` = learner updates − each segment's weights
   version, averaged over the report's segments;
3. ``replay_ratio × env steps`` updates, as in-process, so the replay ratio holds on average.

Weights: when a call is sent and ``weight_sync_every`` updates were made since the last
publication, the learner's float32 weights are put in the object store once (``ray.put``); every
call carries that newest reference (nested, so Ray does not fetch it), and a collector fetches
it only if newer than its own, then clears its caches and rebuilds its root contexts.

Faults: Ray restarts a collector whose process died (``max_restarts``) and retries its calls
(``max_task_retries``): the restarted collector starts new episodes from the newest weights and
the run goes on (its report's new pid is noted and counted). The driver never waits forever: a
collector with calls in flight and no result for ``collector_timeout`` seconds fails the run with
a `TimeoutError` naming it.

Resume: a checkpoint holds the learner, replay and counters but no collector state (actor timing
makes a distributed run irreproducible anyway); a resumed run starts new collectors, with new
episodes, from the restored weights.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np
from tqdm import tqdm

from zerokv.rl.collector import SegmentSink
from zerokv.rl.config import TrainConfig
from zerokv.rl.factory import temperature
from zerokv.rl.raycluster import Cluster, check_capacity, connect, disconnect, import_ray
from zerokv.rl.sources import Collected
from zerokv.rl.worker import CollectorWorker, CollectReport, WeightsOffer

__all__ = ["CollectorPool", "RayCollector", "RaySource"]


class RayCollector(CollectorWorker):
    """The worker as a Ray actor: fetches offered weights from the object store."""

    def _fetch(self, ref: Any):
        return import_ray().get(ref)


class CollectorPool:
    """``cfg.collectors`` collector actors and their calls in flight.

    Invariant: ``pending`` maps every unanswered call to its collector, and ``in_flight[i]`` is
    the number of collector i's calls in it (at most ``1 + cfg.collector_queue``).
    """

    def __init__(self, cfg: TrainConfig, *, name: str, start_env_steps: int) -> None:
        self.ray = import_ray()
        self.cfg = cfg
        options = dict(num_cpus=float(cfg.collector_cpus), num_gpus=float(cfg.collector_gpus),
                       max_restarts=cfg.collector_restarts, max_task_retries=cfg.collector_restarts)
        device = "cuda" if cfg.collector_gpus > 0 else "cpu"
        threads = max(1, int(cfg.collector_cpus))
        self.names = [f"{name}-collector-{i}" for i in range(cfg.collectors)]
        self.actors = [
            self.ray.remote(RayCollector).options(name=self.names[i], **options).remote(
                cfg.to_dict(), i, start_env_steps=start_env_steps, device=device, threads=threads)
            for i in range(cfg.collectors)
        ]
        self.pending: dict[Any, int] = {}
        self.in_flight = [0] * cfg.collectors
        self.last_heard = [time.monotonic()] * cfg.collectors
        """When each collector last answered (or was given work while idle)."""
        self.pids: list[int | None] = [None] * cfg.collectors
        self.restarts = [0] * cfg.collectors

    @property
    def capacity(self) -> int:
        """Calls in flight per collector at most."""
        return 1 + self.cfg.collector_queue

    def in_flight_env_steps(self) -> int:
        return sum(self.in_flight) * self.cfg.iteration_env_steps

    def submit(self, i: int, temperature: float, offer: WeightsOffer) -> None:
        if self.in_flight[i] >= self.capacity:
            raise RuntimeError(f"{self.names[i]} already has {self.in_flight[i]} calls in flight")
        if self.in_flight[i] == 0:
            self.last_heard[i] = time.monotonic()  # its silence counts from now
        ref = self.actors[i].collect.remote(self.cfg.collect_steps, temperature, offer)
        self.pending[ref] = i
        self.in_flight[i] += 1

    def next_report(self) -> CollectReport:
        """The next finished call's report (oldest calls first); raises `TimeoutError` naming a
        collector that has been silent for ``collector_timeout`` seconds with calls in flight."""
        if not self.pending:
            raise RuntimeError("no collector call in flight")
        while True:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=self._patience())
            if ready:
                return self._receive(ready[0])
            self._check_silence()

    def _patience(self) -> float:
        """Seconds until the first collector with calls in flight has been silent too long."""
        busy = [t for t, n in zip(self.last_heard, self.in_flight, strict=True) if n]
        return max(0.0, min(busy) + self.cfg.collector_timeout - time.monotonic())

    def _check_silence(self) -> None:
        now = time.monotonic()
        for i, (heard, n) in enumerate(zip(self.last_heard, self.in_flight, strict=True)):
            if n and now - heard >= self.cfg.collector_timeout:
                pid = "not started yet" if self.pids[i] is None else f"pid {self.pids[i]}"
                raise TimeoutError(
                    f"{self.names[i]} (collector {i}, {pid}) sent no result for {now - heard:.0f} s "
                    f"(--collector-timeout {self.cfg.collector_timeout:g}) with {n} calls in flight: it is stuck, "
                    f"or the cluster cannot place it (it asks for num_cpus={self.cfg.collector_cpus:g}, "
                    f"num_gpus={self.cfg.collector_gpus:g})")

    def _receive(self, ref) -> CollectReport:
        i = self.pending.pop(ref)
        self.in_flight[i] -= 1
        try:
            report = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:
            raise RuntimeError(f"{self.names[i]} (collector {i}) died and Ray gave up on it after "
                               f"--collector-restarts {self.cfg.collector_restarts}: {e}") from e
        self.last_heard[i] = time.monotonic()
        if self.pids[i] is not None and report.pid != self.pids[i]:
            self.restarts[i] += 1
            tqdm.write(f"{self.names[i]} was restarted by Ray (pid {self.pids[i]} -> {report.pid}); "
                       "it plays new episodes with the newest weights")
        self.pids[i] = report.pid
        return report

    def stop(self) -> None:
        """Kills every collector (no restart); their unanswered calls are dropped."""
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.pending.clear()
        self.in_flight = [0] * len(self.actors)


class RaySource:
    """The `zerokv.rl.sources.CollectionSource` of ``--collectors N``: collector actors on Ray
    (see the module docstring); one `collect` is one collector's report."""

    refreshes_search_model = False  # the driver's search model serves reanalysis only

    def __init__(self, cfg: TrainConfig, replay: SegmentSink, learner) -> None:
        import_ray()  # fails before the run starts if the extra is missing
        self.cfg, self.replay, self.learner = cfg, replay, learner
        self.progress_fields = ("weights/version", "collectors/restarts", "policy_lag/max",
                                *(_speed_key(i) for i in range(cfg.collectors)))
        self.cluster: Cluster | None = None
        self.pool: CollectorPool | None = None
        self.offer: WeightsOffer | None = None
        self.env_steps = 0
        """Env steps reported so far (the loop's count)."""
        self.arrivals: deque[tuple[float, int]] = deque(maxlen=2 * cfg.collectors + 1)
        """(time, env steps) of the latest reports: the total env steps/s over a short window."""
        self.collector_speed: dict[str, float] = {}
        """Each collector's env steps/s in its latest report (while it searched)."""

    # ------------------------------------------------------------------ life cycle
    def start(self, *, env_steps: int, run_id: str) -> None:
        """Connects to the cluster, starts the collectors and gives each its first calls."""
        self.env_steps = env_steps
        self.cluster = connect(self.cfg.ray_address)
        check_capacity(self.cfg.collectors, self.cfg.collector_cpus,
                       float(import_ray().cluster_resources().get("CPU", 0.0)))
        tqdm.write(f"Ray cluster at {self.cluster.gcs_address}: {self.cfg.collectors} collectors × "
                   f"{self.cfg.num_envs} envs")
        self.pool = CollectorPool(self.cfg, name=f"zerokv-{run_id}", start_env_steps=env_steps)
        for i in range(self.cfg.collectors):
            for _ in range(self.pool.capacity):
                self._submit(i)

    def close(self) -> None:
        try:
            if self.pool is not None:
                self.pool.stop()
                self.pool = None
        finally:
            disconnect(self.cluster)
            self.cluster = None

    def state_dict(self) -> None:
        return None  # the collectors restart fresh on resume

    def load_state_dict(self, state: dict | None, *, weights_version: int) -> None:
        pass  # new collectors start from the restored weights, offered with their first call

    def weights_updated(self, version: int) -> None:
        pass  # published when the next call is sent (`_newest_offer`)

    # ------------------------------------------------------------------ one report
    def collect(self, env_steps: int) -> Collected:
        report = self.pool.next_report()
        self.env_steps = env_steps + report.env_steps
        self._submit(report.index)  # keeps it searching while this process learns
        self.arrivals.append((time.monotonic(), report.env_steps))
        lags = [self.learner.updates - seg.weights_version for seg in report.segments]
        for seg in report.segments:
            self.replay.add(seg)
        self.collector_speed[_speed_key(report.index)] = report.env_steps / max(report.search_seconds, 1e-9)
        row: dict[str, float] = {"speed/env_steps_per_s": self._total_speed(), **self.collector_speed,
                                 "collectors/restarts": sum(self.pool.restarts),
                                 "weights/version": self.offer.version}
        if lags:
            row.update({"policy_lag": float(np.mean(lags)), "policy_lag/max": float(max(lags))})
        return Collected(env_steps=report.env_steps, finished_returns=report.finished_returns, cache=report.cache,
                         hit_rate=report.hit_rate, simulations=report.simulations,
                         search_seconds=report.search_seconds, local=False, row=row)

    def _submit(self, i: int) -> None:
        """Collector i's next call, unless the calls in flight already reach the budget."""
        if self.env_steps + self.pool.in_flight_env_steps() >= self.cfg.total_env_steps:
            return
        self.pool.submit(i, temperature(self.cfg, self.env_steps), self._newest_offer())

    def _newest_offer(self) -> WeightsOffer:
        """The published weights, first published again if ``weight_sync_every`` updates were
        made since (one ``ray.put`` of the float32 state dict, on the CPU)."""
        updates = self.learner.updates
        if self.offer is None or updates - self.offer.version >= self.cfg.weight_sync_every:
            state = {k: v.detach().cpu() for k, v in self.learner.model.state_dict().items()}
            self.offer = WeightsOffer(updates, self.pool.ray.put(state))
        return self.offer

    def _total_speed(self) -> float:
        """Env steps/s over the latest reports of all collectors (0 until two have arrived)."""
        if len(self.arrivals) < 2:
            return 0.0
        span = self.arrivals[-1][0] - self.arrivals[0][0]
        return sum(steps for _, steps in list(self.arrivals)[1:]) / max(span, 1e-9)


def _speed_key(i: int) -> str:
    return f"speed/collector_{i}_env_steps_per_s"
