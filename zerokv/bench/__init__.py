"""The benchmark behind ``zerokv bench``: the same searches with each cache backend."""

from zerokv.bench.cli import BenchArgs, main, run
from zerokv.bench.configs import CONFIGS, QUICK, Budget
from zerokv.bench.contexts import memory_model, run_contexts
from zerokv.bench.report import render, write_json, write_plot
from zerokv.bench.run import BenchResult, run_bench
from zerokv.bench.soak import documented_bound_bytes, run_soak

__all__ = [
    "CONFIGS",
    "QUICK",
    "BenchArgs",
    "BenchResult",
    "Budget",
    "documented_bound_bytes",
    "main",
    "memory_model",
    "render",
    "run",
    "run_bench",
    "run_contexts",
    "run_soak",
    "write_json",
    "write_plot",
]
