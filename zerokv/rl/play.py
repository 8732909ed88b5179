"""``zerokv eval`` and ``zerokv enjoy``: a trained agent, played greedily.

Both read a *policy*: a checkpoint written by ``zerokv train`` (``OUT/best.pt``,
``OUT/checkpoints/ckpt_*.pt``) or a directory written by ``zerokv export`` (weights as
safetensors plus ``config.json``). The search runs as the run's did (simulations, dtype,
device), each overridable.

``eval`` plays N episodes at once (one env each, searched together) and prints each episode's
return and length, then mean ± std; ``--json`` writes all of it as JSON (``-``: to stdout, instead
of the text). ``enjoy`` plays episodes one after another in one env that renders: a window
(``--render human``) or frames (``rgb_array``), and with ``--video DIR`` one MP4 per episode
through gymnasium's ``RecordVideo`` (needs moviepy: ``pip install zerokv[video]``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from zerokv.checks import check_choice, check_device, check_int, check_positive_int
from zerokv.model.config import DTYPES, Dtype
from zerokv.rl.config import DeviceName
from zerokv.rl.envs import VECTOR_ENV_MODES, VectorEnvMode

__all__ = ["EnjoyArgs", "EvalArgs", "PlayArgs", "TrainedPolicy", "enjoy", "evaluate_policy", "load_policy"]

RenderMode = Literal["human", "rgb_array"]
JSON_STDOUT = "-"
"""``--json -`` prints the JSON to stdout instead of the text report."""


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


def load_policy(path: str | Path) -> TrainedPolicy:
    """Reads a checkpoint file or an exported directory (ValueError/OSError naming what is wrong)."""
    path = Path(path)
    if path.is_dir():
        from safetensors.torch import load_file

        from zerokv.model.pretrained import WEIGHTS_NAME, PretrainedError, read_pretrained_config

        document = read_pretrained_config(path)
        if not (path / WEIGHTS_NAME).is_file():
            raise PretrainedError(f"{path / WEIGHTS_NAME} does not exist")
        if "train_config" not in document:
            raise PretrainedError(f"{path} holds a world model without a training config (no env to play); "
                                  "load it with zerokv.WorldModel.from_pretrained")
        return TrainedPolicy(load_file(str(path / WEIGHTS_NAME)), document["world_model_config"],
                             document["train_config"], str(path))
    from zerokv.rl.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    return TrainedPolicy(state["learner"]["model"], state["model_config"], state["config"], str(path))


@dataclass
class PlayArgs:
    """What `zerokv eval` and `zerokv enjoy` share: the policy, and how its search runs here."""

    checkpoint: str
    """Path of a checkpoint written by `zerokv train` (OUT/best.pt: the best-evaluated weights, or
    OUT/checkpoints/ckpt_*.pt), or a directory written by `zerokv export`."""
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

    def __post_init__(self) -> None:
        check_positive_int("threads", self.threads)
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
    pip install zerokv[video])."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("episodes", self.episodes)
        check_int("seed", self.seed, low=0)
        if self.render is not None:
            check_choice("render", self.render, ("human", "rgb_array"))
        if self.video is not None and self.render == "human":
            raise ValueError("render='human' with --video: a video records rgb_array frames; drop --render "
                             "or pass --render rgb_array")


def _resolve(policy: TrainedPolicy, args: PlayArgs, env_num: int):
    """The run's TrainConfig and the searching model's config on this machine, with the
    command's overrides (device checked here: the run may have trained on a device this
    machine lacks)."""
    from zerokv.model.config import WorldModelConfig
    from zerokv.rl.config import TrainConfig

    saved = {k: v for k, v in policy.train_config.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    device = check_device("device", args.device or saved.get("device", "cpu"))
    train_cfg = TrainConfig(**{**saved, "device": device, "resume": False})
    if args.num_simulations is not None:
        train_cfg = dataclasses.replace(train_cfg, num_simulations=args.num_simulations)
    if args.max_steps is not None:
        train_cfg = dataclasses.replace(train_cfg, eval_max_steps=args.max_steps)
    model_cfg = WorldModelConfig(**{**policy.model_config, "device": device, "env_num": env_num,
                                    "num_simulations": train_cfg.num_simulations, "cache_validation_mode": False,
                                    "dtype": args.dtype or train_cfg.search_dtype})
    return train_cfg, model_cfg


def evaluate_policy(args: EvalArgs) -> dict:
    """Plays ``args.episodes`` greedy episodes; prints and returns the report (the JSON's content)."""
    import torch

    from zerokv.rl.evaluator import evaluate_episodes
    from zerokv.rl.factory import env_options, search_config
    from zerokv.version import __version__

    torch.set_num_threads(args.threads)
    policy = load_policy(args.checkpoint)
    train_cfg, model_cfg = _resolve(policy, args, args.episodes)
    played = evaluate_episodes(policy.weights, model_cfg, train_cfg.env, episodes=args.episodes, seed=args.seed,
                               search=search_config(train_cfg), env_options=env_options(train_cfg),
                               max_steps=train_cfg.eval_max_steps, vector_env=args.vector_env)
    returns = np.asarray(played.returns)
    report = {
        "env": train_cfg.env, "checkpoint": policy.source, "seed": args.seed,
        "num_simulations": train_cfg.num_simulations, "dtype": model_cfg.dtype, "device": model_cfg.device,
        "max_steps": train_cfg.eval_max_steps, "zerokv_version": __version__,
        "episodes": [{"return": r, "steps": n, "capped": c}
                     for r, n, c in zip(played.returns, played.lengths, played.capped, strict=True)],
        "mean": float(returns.mean()), "std": float(returns.std()),
        "min": float(returns.min()), "max": float(returns.max()),
    }
    if args.json == JSON_STDOUT:
        print(json.dumps(report, indent=2))
        return report
    if args.json is not None:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{train_cfg.env}: {args.episodes} greedy episodes (seed {args.seed}, {train_cfg.num_simulations} "
          f"simulations, {model_cfg.dtype} on {model_cfg.device})")
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

    from zerokv.model.world_model import NO_ACTION, WorldModel
    from zerokv.rl.envs import make_env
    from zerokv.rl.factory import env_options, search_config
    from zerokv.rl.observations import observations_as_float
    from zerokv.search import plan

    torch.set_num_threads(args.threads)
    policy = load_policy(args.checkpoint)
    train_cfg, model_cfg = _resolve(policy, args, env_num=1)
    render = args.render or ("rgb_array" if args.video is not None else "human")
    if render == "rgb_array":  # frames only: pygame (classic control) needs no display
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    with torch.random.fork_rng(devices=[]):
        model = WorldModel(model_cfg).eval()
    model.load_state_dict(policy.weights)
    env = make_env(train_cfg.env, options=env_options(train_cfg), render_mode=render)
    if args.video is not None:
        env = _record_video(env, args.video, train_cfg.env)
    search, rng, returns = search_config(train_cfg), np.random.default_rng(args.seed), []
    try:
        for episode in range(args.episodes):
            model.clear_caches()  # a new episode: no context from the previous one
            obs, _ = env.reset(seed=args.seed + episode)
            last, total, steps, done = NO_ACTION, 0.0, 0, False
            while not done and (train_cfg.eval_max_steps is None or steps < train_cfg.eval_max_steps):
                out = plan(model, observations_as_float(obs[None], model_cfg.device), config=search, rng=rng,
                           last_actions=[last], add_noise=False, temperature=0.0)
                last = out.action[0] if model_cfg.continuous else int(out.action[0])
                obs, reward, terminated, truncated, _ = env.step(last)
                total, steps, done = total + float(reward), steps + 1, terminated or truncated
                if render == "rgb_array" and args.video is None:
                    env.render()  # drawn and dropped: what a caller without --video asked for
            returns.append(total)
            print(f"episode {episode}: return {total:.1f} in {steps} steps" + ("" if done else " (cut at max_steps)"))
    finally:
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
        raise ImportError("--video needs moviepy: pip install zerokv[video]") from e
    prefix = env_id.replace("/", "-")
    return gymnasium.wrappers.RecordVideo(env, directory, episode_trigger=lambda _: True, name_prefix=prefix,
                                          disable_logger=True)

