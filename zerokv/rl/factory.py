"""A run's parts, derived from its ``TrainConfig``: the env options and env-dependent defaults, the
world model's and the search's configs, the temperature schedule, replay and the collector.

Shared by the in-process trainer (``zerokv.rl.trainer``), the collector actors of a distributed
run (``zerokv.rl.worker``) and ``zerokv eval``, so that every process builds the same things.
"""

from __future__ import annotations

import dataclasses

from zerokv.model.config import WorldModelConfig
from zerokv.rl.collector import Collector, SegmentSink
from zerokv.rl.config import TrainConfig
from zerokv.rl.envs import EnvOptions, env_spec, is_atari, registered_sticky_prob
from zerokv.rl.replay import ReplayBuffer
from zerokv.search import SearchConfig

__all__ = ["check_same_actions", "env_options", "make_collector", "make_replay", "model_config_dict",
           "resolve_env_defaults", "search_config", "temperature", "world_model_config"]


def env_options(cfg: TrainConfig) -> EnvOptions:
    """The env settings of a run (Atari emulator, memory length, action repeat)."""
    return EnvOptions(frame_skip=cfg.frame_skip, sticky_action_prob=cfg.sticky_action_prob,
                      full_action_space=cfg.full_action_space, max_episode_frames=cfg.max_episode_frames,
                      memory_length=cfg.memory_length, action_repeat=cfg.action_repeat)


def resolve_env_defaults(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its env-dependent None defaults made concrete (so config.json records them):
    reward clipping and terminal-on-life-loss on for Atari ids, the id's own sticky actions."""
    atari = is_atari(cfg.env)
    changes: dict = {}
    if cfg.clip_rewards is None:
        changes["clip_rewards"] = atari
    if cfg.terminal_on_life_loss is None:
        changes["terminal_on_life_loss"] = atari
    if atari and cfg.sticky_action_prob is None:
        changes["sticky_action_prob"] = registered_sticky_prob(cfg.env)
    return dataclasses.replace(cfg, **changes)


def world_model_config(cfg: TrainConfig) -> WorldModelConfig:
    """The float32 training model's config (the searches may use a copy in ``cfg.search_dtype``).

    Continuous actions: ``action_dim`` D and ``action_space_size`` K = ``num_sampled_actions``, the
    width of the search policies replay stores (a continuous run does not reanalyse: refused)."""
    spec = env_spec(cfg.env, env_options(cfg))
    if spec.action_dim and cfg.reanalyze_per_iteration:
        raise ValueError(f"reanalyze_per_iteration={cfg.reanalyze_per_iteration} with the continuous-action env "
                         f"{cfg.env!r}: reanalysis of sampled searches is not supported; use 0")
    return WorldModelConfig(
        observation_shape=spec.observation_shape,
        action_space_size=cfg.num_sampled_actions if spec.action_dim else spec.action_space_size,
        action_dim=spec.action_dim,
        embed_dim=cfg.embed_dim, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
        context_length=cfg.context_length, max_tokens=max(cfg.context_length, 2 * (cfg.unroll_steps + 1)),
        env_num=cfg.num_envs, num_simulations=cfg.num_simulations, support_size=cfg.support_size,
        device=cfg.device, cache_backend=cfg.cache_backend, use_new_cache_manager=cfg.use_new_cache_manager,
        compile=cfg.compile,
        encoder=cfg.encoder, encoder_channels=cfg.encoder_channels, encoder_blocks=cfg.encoder_blocks,
    )


def check_same_actions(saved_model_config: dict, model_config: WorldModelConfig, where: str) -> None:
    """Refuse a checkpoint's weights (``saved_model_config``, as stored) for a model of another
    action kind: discrete weights cannot act in a continuous env, nor the other way round."""
    saved = saved_model_config.get("action_dim", 0)  # absent in checkpoints from before continuous actions
    if isinstance(saved, bool) or not isinstance(saved, int) or saved < 0:
        raise ValueError(f"{where}: model_config action_dim={saved!r}; expected an int >= 0")
    if saved != model_config.action_dim:
        kind = lambda d: f"continuous actions (action_dim={d})" if d else "discrete actions (action_dim=0)"  # noqa: E731
        raise ValueError(f"{where} holds a model for {kind(saved)}; this env has {kind(model_config.action_dim)}: "
                         "a discrete checkpoint cannot be resumed on a continuous env, nor the reverse")


def model_config_dict(model_config: WorldModelConfig) -> dict:
    """``model_config`` as a checkpoint stores it (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(model_config).items()}


def search_config(cfg: TrainConfig) -> SearchConfig:
    return SearchConfig(num_simulations=cfg.num_simulations, discount=cfg.discount,
                        dirichlet_alpha=cfg.dirichlet_alpha, exploration_fraction=cfg.exploration_fraction,
                        leaves_per_call=cfg.leaves_per_call, num_sampled_actions=cfg.num_sampled_actions)


def temperature(cfg: TrainConfig, env_steps: int) -> float:
    """The action-sampling temperature after ``env_steps`` env steps (a linear decay)."""
    frac = min(1.0, env_steps / max(1, cfg.temperature_decay_steps))
    return cfg.temperature_start + frac * (cfg.temperature_end - cfg.temperature_start)


def make_replay(cfg: TrainConfig, model_config: WorldModelConfig) -> ReplayBuffer:
    spec = env_spec(cfg.env, env_options(cfg))
    return ReplayBuffer(cfg.replay_capacity, model_config.observation_shape, model_config.action_space_size,
                        observation_dtype=spec.observation_dtype, unroll_steps=cfg.unroll_steps,
                        td_steps=cfg.td_steps, discount=cfg.discount, seed=cfg.seed,
                        sampling=cfg.replay_sampling, action_dim=model_config.action_dim)


def make_collector(cfg: TrainConfig, search_model, sink: SegmentSink, *, seed: int) -> Collector:
    """``cfg.num_envs`` envs searched by ``search_model``, their segments sent to ``sink``."""
    return Collector(cfg.env, cfg.num_envs, search_model, sink, search=search_config(cfg), seed=seed,
                     segment_length=cfg.segment_length, history_steps=cfg.history_steps,
                     keep_root_context=cfg.keep_root_context, env_options=env_options(cfg),
                     clip_rewards=cfg.clip_rewards, terminal_on_life_loss=cfg.terminal_on_life_loss,
                     vector_env=cfg.vector_env)
