"""``zerokv eval`` and ``zerokv enjoy``: a trained agent, played greedily.

Both read a *policy*: a checkpoint written by ``zerokv train`` (``OUT/best.pt``,
``OUT/checkpoints/ckpt_*.pt``) or a directory written by ``zerokv export`` (weights as
safetensors plus ``config.json``). The search runs as the run's did (simulations, dtype,
device), each overridable.

``eval`` plays N episodes at once (one env each, searched together) and prints each episode's
return and length, then mean ± std; ``--json`` writes all of it as JSON (``-``: to stdout, instead
of the text). ``enjoy`` plays episodes one after another in one env that renders: a window
(``--render human``) or frames (``rgb_array``), and with ``--video DIR`` one MP4 per episode
through gymnasium's ``RecordVideo`` (needs moviepy: ``pip install -e ".[video]"``).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from zerokv.checks import (
    check_bool,
    check_choice,
    check_device,
    check_int,
    check_positive_int,
    install_hint,
)
from zerokv.io import atomic_write_bytes
from zerokv.model.config import DTYPES, Dtype
from zerokv.rl.agent import TrainedPolicy, load_policy  # noqa: F401  (re-exported: their home before zerokv.Agent)
from zerokv.rl.config import DeviceName
from zerokv.rl.envs import VECTOR_ENV_MODES, VectorEnvMode

__all__ = ["EnjoyArgs", "EvalArgs", "PlayArgs", "TrainedPolicy", "enjoy", "evaluate_policy", "load_policy"]

RenderMode = Literal["human", "rgb_array"]
JSON_STDOUT = "-"
"""``--json -`` prints the JSON to stdout instead of the text report."""


@dataclass
class PlayArgs:
    """What `zerokv eval` and `zerokv enjoy` share: the policy, and how its search runs here."""

    checkpoint: str
    """A run directory written by `zerokv train` (its best.pt, else its newest checkpoint), a
    checkpoint (OUT/best.pt: the best-evaluated weights, or OUT/checkpoints/ckpt_*.pt), or a
    directory written by `zerokv export`."""
    num_simulations: int | None = None
    """Simulations per search (default: the training run's)."""
    dtype: Dtype | None = None
    """Dtype of the searching model (default: the training run's search_dtype)."""
    device: DeviceName | None = None
    """Torch device of the searching model (default: the training run's device)."""
    max_steps: int | None = None
    """Cut each episode after this many agent steps (default: the run's eval_max_steps)."""
    threads: int = 2
    """torch.set_num_threads."""
    allow_env_import: bool = False
    """Honour a ``module:EnvName`` env id saved in the checkpoint (it imports that module, i.e. runs
    its code: only for files you trust); without it only ids in gymnasium's registry are made."""

    def __post_init__(self) -> None:
        check_positive_int("threads", self.threads)
        check_bool("allow_env_import", self.allow_env_import)
        if self.num_simulations is not None:
            check_positive_int("num_simulations", self.num_simulations)
        if self.max_steps is not None:
            check_positive_int("max_steps", self.max_steps)
        if self.dtype is not None:
            check_choice("dtype", self.dtype, DTYPES)
        if self.device is not None:
            check_device("device", self.device)


@dataclass
class EvalArgs(PlayArgs):
    """Greedy evaluation of a checkpoint written by `zerokv train` (or a `zerokv export` directory)."""

    episodes: int = 10
    """Episodes to play (one env each, searched together)."""
    seed: int = 12345
    """Seed of the evaluation envs."""
    vector_env: VectorEnvMode = "sync"
    """Step the episodes' envs in this process ("sync") or one process each ("async")."""
    json: str | None = None
    """Also write the per-episode returns, their summary and the settings as JSON to this file
    ("-": print the JSON instead of the text)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("episodes", self.episodes)
        check_int("seed", self.seed, low=0)
        check_choice("vector_env", self.vector_env, VECTOR_ENV_MODES)


@dataclass
class EnjoyArgs(PlayArgs):
    """Watch a trained agent play: render it, or record a video of each episode."""

    episodes: int = 1
    """Episodes to play, one after another."""
    seed: int = 12345
    """Seed of the first episode (episode i: seed + i)."""
    render: RenderMode | None = None
    """Gymnasium render mode: "human" opens a window, "rgb_array" draws frames (default: human, or
    rgb_array with --video)."""
    video: str | None = None
    """Record each episode as an MP4 into this directory (gymnasium's RecordVideo; needs
    pip install -e ".[video]")."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("episodes", self.episodes)
        check_int("seed", self.seed, low=0)
        if self.render is not None:
            check_choice("render", self.render, ("human", "rgb_array"))
        if self.video is not None and self.render == "human":
            raise ValueError("render='human' with --video: a video records rgb_array frames; drop --render "
                             "or pass --render rgb_array")


def _agent(args: PlayArgs):
    """The agent a command plays, with the command's overrides; says what it is doing first
    (loading a large checkpoint takes a while)."""
    from zerokv.rl.agent import Agent, resolve_policy_path

    source = resolve_policy_path(args.checkpoint)
    if source.exists():  # (a missing one is the loader's one-line error, alone on stderr)
        print(f"loading {source} ...", file=sys.stderr, flush=True)
    return Agent.load(args.checkpoint, num_simulations=args.num_simulations, dtype=args.dtype, device=args.device,
                      max_steps=args.max_steps, allow_env_import=args.allow_env_import)


def evaluate_policy(args: EvalArgs) -> dict:
    """Plays ``args.episodes`` greedy episodes; prints and returns the report (the JSON's content)."""
    import torch

    from zerokv.rl.evaluator import evaluate_episodes
    from zerokv.rl.factory import env_options
    from zerokv.version import __version__

    torch.set_num_threads(args.threads)
    agent = _agent(args)
    model_cfg, text = agent.model_config(args.episodes), args.json != JSON_STDOUT
    if text:
        print(f"{agent.env_id}: playing {args.episodes} greedy episodes together (seed {args.seed}, "
              f"{agent.num_simulations} simulations, {model_cfg.dtype} on {model_cfg.device}) ...", file=sys.stderr,
              flush=True)
    played = evaluate_episodes(agent.policy.weights, model_cfg, agent.env_id, episodes=args.episodes,
                               seed=args.seed, search=agent.search, env_options=env_options(agent.train_config),
                               max_steps=agent.max_steps, vector_env=args.vector_env)
    returns = np.asarray(played.returns)
    report = {
        "env": agent.env_id, "checkpoint": agent.policy.source, "seed": args.seed,
        "num_simulations": agent.num_simulations, "dtype": model_cfg.dtype, "device": model_cfg.device,
        "max_steps": agent.max_steps, "zerokv_version": __version__,
        "episodes": [{"return": r, "steps": n, "capped": c}
                     for r, n, c in zip(played.returns, played.lengths, played.capped, strict=True)],
        "mean": float(returns.mean()), "std": float(returns.std()),
        "min": float(returns.min()), "max": float(returns.max()),
    }
    if not text:
        print(json.dumps(report, indent=2))
        return report
    if args.json is not None:
        atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
    print("episode     return   steps")
    for i, episode in enumerate(report["episodes"]):
        cut = "  (cut at max_steps)" if episode["capped"] else ""
        print(f"{i:7d} {episode['return']:10.1f} {episode['steps']:7d}{cut}")
    print(f"mean return {report['mean']:.1f} ± {report['std']:.1f} (min {report['min']:.0f}, "
          f"max {report['max']:.0f}) over {args.episodes} episodes")
    return report


def enjoy(args: EnjoyArgs) -> list[float]:
    """Plays ``args.episodes`` greedy episodes in one rendering env; returns their returns."""
    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    agent = _agent(args)
    render = args.render or ("rgb_array" if args.video is not None else "human")
    if render == "rgb_array":  # frames only: pygame (classic control) needs no display
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    env = agent.make_env(render_mode=render)
    if args.video is not None:
        env = _record_video(env, args.video, agent.env_id)
    returns = []
    try:
        for episode in range(args.episodes):
            agent.reset()  # a new episode: no context from the previous one
            obs, _ = env.reset(seed=args.seed + episode)
            total, steps, done = 0.0, 0, False
            where = f" (recording into {args.video})" if args.video is not None else ""
            bar = tqdm(total=agent.max_steps, desc=f"episode {episode}{where}", unit="step", leave=False,
                       dynamic_ncols=True)
            while not done and (agent.max_steps is None or steps < agent.max_steps):
                action = agent.predict(obs)
                obs, reward, terminated, truncated, _ = env.step(action)
                total, steps, done = total + float(reward), steps + 1, terminated or truncated
                bar.update()
                if render == "rgb_array" and args.video is None:
                    env.render()  # drawn and dropped: what a caller without --video asked for
            bar.close()
            returns.append(total)
            print(f"episode {episode}: return {total:.1f} in {steps} steps" + ("" if done else " (cut at max_steps)"),
                  flush=True)
    finally:
        if args.video is not None:
            print(f"writing the last video into {args.video} ...", file=sys.stderr, flush=True)
        env.close()  # RecordVideo writes the last video here
    if args.video is not None:
        print(f"videos: {', '.join(sorted(p.name for p in Path(args.video).glob('*.mp4')))} in {args.video}")
    return returns


def _record_video(env, directory: str, env_id: str):
    """gymnasium's RecordVideo, every episode; a missing moviepy is an ImportError naming the extra."""
    import gymnasium

    try:
        import moviepy  # noqa: F401
    except ImportError as e:
        raise ImportError(f"--video needs moviepy: {install_hint('video')}") from e
    prefix = env_id.replace("/", "-")
    return gymnasium.wrappers.RecordVideo(env, directory, episode_trigger=lambda _: True, name_prefix=prefix,
                                          disable_logger=True)

