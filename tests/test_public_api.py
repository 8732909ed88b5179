"""The kept public surface: every name listed here stays importable from its package and listed
in its ``__all__``. Removing or renaming one is a breaking change: this test says so first.
Adding a name means adding it here."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "zerokv": [
        "__version__", "Agent", "CacheConfig", "CacheReport", "CacheSnapshotError", "CacheStats", "CacheValidationError",
        "CheckpointError", "EvictionStrategy", "Expansion", "InferenceOutput", "KVCache", "KVCacheManager",
        "KVCachePool", "KVStore", "KeysValues", "LegacyKVStore", "NodeKey", "PagedArena", "PretrainedError",
        "RecurrentFnOutput", "ReplaySnapshotError", "RootFnOutput", "RunDirError", "SearchConfig", "SearchOutput",
        "SequenceOutput", "SnapshotError", "StatsSource", "WorldModel", "WorldModelConfig", "ZeroKVError",
        "muzero_search", "plan",
    ],
    "zerokv.rl": [
        "Batch", "Collected", "CollectionSource", "Collector", "Curve", "EnjoyArgs", "EnvOptions", "EnvSpec",
        "EvalArgs", "ExportArgs", "GameSegment", "InProcessSource", "Learner", "PlotArgs", "ReplayBuffer",
        "TrainConfig", "TrainResult", "TrainedPolicy", "Trainer", "enjoy", "env_spec", "evaluate",
        "evaluate_policy", "export", "latest_checkpoint", "load_checkpoint", "load_policy", "make_vector_env",
        "plot", "read_curve", "save_checkpoint", "train",
    ],
    "zerokv.bench": [
        "CONFIGS", "QUICK", "BenchArgs", "BenchResult", "Budget", "EnvBench", "LearnerBench",
        "documented_bound_bytes", "memory_model", "render", "run", "run_bench", "run_contexts", "run_env_bench",
        "run_learner_bench", "run_soak",
        "write_json", "write_plot",
    ],
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_public_names_stay(package):
    module = importlib.import_module(package)
    exported = set(module.__all__)
    missing = [name for name in PUBLIC[package] if name not in exported or not hasattr(module, name)]
    assert not missing, f"{package} lost public names {missing}"
    unlisted = sorted(exported - set(PUBLIC[package]))
    assert not unlisted, f"{package}.__all__ has {unlisted}, which tests/test_public_api.py does not keep yet"


def test_snapshot_errors_share_one_base():
    import zerokv

    for error in (zerokv.CacheSnapshotError, zerokv.ReplaySnapshotError):
        assert issubclass(error, zerokv.SnapshotError) and issubclass(error, zerokv.ZeroKVError)
        assert issubclass(error, ValueError)  # `except ValueError` still catches it
    assert zerokv.CacheSnapshotError is not zerokv.ReplaySnapshotError
