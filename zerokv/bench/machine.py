"""The machine under the benchmark: CPU name, peak memory, and how busy other processes kept it."""

from __future__ import annotations

import platform
import resource
import sys
import time

import psutil


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MiB (a high-water mark: never falls)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


class CpuWatch:
    """Share of the machine's CPU time that *other* processes used while we ran (noise check)."""

    def __init__(self) -> None:
        self.wall, self.busy, self.ours = time.perf_counter(), self._busy(), self._ours()

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)

    @staticmethod
    def _ours() -> float:
        t = psutil.Process().cpu_times()
        return t.user + t.system

    def others_share(self) -> float:
        wall = time.perf_counter() - self.wall
        others = (self._busy() - self.busy) - (self._ours() - self.ours)
        return max(others, 0.0) / (wall * (psutil.cpu_count() or 1)) if wall > 0 else 0.0
