"""``zerokv.Agent``: a trained agent that loads and acts, as Stable-Baselines3's ``Algo.load`` /
``model.predict`` do.

    agent = zerokv.Agent.load("runs/cartpole")            # a run directory, a checkpoint or an export
    env = agent.make_env()
    obs, _ = env.reset(seed=0)
    action = agent.predict(obs)                          # one env: an int (continuous: a float32 vector [D])
    obs, reward, terminated, truncated, _ = env.step(action)
    if terminated or truncated:
        agent.reset()                                    # the next observation starts an episode

``predict`` keeps, per env, what the world model needs between steps: the action taken since the
previous search (so the root extends that env's context instead of starting over) and the
context itself (in the model's cache). A batch ``obs [N, *observation_shape]`` acts for N envs at
once; ``reset(env_ids)`` marks the envs whose episodes ended. The search runs as the training
run's did (simulations, dtype, device, discount), each overridable; the model's caches are sized
from the requested simulations and the batch, so any number of simulations works with any
trained model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zerokv.checks import check_bool, check_choice, check_device, check_float, check_positive_int
from zerokv.model.config import DTYPES, WorldModelConfig
from zerokv.model.world_model import NO_ACTION, WorldModel
from zerokv.rl.config import TrainConfig
from zerokv.rl.envs import check_env_id, make_env
from zerokv.rl.factory import env_options, search_config
from zerokv.rl.observations import observations_as_float
from zerokv.search import SampledSearchOutput, SearchConfig, SearchOutput, plan

__all__ = ["Agent", "TrainedPolicy", "load_policy", "resolve_policy_path"]


@dataclass(frozen=True, slots=True)
class TrainedPolicy:
    """What playing a trained agent needs, from a checkpoint or an exported directory."""

    weights: dict
    """The float32 world model's ``state_dict``."""
    model_config: dict
    """``WorldModelConfig`` fields of the trained model."""
    train_config: dict
    """``TrainConfig`` fields of the run (env, search settings, Atari options)."""
    source: str
    """The path it was read from."""


def resolve_policy_path(path: str | Path) -> Path:
    """The file or export directory ``path`` names: a run directory (``zerokv train --out``)
    means its ``best.pt`` (the best-evaluated weights), else its newest checkpoint."""
    from zerokv.model.pretrained import CONFIG_NAME
    from zerokv.rl.checkpoint import latest_checkpoint

    path = Path(path)
    if not path.is_dir() or (path / CONFIG_NAME).is_file() and not (path / "checkpoints").is_dir():
        return path  # a checkpoint file, an export, or a missing path (the loader names it)
    if (path / "best.pt").is_file():
        return path / "best.pt"
    latest = latest_checkpoint(path / "checkpoints")
    if latest is None:
        raise ValueError(f"{path} holds no best.pt and no checkpoints/ckpt_*.pt: not a run directory with "
                         "weights yet, a checkpoint file or a `zerokv export` directory")
    return latest


def load_policy(path: str | Path) -> TrainedPolicy:
    """Reads a run directory, a checkpoint file or an exported directory (ValueError/OSError
    naming what is wrong)."""
    path = resolve_policy_path(path)
    if path.is_dir():
        from safetensors.torch import load_file

        from zerokv.model.pretrained import WEIGHTS_NAME, PretrainedError, read_pretrained_config

        document = read_pretrained_config(path)
        if not (path / WEIGHTS_NAME).is_file():
            raise PretrainedError(f"{path / WEIGHTS_NAME} does not exist")
        if "train_config" not in document:
            raise PretrainedError(f"{path} holds a world model without a training config (no env to play); "
                                  "load it with zerokv.WorldModel.from_pretrained")
        for key in ("world_model_config", "train_config"):
            if not isinstance(document.get(key), dict):
                raise PretrainedError(f"{path}/config.json: {key} must be a mapping of field names to values")
        return TrainedPolicy(load_file(str(path / WEIGHTS_NAME)), document["world_model_config"],
                             document["train_config"], str(path))
    from zerokv.rl.checkpoint import load_checkpoint, policy_fields

    return TrainedPolicy(*policy_fields(load_checkpoint(path), path), str(path))


