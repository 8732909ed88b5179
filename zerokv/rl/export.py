"""``zerokv export``: a training checkpoint's world model as a directory to share.

``OUT/best.pt`` (or any ``ckpt_*.pt``) becomes ``DIR/model.safetensors`` (the float32 weights,
nothing else: no optimizer, no replay, no code) and ``DIR/config.json`` (the world model's config,
plus the run's training config and where the weights came from). ``zerokv.WorldModel.from_pretrained(DIR)``
loads it; ``zerokv eval`` and ``zerokv enjoy`` play it (``--checkpoint DIR``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ExportArgs", "export"]


@dataclass
class ExportArgs:
    """Export a checkpoint's world model: weights as safetensors plus config JSON."""

    checkpoint: str
    """A checkpoint written by `zerokv train` (OUT/best.pt, OUT/checkpoints/ckpt_*.pt)."""
    out: str
    """Directory to write model.safetensors and config.json into (created; existing files of those
    names are replaced)."""


def export(args: ExportArgs) -> Path:
    """Writes the export; returns its directory."""
    from zerokv.model.pretrained import build_checked, check_weights, save_pretrained
    from zerokv.model.world_model import WorldModel
    from zerokv.rl.checkpoint import load_checkpoint, policy_fields

    state = load_checkpoint(args.checkpoint)
    weights, model_config, train_config = policy_fields(state, args.checkpoint)
    shapes = {k: tuple(v.shape) for k, v in weights.items() if hasattr(v, "shape")}
    model = build_checked(WorldModel, model_config, {"device": "cpu"}, shapes, str(args.checkpoint))
    check_weights(weights, {k: tuple(v.shape) for k, v in model.state_dict().items()}, str(args.checkpoint))
    counters = state.get("counters") if isinstance(state.get("counters"), dict) else {}
    best = counters.get("best_eval_return")
    best = best if isinstance(best, (int, float)) and math.isfinite(best) else None  # -inf before any evaluation
    env = train_config.get("env")
    extra = {"env": env, "train_config": train_config,
             "source": {"checkpoint": str(args.checkpoint), "env_steps": counters.get("env_steps"),
                        "best_eval_return": best}}
    directory = save_pretrained(args.out, {**model_config, "device": "cpu"}, weights, extra)
    print(f"exported {args.checkpoint} ({env}, {counters.get('env_steps')} env steps) -> "
          f"{directory}/model.safetensors, config.json")
    return directory
