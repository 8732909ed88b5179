"""The benchmark behind ``zerokv bench``: the same searches with each cache backend."""

from zerokv.bench.cli import BenchArgs, main, run
from zerokv.bench.configs import CONFIGS, QUICK, Budget
from zerokv.bench.report import render, write_json, write_plot
from zerokv.bench.run import BenchResult, run_bench

__all__ = [
    "CONFIGS",
    "QUICK",
    "BenchArgs",
    "BenchResult",
    "Budget",
    "main",
    "render",
    "run",
    "run_bench",
    "write_json",
    "write_plot",
]
