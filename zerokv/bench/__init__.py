"""The benchmarks: ``zerokv bench`` (the same searches with each cache backend, soak, storage,
multi-leaf, precision, reanalysis), the learner's (``python -m zerokv.bench.learner``) and the
envs' (``python -m zerokv.bench.envs``). These names are the kept surface of ``zerokv.bench``."""

from zerokv.bench.cli import BenchArgs, run
from zerokv.bench.configs import CONFIGS, QUICK, Budget
from zerokv.bench.contexts import memory_model, run_contexts
from zerokv.bench.envs import EnvBench
from zerokv.bench.envs import bench as run_env_bench
from zerokv.bench.learner import LearnerBench
from zerokv.bench.learner import run as run_learner_bench
from zerokv.bench.report import render, write_json, write_plot
from zerokv.bench.run import BenchResult, run_bench
from zerokv.bench.soak import documented_bound_bytes, run_soak

__all__ = [
    "CONFIGS",
    "QUICK",
    "BenchArgs",
    "BenchResult",
    "Budget",
    "EnvBench",
    "LearnerBench",
    "documented_bound_bytes",
    "memory_model",
    "render",
    "run",
    "run_bench",
    "run_contexts",
    "run_env_bench",
    "run_learner_bench",
    "run_soak",
    "write_json",
    "write_plot",
]
