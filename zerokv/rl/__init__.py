"""Training on real environments with the world model and the cached search: ``zerokv train``,
``eval``, ``enjoy``, ``plot`` and ``export`` as functions, their configs and results.

These names are the kept surface of ``zerokv.rl`` (``tests/test_public_api.py`` fails when one
disappears); the modules behind them may move. Ray is never imported here: collection on Ray
(``TrainConfig(collectors=N)``) imports it when a run asks for it.
"""

from zerokv.rl.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from zerokv.rl.collector import Collector
from zerokv.rl.config import TrainConfig
from zerokv.rl.envs import EnvOptions, EnvSpec, env_spec, make_vector_env
from zerokv.rl.evaluator import evaluate
from zerokv.rl.export import ExportArgs, export
from zerokv.rl.learner import Learner
from zerokv.rl.play import EnjoyArgs, EvalArgs, TrainedPolicy, enjoy, evaluate_policy, load_policy
from zerokv.rl.plot import Curve, PlotArgs, plot, read_curve
from zerokv.rl.replay import Batch, ReplayBuffer
from zerokv.rl.segment import GameSegment
from zerokv.rl.sources import Collected, CollectionSource, InProcessSource
from zerokv.rl.trainer import Trainer, TrainResult, train

__all__ = [
    "Batch",
    "Collected",
    "CollectionSource",
    "Collector",
    "Curve",
    "EnjoyArgs",
    "EnvOptions",
    "EnvSpec",
    "EvalArgs",
    "ExportArgs",
    "GameSegment",
    "InProcessSource",
    "Learner",
    "PlotArgs",
    "ReplayBuffer",
    "TrainConfig",
    "TrainResult",
    "TrainedPolicy",
    "Trainer",
    "enjoy",
    "env_spec",
    "evaluate",
    "evaluate_policy",
    "export",
    "latest_checkpoint",
    "load_checkpoint",
    "load_policy",
    "make_vector_env",
    "plot",
    "read_curve",
    "save_checkpoint",
    "train",
]
