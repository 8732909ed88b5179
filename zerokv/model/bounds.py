"""A world model's config read from a file, bounded by the weights that came with it.

A config file (an export's ``config.json``, a checkpoint's ``model_config``) could ask for a model
of any size: ``num_layers=100000`` or a huge ``embed_dim`` would allocate gigabytes before a single
weight is compared. The weights beside it cannot lie about their own size (a safetensors header's
offsets must fit the file; a checkpoint's tensors are in memory already), so each architecture
field is checked against a lower bound of the parameters it implies, before anything is built:

    num_layers * (4 + 2 * mlp_ratio) * embed_dim**2   (qkv, out projection and MLP of each block)
    action_space_size * embed_dim                      (the action embedding; discrete actions)
    action_dim * embed_dim                             (the action projection; continuous actions)
    (2 * support_size + 1) * embed_dim                 (the value head's output layer)
    observation_shape[0] * embed_dim (vector) or C * 32 * 16 (image)   (the encoder's first layer)

Each bound is below the real parameter count of :class:`zerokv.WorldModel`, so a genuine pair of
files always passes. The fields that size the caches, not the weights (``env_num``,
``num_simulations``, ``max_tokens``, ``max_cache_size``, pool sizes, and a continuous model's
``action_space_size``: K, the actions sampled per search node, which no weight depends on) are
bounded by :data:`FILE_CACHE_CEILINGS`; a caller who wants more passes them explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from zerokv.model.config import WorldModelConfig

__all__ = ["FILE_CACHE_CEILINGS", "FILE_NODE_CEILING", "FILE_SAMPLED_ACTIONS_CEILING", "check_config_fits",
           "parameter_count"]

FILE_CACHE_CEILINGS: dict[str, int] = {
    "env_num": 4096, "num_simulations": 10_000, "max_tokens": 65_536, "max_cache_size": 1_000_000,
    "init_pool_size": 1_000_000, "recur_pool_size": 1_000_000,
}
"""Largest cache-sizing value taken from a file (far above any published setting)."""
FILE_SAMPLED_ACTIONS_CEILING = 1024
"""Largest K (a continuous model's ``action_space_size``, samples per search node) taken from a file:
the search's trees hold K children per node."""
FILE_NODE_CEILING = 1 << 20
"""Largest ``env_num * num_simulations`` taken from a file: the paged arena preallocates rows for
every node of one search."""


def _lower_bounds(config: WorldModelConfig, n: int) -> Iterable[tuple[str, int, int, int]]:
    """``(field, its value, parameters it implies at least, the largest value n parameters allow)``,
    each field's bound given the fields checked before it."""
    e, r, layers = config.embed_dim, config.mlp_ratio, config.num_layers
    block = (4 + 2 * r) * e * e  # one transformer block's weight matrices
    yield "embed_dim", e, block, math.isqrt(n // (4 + 2 * r))
    yield "mlp_ratio", r, 2 * r * e * e, n // (2 * e * e)
    yield "num_layers", layers, layers * block, n // block
    if config.continuous:
        yield "action_dim", config.action_dim, config.action_dim * e, n // e
    else:
        yield "action_space_size", config.action_space_size, config.action_space_size * e, n // e
    yield "support_size", config.support_size, 2 * config.support_size * e, n // (2 * e)
    first = config.observation_shape[0]
    per = 32 * 16 if config.obs_is_image else 2 * e
    yield "observation_shape[0]", first, first * per, n // per


def check_config_fits(config: WorldModelConfig, parameters: int, source: str, *,
                      explicit: Iterable[str] = ()) -> None:
    """Raises ValueError naming the field, its value and the most ``parameters`` allow, unless
    ``config`` (read from ``source``) can describe a model of ``parameters`` weights; cache fields
    not in ``explicit`` (the caller's own choices) must stay under the file ceilings."""
    for name, value, needed, allowed in _lower_bounds(config, parameters):
        if needed > parameters:
            raise ValueError(f"{source}: {name}={value} needs at least {needed:,} parameters but the weights hold "
                             f"{parameters:,}; allowed: at most {allowed} with these weights")
    explicit = set(explicit)
    k = config.action_space_size
    if config.continuous and "action_space_size" not in explicit and k > FILE_SAMPLED_ACTIONS_CEILING:
        raise ValueError(f"{source}: action_space_size={k} sampled actions per node (action_dim={config.action_dim}); "
                         f"allowed from a file: at most {FILE_SAMPLED_ACTIONS_CEILING} (pass action_space_size= yourself)")
    for name, ceiling in FILE_CACHE_CEILINGS.items():
        value = getattr(config, name)
        if name not in explicit and value is not None and value > ceiling:
            raise ValueError(f"{source}: {name}={value}; allowed from a file: at most {ceiling} "
                             f"(pass {name}= yourself for more)")
    if not {"env_num", "num_simulations"} & explicit and config.env_num * config.num_simulations > FILE_NODE_CEILING:
        raise ValueError(f"{source}: env_num={config.env_num} x num_simulations={config.num_simulations} nodes; "
                         f"allowed from a file: at most {FILE_NODE_CEILING} (pass env_num= or num_simulations=)")


def parameter_count(shapes: Iterable[Iterable[int]]) -> int:
    """Elements of tensors of these shapes."""
    return sum(math.prod(shape) for shape in shapes)
