"""The benchmarks: ``zerokv bench`` (the same searches with each cache backend, soak, storage,
multi-leaf, precision, reanalysis), the learner's (``python -m zerokv.bench.learner``) and the
envs' (``python -m zerokv.bench.envs``). These names are the kept surface of ``zerokv.bench``."""

from zerokv.bench.cli import BenchArgs, run
from zerokv.bench.configs import CONFIGS, QUICK, Budget
from zerokv.bench.contexts import memory_model, run_contexts
from zerokv.bench.report import render, write_json, write_plot
from zerokv.bench.run import BenchResult, run_bench
from zerokv.bench.soak import documented_bound_bytes, run_soak

# The learner's and the envs' benchmarks are also scripts (``python -m zerokv.bench.learner``); they
# are imported on first use so that running one as ``__main__`` does not import it twice (runpy's
# "found in sys.modules" warning).
_LAZY = {"EnvBench": ("zerokv.bench.envs", "EnvBench"), "run_env_bench": ("zerokv.bench.envs", "bench"),
         "LearnerBench": ("zerokv.bench.learner", "LearnerBench"),
         "run_learner_bench": ("zerokv.bench.learner", "run")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'zerokv.bench' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    return getattr(importlib.import_module(module), attr)

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
