"""zerokv: an exact, fast KV cache for transformer world models inside Monte Carlo Tree Search.

Public names live here; tests and the CLI import only these.
"""

from zerokv.cache import (
    CacheConfig,
    CacheStats,
    EvictionStrategy,
    KeysValues,
    KVCache,
    KVCacheManager,
    KVCachePool,
    KVStore,
    LegacyKVStore,
    PagedArena,
    StatsSource,
)
from zerokv.errors import (
    CacheSnapshotError,
    CacheValidationError,
    CheckpointError,
    PretrainedError,
    ReplaySnapshotError,
    RunDirError,
    SnapshotError,
    ZeroKVError,
)
from zerokv.model.config import WorldModelConfig
from zerokv.model.context import NodeKey
from zerokv.model.context_cache import CacheReport
from zerokv.model.world_model import InferenceOutput, SequenceOutput, WorldModel
from zerokv.search import (
    Expansion,
    RecurrentFnOutput,
    RootFnOutput,
    SearchConfig,
    SearchOutput,
    muzero_search,
    plan,
)
from zerokv.version import __version__

__all__ = [
    "__version__",
    "Agent",
    "CacheConfig",
    "CacheReport",
    "CacheSnapshotError",
    "CacheStats",
    "CacheValidationError",
    "CheckpointError",
    "EvictionStrategy",
    "Expansion",
    "InferenceOutput",
    "KVCache",
    "KVCacheManager",
    "KVCachePool",
    "KVStore",
    "KeysValues",
    "LegacyKVStore",
    "NodeKey",
    "PagedArena",
    "PretrainedError",
    "RecurrentFnOutput",
    "ReplaySnapshotError",
    "RootFnOutput",
    "RunDirError",
    "SearchConfig",
    "SearchOutput",
    "SequenceOutput",
    "SnapshotError",
    "StatsSource",
    "WorldModel",
    "WorldModelConfig",
    "ZeroKVError",
    "muzero_search",
    "plan",
]


def __getattr__(name: str):
    """``zerokv.Agent`` lives in the rl layer, above the model and search this package's other
    names come from: imported on first use, so ``import zerokv`` stays light and layered."""
    if name == "Agent":
        from zerokv.rl.agent import Agent

        return Agent
    raise AttributeError(f"module 'zerokv' has no attribute {name!r}")
