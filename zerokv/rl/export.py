"""``zerokv export``: a training checkpoint's world model as a directory to share.

``OUT/best.pt`` (or any ``ckpt_*.pt``, or a run directory: its best.pt) becomes ``DIR/model.safetensors`` (the float32 weights,
nothing else: no optimizer, no replay, no code) and ``DIR/config.json`` (the world model's config,
plus the run's training config and where the weights came from) and ``DIR/README.md``, a model
card (env, evaluation return, settings, how to load it with ``zerokv.Agent``). ``zerokv.WorldModel.from_pretrained(DIR)``
loads it; ``zerokv eval`` and ``zerokv enjoy`` play it (``--checkpoint DIR``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

from zerokv.version import __version__

__all__ = ["CARD_NAME", "ExportArgs", "export", "model_card"]

CARD_NAME = "README.md"
"""The export's model card."""


@dataclass
class ExportArgs:
    """Export a checkpoint's world model: weights as safetensors plus config JSON."""

    checkpoint: str
    """A run directory written by `zerokv train` (its best.pt, else its newest checkpoint) or a
    checkpoint (OUT/best.pt, OUT/checkpoints/ckpt_*.pt)."""
    out: str
    """Directory to write model.safetensors and config.json into (created; existing files of those
    names are replaced)."""


def export(args: ExportArgs) -> Path:
    """Writes the export and its model card; returns its directory."""
    from zerokv.model.pretrained import build_checked, check_weights, save_pretrained
    from zerokv.model.world_model import WorldModel
    from zerokv.rl.agent import resolve_policy_path
    from zerokv.rl.checkpoint import load_checkpoint, policy_fields

    source = resolve_policy_path(args.checkpoint)
    if source.is_file():  # (a missing one is the loader's one-line error, alone on stderr)
        print(f"reading {source} ...", file=sys.stderr, flush=True)
    state = load_checkpoint(source)
    weights, model_config, train_config = policy_fields(state, source)
    shapes = {k: tuple(v.shape) for k, v in weights.items() if hasattr(v, "shape")}
    model = build_checked(WorldModel, model_config, {"device": "cpu"}, shapes, str(source))
    check_weights(weights, {k: tuple(v.shape) for k, v in model.state_dict().items()}, str(source))
    counters = state.get("counters") if isinstance(state.get("counters"), dict) else {}
    best = counters.get("best_eval_return")
    best = best if isinstance(best, (int, float)) and math.isfinite(best) else None  # -inf before any evaluation
    env = train_config.get("env")
    extra = {"env": env, "train_config": train_config,
             "source": {"checkpoint": str(source), "env_steps": counters.get("env_steps"),
                        "best_eval_return": best}}
    print(f"writing {args.out} ...", file=sys.stderr, flush=True)
    directory = save_pretrained(args.out, {**model_config, "device": "cpu"}, weights, extra)
    (directory / CARD_NAME).write_text(model_card(directory, extra, model_config))
    print(f"exported {source} ({env}, {counters.get('env_steps')} env steps) -> "
          f"{directory}/model.safetensors, config.json, {CARD_NAME}")
    return directory


def model_card(directory: Path, extra: dict, model_config: dict) -> str:
    """The export's README.md: what the agent plays, how it was trained, what it reached, how to
    load it (as the model cards of Stable-Baselines3's hub exports)."""
    cfg, source = extra["train_config"], extra["source"]
    best = source["best_eval_return"]
    reached = (f"{best:.1f} (the best mean greedy evaluation return over {cfg.get('eval_episodes')} episodes, "
               f"at {source['env_steps']:,} env steps)" if best is not None else "not evaluated")
    steps = source["env_steps"]
    keys = ("num_simulations", "search_dtype", "embed_dim", "num_layers", "num_heads", "context_length",
            "support_size", "discount", "td_steps", "unroll_steps", "batch_size", "learning_rate",
            "replay_ratio", "seed", "preset")
    rows = "\n".join(f"| {k} | {cfg.get(k)} |" for k in keys if k in cfg)
    return f"""# zerokv agent: {cfg.get('env')}

A UniZero-style world model (transformer, {model_config.get('num_layers')} layers, embed
{model_config.get('embed_dim')}) trained with zerokv {__version__} for {steps:,} env steps, with a
{cfg.get('num_simulations')}-simulation Monte Carlo Tree Search.

- **Env:** `{cfg.get('env')}`
- **Evaluation return:** {reached}
- **Weights:** `model.safetensors` (float32); `config.json` holds the model's and the run's config.

## Use it

```python
import zerokv

agent = zerokv.Agent.load("{directory}")        # num_simulations=..., dtype=... override the run's
env = agent.make_env()
obs, _ = env.reset(seed=0)
done = False
while not done:
    obs, reward, terminated, truncated, _ = env.step(agent.predict(obs))
    done = terminated or truncated
```

or from the shell: `zerokv eval --checkpoint {directory}` (returns), `zerokv enjoy --checkpoint
{directory} --video videos/` (a video per episode).

## Training settings

| setting | value |
|---|---|
{rows}

Every setting is in `config.json` (`train_config`).
"""
