"""Files an attacker could hand zerokv: checkpoints and export directories with chosen fields,
their hashes recomputed (a hash is an integrity check, not a signature)."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import torch

from zerokv import WorldModel, WorldModelConfig
from zerokv.rl.checkpoint import save_checkpoint
from zerokv.rl.config import TrainConfig

TINY_MODEL = dict(observation_shape=(4,), action_space_size=2, embed_dim=16, num_layers=1, num_heads=2,
                  context_length=4, max_tokens=4, env_num=1, num_simulations=2, support_size=5)


def tiny_model() -> WorldModel:
    torch.manual_seed(0)
    return WorldModel(WorldModelConfig(**TINY_MODEL)).eval()


def policy_payload(env: str = "CartPole-v1", model: WorldModel | None = None) -> dict:
    """What `zerokv train` saves, for a tiny model (the fields eval, enjoy and export read)."""
    model = model or tiny_model()
    train = TrainConfig(embed_dim=16, num_layers=1, num_heads=2, context_length=4, support_size=5,
                        num_simulations=2, unroll_steps=1).to_dict()
    train["env"] = env
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(model.config).items()}
    return {"config": train, "model_config": config, "learner": {"model": model.state_dict()},
            "counters": {"env_steps": 8, "best_eval_return": 1.0}}


def write_checkpoint(path: Path, payload: dict) -> Path:
    save_checkpoint(path, payload)  # the header's SHA-256 recomputed over whatever payload
    return path


def write_export(directory: Path, payload: dict) -> Path:
    model = WorldModel(WorldModelConfig(**payload["model_config"]))
    model.load_state_dict(payload["learner"]["model"])
    model.save_pretrained(directory, extra={"env": payload["config"]["env"], "train_config": payload["config"]})
    return directory


def evil_module(directory: Path, name: str = "evilmod") -> Path:
    """A module that leaves `directory/MARKER` when imported (and registers an env, as a real
    `module:EnvName` package would)."""
    marker = directory / "MARKER"
    (directory / f"{name}.py").write_text(textwrap.dedent(f"""
        import pathlib
        pathlib.Path({str(marker)!r}).write_text("imported")
        import gymnasium
        gymnasium.register("Evil-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv", max_episode_steps=20)
    """))
    return marker


def rewrite_config_json(directory: Path, **changes) -> None:
    path = directory / "config.json"
    document = json.loads(path.read_text())
    for key, value in changes.items():
        document["world_model_config"][key] = value
    path.write_text(json.dumps(document))
