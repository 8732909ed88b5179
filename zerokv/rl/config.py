"""``TrainConfig``: every flag of ``zerokv train``, one typed dataclass (the CLI is built from it).

Where a run's values come from, lowest first: the defaults here, a ``--preset`` shipped with zerokv,
a ``--config`` file, the command line's flags (``zerokv.rl.config_files.file_overrides`` merges the
middle two). ``out`` left unset becomes a new directory per run, as cleanrl names them (:func:`default_out`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Annotated

import tyro
import yaml

from zerokv.checks import (
    check_bool,
    check_choice,
    check_device,
    check_float,
    check_int,
    check_positive_int,
)
from zerokv.envs import check_memory_fit, is_memory_env
from zerokv.model.config import DTYPES, CacheBackend, Dtype, Encoder, WorldModelConfig
from zerokv.presets import Preset, preset_path
from zerokv.rl.envs import VECTOR_ENV_MODES, VectorEnvMode, is_atari
from zerokv.rl.learner import VALUE_BOOTSTRAPS, ValueBootstrap
from zerokv.rl.replay import ReplaySampling, check_sampling

DeviceName = Annotated[str, tyro.conf.arg(metavar="{cpu,cuda,cuda:N,mps}")]
"""A torch device name (not a ``Literal``: ``cuda:N``); checked by :func:`zerokv.checks.check_device`."""
RUNS_DIR = "runs"  # where the default --out directories go (relative to the working directory)


@dataclass
class TrainConfig:
    """Train a UniZero agent on a gymnasium env. Defaults suit CartPole-v1 on 2 CPU cores."""

    env: str = "CartPole-v1"
    """Gymnasium env id (Discrete or bounded Box actions, Box observations; Atari ids need zerokv[atari],
    dm_control/... ids zerokv[dmc]); a ``module:EnvName`` id only when typed here (see --allow-env-import)."""
    allow_env_import: bool = False
    """Honour a ``module:EnvName`` env id read from a --config file or --resume checkpoint (it imports,
    i.e. runs, that module: only for files you trust). Never read from a file itself."""
    total_env_steps: int = 30_000
    """Stop after this many env steps (summed over the parallel envs)."""
    seed: int = 0
    """Seed of envs, model init, search noise and replay sampling."""
    out: str | None = None
    """Output directory: checkpoints, TensorBoard events, progress.csv, resolved config (default:
    a new runs/{env}__{seed}__{date-time} per run)."""
    resume: bool = False
    """Continue from the latest checkpoint in --out (which must then be given)."""
    config: str | None = None
    """A YAML or TOML file whose keys override these defaults and the preset (CLI flags override
    the file); --config FILE and --config=FILE alike."""
    preset: Preset | None = None
    """A config shipped with zerokv (zerokv/presets/NAME.yaml; --list-presets shows each, its env and
    what it reached); --config and flags override it."""
    device: DeviceName = "cpu"
    """Torch device."""
    threads: int = 2
    """torch.set_num_threads."""

    # --- search and collection
    num_envs: int = 8
    """Parallel envs searched together (the world model's env_num)."""
    num_simulations: int = 25
    """MCTS simulations per step."""
    discount: float = 0.99
    """Discount of returns."""
    dirichlet_alpha: float = 0.3
    """Root noise concentration."""
    exploration_fraction: float = 0.25
    """Share of the root prior replaced by noise while collecting."""
    temperature_start: float = 1.0
    """Action-sampling temperature at step 0."""
    temperature_end: float = 0.25
    """Temperature reached after --temperature-decay-steps (absolute env steps, so resuming is exact)."""
    temperature_decay_steps: int = 20_000
    """Env steps of the linear temperature decay."""
    leaves_per_call: int = 1
    """Leaves per env in each batched model call of a search (>1: multi-leaf search with virtual
    visits; fewer, wider calls, a slightly different search policy; see zerokv.search.mcts)."""
    num_sampled_actions: int = 20
    """Continuous actions: K actions sampled at each search node (Sampled MuZero)."""
    action_repeat: int = 1
    """Non-Atari envs: repeat each action this many env steps (UniZero uses 2 on DMC)."""
    segment_length: int = 50
    """Steps per game segment pushed to the replay buffer."""
    vector_env: VectorEnvMode = "sync"
    """How the collector's and evaluator's envs step: "sync" (one process, in turn) or "async" (one process
    per env, in parallel: pays where env steps are slow and cores are spare). The results are the same."""
    search_dtype: Dtype = "float32"
    """Dtype of the model the searches use (collection and evaluation): "float32", or
    "bfloat16" for a bf16 copy of the float32 training model, refreshed after every weight update
    (faster matmuls on CPUs with bf16 units; logits 1e-2 to 1e-1 off, see `zerokv bench
    --precision`). Learning and checkpoints stay float32."""

    # --- cache
    cache_backend: CacheBackend | None = None
    """"none", "legacy", "manager" or "paged"; None follows use_new_cache_manager (default: paged)."""
    use_new_cache_manager: bool | None = None
    """The seeds' switch: True → manager, False → legacy."""
    keep_root_context: bool = True
    """After each weight update, rebuild every env's root context from its recent history
    (False: the reference's behaviour, restarting from the current observation alone)."""
    history_steps: int = 12
    """Real steps of history kept per env for that rebuild."""

    # --- model
    embed_dim: int = 64
    """Token width."""
    num_layers: int = 2
    """Transformer blocks."""
    num_heads: int = 2
    """Attention heads."""
    context_length: int = 8
    """Sliding attention window in tokens."""
    support_size: int = 50
    """Categorical value/reward support [-S, S]."""
    encoder: Encoder = "light"
    """Image encoder: "light" (three stride-2 convolutions) or "unizero" (LightZero's
    RepresentationNetworkUniZero: residual downsampling stem, linear projection, SimNorm)."""
    encoder_channels: int = 64
    """Channels of the "unizero" encoder (LightZero: 64)."""
    encoder_blocks: int = 1
    """Residual blocks per stage of the "unizero" encoder (LightZero: 1)."""

    # --- learning
    batch_size: int = 64
    """Sequences per update."""
    unroll_steps: int = 10
    """K: steps per training sequence after the first."""
    td_steps: int = 10
    """n of the n-step value targets."""
    learning_rate: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    grad_clip: float = 5.0
    """Gradient norm clip."""
    fresh_value_targets: bool = True
    """Bootstrap n-step value targets from the current network's value of o_{t+n} at sampling
    time (LightZero) instead of the search value stored at collection (stale early on)."""
    value_bootstrap: ValueBootstrap = "online"
    """Whose value of o_{t+n} the fresh value targets bootstrap from: "online" (the current
    network) or "target" (a momentum copy of the whole network, as LightZero's UniZero does)."""
    target_update_rate: float = 0.05
    """UniZero's momentum target network: target ← (1-rate)·target + rate·online after each update."""
    target_label_smoothing: float = 0.0
    """ε in [0, 1): the two-hot reward and value targets become (1-ε)·two_hot + ε/N over the N
    support bins (LightZero's label_smoothing_eps); 0: plain two-hot."""
    replay_ratio: float = 0.5
    """Updates per env step."""
    collect_steps: int = 16
    """Vector steps per iteration (iteration = collect, then update)."""
    min_replay_steps: int = 400
    """Env steps stored before the first update."""
    replay_capacity: int = 100_000
    """Replay buffer capacity in env steps."""
    replay_sampling: ReplaySampling = "uniform"
    """Where training sequences start: "uniform" over all stored steps, or "segment_start" (at a segment's
    first step; unroll_steps + 1 >= segment_length: whole segments, i.e. episodes, as memory tasks need)."""
    reanalyze_per_iteration: int = 0
    """Stored positions whose search policy and root value are recomputed each iteration with
    the current weights (MuZero Reanalyse; value targets follow); 0: off."""
    reanalyze_batch: int = 256
    """Roots searched together in one cache arena of their own during reanalysis (the reference
    runs them num_envs at a time)."""

    # --- evaluation, logging, checkpoints
    eval_every: int = 2_000
    """Env steps between evaluations (0: only at the end); early enough that a short or
    interrupted run has been evaluated."""
    eval_episodes: int = 10
    """Greedy evaluation episodes."""
    final_eval_episodes: int | None = None
    """Episodes of the evaluation at the end of the budget (None: eval_episodes), so periodic
    evaluations can stay cheap while the final one is wide."""
    stop_return: float | None = None
    """Stop once an evaluation's mean return reaches this. None: the env's registered
    reward_threshold (475 for CartPole-v1), or never if it has none; inf: never stop early."""
    checkpoint_every: int = 1_000
    """Env steps between checkpoints (always one at the end): a run stopped early still leaves
    one to --resume from and to evaluate."""
    checkpoint_every_minutes: float | None = None
    """Also checkpoint once this many minutes of wall time have passed since the last checkpoint
    (or the start); None: by env steps only. SIGTERM and SIGINT always checkpoint before exiting."""
    progress: bool = True
    """Show a progress bar."""
    track: bool = False
    """Also log the scalars and the config to Weights & Biases (pip install -e ".[track]"; set
    WANDB_MODE=offline to log locally, into OUT/wandb)."""
    wandb_project: str = "zerokv"
    """W&B project of --track."""
    wandb_entity: str | None = None
    """W&B entity (team or user) of --track (default: your default entity)."""
    learner_dtype: Dtype = "float32"
    """Dtype of the learner's forward passes: "float32", or "bfloat16" to run them (and the
    backward's matmuls and convolutions) under CPU autocast; weights, gradients, optimizer state
    and losses stay float32."""
    compile: bool = False
    """torch.compile (inductor) the learner's update (forward, losses, backward) and the searches'
    recurrent step: the same results to float32 rounding after a compile at the first update and
    search (minutes on two cores; reported in the log). Off by default: docs/compile.md has the
    measurements (where it pays end to end, warm-up included). Falls back to eager, with one
    warning, where compilation is unavailable."""

    # --- Atari (ALE/... and ...NoFrameskip ids); defaults follow LightZero's UniZero Atari setup
    clip_rewards: bool | None = None
    """Train on sign(reward), as DQN and LightZero do (evaluation and logged returns stay raw).
    None: on for Atari ids, off for others; the resolved value is saved in config.json."""
    terminal_on_life_loss: bool | None = None
    """While collecting, a lost life ends the segment as terminal and restarts the root context;
    the game goes on (LightZero's episode_life; evaluation never does this). Atari ids only.
    None: on for Atari ids."""
    frame_skip: int = 4
    """Atari: emulator frames per agent step (max-pooled over the last two)."""
    sticky_action_prob: float | None = None
    """Atari: probability that the emulator repeats the previous action. None: the id's own
    (0.25 for ALE/...-v5; 0.0 for ...NoFrameskip-v4, LightZero's ids)."""
    full_action_space: bool = False
    """Atari: all 18 actions instead of the game's minimal set."""
    max_episode_frames: int | None = None
    """Atari: emulator frames after which any episode, in training and evaluation, is truncated
    (108,000 = 27,000 agent steps at frame skip 4, the Atari 100k protocol). None: the id's own."""
    memory_length: int | None = None
    """Memory tasks (zerokv/VisualMatch-v0, zerokv/KeyToDoor-v0): steps of the distractor phase between
    what must be remembered and where it pays (None: the env's 30). A whole episode must fit both
    context_length (2 tokens a step) and unroll_steps."""
    eval_max_steps: int | None = None
    """Evaluation episodes are cut after this many agent steps (None: only the env's own limit,
    e.g. 500 for CartPole-v1, 27,000 agent steps = 108,000 frames for ALE/...-v5)."""

    # --- run directory
    overwrite: bool = False
    """Start afresh in a non-empty --out: delete the previous run's checkpoints, replay
    snapshot, progress.csv, TensorBoard events and config (other files are never deleted)."""
    keep_checkpoints: int = 3
    """Training checkpoints kept in OUT/checkpoints (older ones are deleted; best.pt is apart)."""
    save_replay: bool = True
    """Write a replay snapshot with every checkpoint (only the newest is kept), so --resume
    continues exactly; without one, a resumed run refills replay by collecting."""

    # --- collectors on Ray (zerokv[ray]; the learner and replay stay in this process, on --device)
    collectors: int = 0
    """Collector actors, each with its own --num-envs envs, search model and caches, searching
    while this process learns (0: collect in this process, as always; Ray is never imported)."""
    weight_sync_every: int = 1
    """Learner updates between weight publications (one ray.put each, made when a collector's
    next call is sent); a collector takes the newest at the start of a call, clears its caches and
    rebuilds its root contexts."""
    collector_queue: int = 1
    """Calls queued per collector behind the running one: 1 keeps it searching while the learner
    trains, for one call more of policy lag; 0: each collector waits for the learner."""
    collector_cpus: float = 1.0
    """CPUs each collector actor asks Ray for (its torch threads: that, rounded down, at least 1)."""
    collector_gpus: float = 0.0
    """GPUs each collector actor asks Ray for; more than 0 searches on cuda."""
    collector_restarts: int = 3
    """Times Ray restarts a collector whose process died (its calls are retried); then the run fails."""
    collector_timeout: float = 300.0
    """Seconds without a result from a collector before the run fails, naming it."""
    ray_address: str | None = None
    """Join this Ray cluster ("auto" or HOST:PORT); None starts a local one bound to 127.0.0.1."""

    def __post_init__(self) -> None:
        """Every field is checked here, before anything runs: a bad value fails at construction
        (the command line, a config file, a checkpoint's config), never mid-run."""
        positive = ("total_env_steps", "num_envs", "num_simulations", "leaves_per_call", "segment_length",
                    "history_steps", "embed_dim", "num_layers", "num_heads", "context_length", "support_size",
                    "batch_size", "unroll_steps", "td_steps", "collect_steps", "replay_capacity", "eval_episodes",
                    "checkpoint_every", "threads", "reanalyze_batch", "encoder_channels", "encoder_blocks",
                    "num_sampled_actions", "action_repeat", "frame_skip", "keep_checkpoints")
        for name in positive:
            check_positive_int(name, getattr(self, name))
        check_int("seed", self.seed, low=0)
        check_int("reanalyze_per_iteration", self.reanalyze_per_iteration, low=0, note=" (0: off)")
        check_int("eval_every", self.eval_every, low=0, note=" (0: only at the end)")
        check_int("temperature_decay_steps", self.temperature_decay_steps, low=0)
        check_int("min_replay_steps", self.min_replay_steps, low=0, high=self.replay_capacity,
                  note=f" (updates start once this many steps are stored; replay_capacity={self.replay_capacity})")
        for name in ("learning_rate", "grad_clip", "replay_ratio", "dirichlet_alpha"):
            check_float(name, getattr(self, name), low=0.0, low_open=True)
        for name in ("weight_decay", "temperature_start", "temperature_end"):
            check_float(name, getattr(self, name), low=0.0)
        for name in ("discount", "exploration_fraction"):
            check_float(name, getattr(self, name), low=0.0, high=1.0)
        check_float("target_update_rate", self.target_update_rate, low=0.0, high=1.0, low_open=True)
        check_float("target_label_smoothing", self.target_label_smoothing, low=0.0, high=1.0, high_open=True,
                    note=" (0: plain two-hot targets)")
        for name, choices in (("value_bootstrap", VALUE_BOOTSTRAPS), ("vector_env", VECTOR_ENV_MODES),
                              ("search_dtype", DTYPES), ("learner_dtype", DTYPES)):
            check_choice(name, getattr(self, name), choices)
        check_sampling(self.replay_sampling, unroll_steps=self.unroll_steps, segment_length=self.segment_length)
        if self.value_bootstrap == "target" and self.fresh_value_targets is not True:
            raise ValueError("value_bootstrap='target' bootstraps the fresh value targets; it needs "
                             f"fresh_value_targets=True (got {self.fresh_value_targets!r})")
        if self.final_eval_episodes is not None:
            check_positive_int("final_eval_episodes", self.final_eval_episodes, note=" (or None: eval_episodes)")
        if self.checkpoint_every_minutes is not None:
            check_float("checkpoint_every_minutes", self.checkpoint_every_minutes, low=0.0, low_open=True,
                        note=" (or None: by env steps only)")
        if self.stop_return is not None:
            check_float("stop_return", self.stop_return, allow_inf=True,
                        note=", inf (never stop early) or None (the env's threshold)")
        for name in ("resume", "keep_root_context", "fresh_value_targets", "progress", "track", "allow_env_import",
                     "full_action_space", "overwrite", "save_replay", "compile"):
            check_bool(name, getattr(self, name))
        for name in ("env", "wandb_project"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name}={getattr(self, name)!r}; must be a non-empty string")
        for name in ("out", "config", "wandb_entity"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name}={value!r}; must be a non-empty string or None")
        if self.resume and self.out is None:
            raise ValueError("resume=True needs --out: the run directory to continue")
        if self.preset is not None:
            preset_path(self.preset)  # a ValueError naming the presets
        check_device("device", self.device)
        self._check_model_fields()
        self._check_run_fields()
        self._check_collector_fields()

    def _check_model_fields(self) -> None:
        """The model's fields together (heads dividing embed_dim, an even context, the cache
        backend's switches, …), by the model config's own checks: the env's observation and
        action shapes are not known yet, so stand-ins take their place."""
        WorldModelConfig(
            observation_shape=(1,), action_space_size=2, embed_dim=self.embed_dim, num_layers=self.num_layers,
            num_heads=self.num_heads, context_length=self.context_length,
            max_tokens=max(self.context_length, 2 * (self.unroll_steps + 1)), env_num=self.num_envs,
            num_simulations=self.num_simulations, support_size=self.support_size,
            cache_backend=self.cache_backend, use_new_cache_manager=self.use_new_cache_manager,
            encoder=self.encoder, encoder_channels=self.encoder_channels, encoder_blocks=self.encoder_blocks,
        )

    def _check_run_fields(self) -> None:
        """Checks of the Atari and run-directory fields."""
        for name in ("clip_rewards", "terminal_on_life_loss"):
            if getattr(self, name) is not None:
                check_bool(name, getattr(self, name))
        if self.sticky_action_prob is not None:
            check_float("sticky_action_prob", self.sticky_action_prob, low=0.0, high=1.0,
                        note=" (or None: the env id's own)")
        if self.max_episode_frames is not None:
            check_positive_int("max_episode_frames", self.max_episode_frames, note=" (or None: the env id's own)")
        if self.eval_max_steps is not None:
            check_positive_int("eval_max_steps", self.eval_max_steps, note=" (or None: the env's own limit)")
        if self.memory_length is not None or is_memory_env(self.env):
            if self.memory_length is not None:
                check_positive_int("memory_length", self.memory_length)
            check_memory_fit(self.env, self.memory_length, context_length=self.context_length,  # or: takes none
                             unroll_steps=self.unroll_steps, history_steps=self.history_steps if self.keep_root_context else None)
        if self.terminal_on_life_loss and not is_atari(self.env):
            raise ValueError(f"terminal_on_life_loss=True needs an Atari env with lives; env={self.env!r} is not one")
        if self.overwrite and self.resume:
            raise ValueError("resume=True and overwrite=True: choose one (continue the run in --out, or delete it)")

    def _check_collector_fields(self) -> None:
        """Checks of the Ray collectors' fields (checked even with collectors=0)."""
        check_int("collectors", self.collectors, low=0, note=" (0: collect in this process)")
        check_positive_int("weight_sync_every", self.weight_sync_every)
        check_int("collector_queue", self.collector_queue, low=0)
        check_int("collector_restarts", self.collector_restarts, low=0)
        for name in ("collector_cpus", "collector_gpus"):
            check_float(name, getattr(self, name), low=0.0)
        check_float("collector_timeout", self.collector_timeout, low=0.0, low_open=True)
        if self.ray_address is not None and (not isinstance(self.ray_address, str) or not self.ray_address):
            raise ValueError(f"ray_address={self.ray_address!r}; must be \"auto\", HOST:PORT or None (a local cluster)")
        if self.ray_address is not None and self.collectors == 0:
            raise ValueError(f"ray_address={self.ray_address!r} with collectors=0: the address is only used by "
                             "Ray collectors; give --collectors N or drop --ray-address")

    @property
    def iteration_env_steps(self) -> int:
        return self.collect_steps * self.num_envs

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The config as YAML in field order: what a run prints at start; a valid ``--config`` file."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)


def default_out(cfg: TrainConfig, now: float | None = None) -> str:
    """A new run directory per run, as cleanrl names them: ``runs/ALE-Pong-v5__0__20261130-141500``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{RUNS_DIR}/{cfg.env.replace('/', '-')}__{cfg.seed}__{stamp}"


def with_out(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``out`` made concrete (:func:`default_out` if unset)."""
    return cfg if cfg.out is not None else dataclasses.replace(cfg, out=default_out(cfg))