class Agent:
    """A trained world model and its search, acting in one env or a batch of them (see the
    module docstring). Build it with :meth:`load`."""

    def __init__(self, policy: TrainedPolicy, *, num_simulations: int | None = None, dtype: str | None = None,
                 device: str | None = None, temperature: float = 1.0, max_steps: int | None = None,
                 seed: int = 0, allow_env_import: bool = False) -> None:
        """``num_simulations``, ``dtype`` (of the searching model), ``device``: default the
        training run's. ``temperature``: of ``predict(deterministic=False)``'s sampling from the
        visit counts. ``max_steps``: the episode cap the commands apply (default: the run's
        eval_max_steps). ``seed``: of the search's random draws. ``allow_env_import``: honour a
        ``module:EnvName`` id read from the file (it imports that module: files are data, so
        this is off unless the caller asks)."""
        if not isinstance(policy.train_config, dict) or not isinstance(policy.model_config, dict):
            raise ValueError(f"{policy.source}: its training and model configs must be mappings of field names "
                             "to values")
        self.policy = policy
        saved = {k: v for k, v in policy.train_config.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
        saved.pop("allow_env_import", None)  # a file never allows itself to import code
        check_env_id(saved.get("env"), source=policy.source, allow_import=check_bool("allow_env_import",
                                                                                      allow_env_import))
        device = check_device("device", device or saved.get("device", "cpu"))
        changes: dict = {"device": device, "resume": False, "overwrite": False}
        if num_simulations is not None:
            changes["num_simulations"] = check_positive_int("num_simulations", num_simulations)
        if max_steps is not None:
            changes["eval_max_steps"] = check_positive_int("max_steps", max_steps)
        self.train_config = TrainConfig(**{**saved, **changes})
        """The run's config, with this agent's overrides (env, simulations, Atari options, ...)."""
        self.dtype = check_choice("dtype", dtype or self.train_config.search_dtype, DTYPES)
        self.temperature = check_float("temperature", temperature, low=0.0, low_open=True)
        self.search: SearchConfig = search_config(self.train_config)
        self.rng = np.random.default_rng(seed)
        self._model: WorldModel | None = None
        self.last_search: SearchOutput | SampledSearchOutput | None = None
        """The latest ``predict``'s search (root values, visit counts, search policy per env)."""
        # Per env, the action since its previous search (NO_ACTION: a start): int64 [N], or (continuous)
        # a list of N float32 vectors [D] and NO_ACTIONs.
        self._last: np.ndarray | list = np.zeros(0, np.int64)
        self.model_config(1)  # the file's model config is checked now (unknown fields, bad values) ...
        self._model_for(1)  # ... and against its weights' sizes, before anything plays

    @classmethod
    def load(cls, path: str | Path, **settings) -> Agent:
        """An agent from a run directory (its best.pt, else its newest checkpoint), a checkpoint
        file (``OUT/best.pt``, ``OUT/checkpoints/ckpt_*.pt``) or a ``zerokv export`` directory;
        ``settings`` are :class:`Agent`'s keyword arguments (``num_simulations=50``, ...)."""
        return cls(load_policy(path), **settings)

    # ------------------------------------------------------------------ facts
    @property
    def env_id(self) -> str:
        return self.train_config.env

    @property
    def num_simulations(self) -> int:
        return self.train_config.num_simulations

    @property
    def device(self) -> str:
        return self.train_config.device

    @property
    def max_steps(self) -> int | None:
        """The episode cap of the run's evaluations (None: the env's own limit)."""
        return self.train_config.eval_max_steps

    def model_config(self, env_num: int) -> WorldModelConfig:
        """The searching model's config for ``env_num`` envs: the trained shapes, this agent's
        simulations (the caches are sized from them), dtype and device."""
        unknown = sorted(set(self.policy.model_config) - {f.name for f in dataclasses.fields(WorldModelConfig)})
        if unknown:
            raise ValueError(f"{self.policy.source}: unknown WorldModelConfig fields {unknown}")
        return WorldModelConfig(**{**self.policy.model_config, "device": self.device, "env_num": env_num,
                                   "num_simulations": self.num_simulations, "cache_validation_mode": False,
                                   "dtype": self.dtype})

    def make_env(self, render_mode: str | None = None):
        """One env of the run's id and options (Atari frame skip, sticky actions, ...)."""
        return make_env(self.env_id, options=env_options(self.train_config), render_mode=render_mode)

    # ------------------------------------------------------------------ acting
    def predict(self, obs, deterministic: bool = True):
        """Action(s) for ``obs``: one observation ``[*observation_shape]`` -> an int; a batch
        ``[N, *observation_shape]`` (env i in row i, every call) -> an int64 array ``[N]``. A
        continuous agent (bounded ``Box`` actions) gives float32 vectors: ``[D]``, or ``[N, D]``,
        in [-1, 1] (the env made by :meth:`make_env` rescales them into its bounds).

        ``deterministic``: the most visited root action (greedy evaluation, as ``zerokv eval``
        plays); False samples from the visit counts at ``temperature``. A batch of another size
        than the previous call's starts every env afresh (as :meth:`reset` does).
        """
        obs = np.asarray(obs)
        shape = tuple(self.policy.model_config["observation_shape"])
        single = obs.shape == shape
        if single:
            obs = obs[None]
        elif obs.shape[1:] != shape or obs.shape[0] < 1:
            raise ValueError(f"obs has shape {obs.shape}; {self.env_id} observations are {shape} (one env) or "
                             f"[N, {', '.join(map(str, shape))}] (N envs)")
        model = self._model_for(obs.shape[0])
        out = plan(model, observations_as_float(obs, self.device), config=self.search, rng=self.rng,
                   last_actions=list(self._last) if model.config.continuous else self._last.tolist(), add_noise=False,
                   temperature=0.0 if deterministic else self.temperature)
        continuous = model.config.continuous
        actions = np.array(out.action, np.float32 if continuous else np.int64)  # [N, D] or [N]
        self._last = list(actions) if continuous else actions
        self.last_search = out
        if single:
            return actions[0] if continuous else int(actions[0])
        return actions.copy()

    def reset(self, env_ids: Iterable[int] | int | None = None) -> None:
        """The next observation of these envs (all if None) starts an episode: their context
        is not extended with the previous one's."""
        if env_ids is None:
            env_ids = range(len(self._last))
        ids = [env_ids] if isinstance(env_ids, int | np.integer) else [int(e) for e in env_ids]
        for e in ids:
            if not 0 <= e < len(self._last):
                raise ValueError(f"env id {e}; this agent acts for {len(self._last)} env(s): 0 … "
                                 f"{len(self._last) - 1}")
        for e in ids:
            self._last[e] = NO_ACTION

    def _model_for(self, envs: int) -> WorldModel:
        """The searching model for ``envs`` envs, built (or rebuilt for a new batch size) with the
        trained weights."""
        if self._model is None or self._model.config.env_num != envs:
            from zerokv.model.pretrained import build_checked, check_weights

            weights, config = self.policy.weights, self.model_config(envs)
            shapes = {k: tuple(v.shape) for k, v in weights.items() if hasattr(v, "shape")}
            changes = {k: getattr(config, k) for k in ("device", "env_num", "num_simulations",
                                                       "cache_validation_mode", "dtype")}
            # the config is checked against the weights' size before anything large is allocated
            model = build_checked(WorldModel, self.policy.model_config, changes, shapes, self.policy.source).eval()
            check_weights(weights, {k: tuple(v.shape) for k, v in model.state_dict().items()}, self.policy.source)
            model.load_state_dict(weights)
            self._model = model
            self._last = [NO_ACTION] * envs if config.continuous else np.full(envs, NO_ACTION, np.int64)
        return self._model
