"""The search with a world model: ``initial_inference`` at the roots, then ``muzero_search``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zerokv.search.checks import check_call
from zerokv.search.config import SearchConfig
from zerokv.search.mcts import muzero_search
from zerokv.search.records import (
    Expansion,
    RecurrentFn,
    RecurrentFnOutput,
    RootFnOutput,
    SearchOutput,
)
from zerokv.search.sampled import SampledSearchOutput, sampled_search

__all__ = ["SearchConfig", "model_recurrent_fn", "plan", "search_from_roots"]


def plan(
    world_model, obs, *, config: SearchConfig, rng: np.random.Generator,
    env_ids: Sequence[int] | None = None, last_actions: Sequence[int] | None = None,
    legal_actions_mask: np.ndarray | None = None, add_noise: bool = True, temperature: float = 1.0,
) -> SearchOutput | SampledSearchOutput:
    """Search from the current observations of a batch of envs with the world model's caches.

    Check, then change: every argument is checked before ``initial_inference`` stores a root, so
    a refused call leaves the model's caches as they were."""
    batch = len(env_ids) if env_ids is not None else (len(obs) if hasattr(obs, "__len__") else 0)
    if batch < 1:
        raise ValueError("plan: an empty batch (no observations); give one observation per env")
    model_config = getattr(world_model, "config", None)  # a stand-in model (tests) may have none
    if _continuous(world_model):
        _no_mask(legal_actions_mask)
        check_call(config, rng, None, add_noise, temperature, batch, config.num_sampled_actions)
    else:
        num_actions = (model_config.action_space_size if model_config is not None
                       else np.shape(legal_actions_mask)[-1] if legal_actions_mask is not None else 1)
        check_call(config, rng, legal_actions_mask, add_noise, temperature, batch, num_actions)
    roots = world_model.initial_inference(obs, env_ids=env_ids, last_actions=last_actions)
    return search_from_roots(world_model, roots, config=config, rng=rng, env_ids=env_ids,
                             legal_actions_mask=legal_actions_mask, add_noise=add_noise, temperature=temperature)


def search_from_roots(
    world_model, roots, *, config: SearchConfig, rng: np.random.Generator, env_ids: Sequence[int] | None = None,
    legal_actions_mask: np.ndarray | None = None, add_noise: bool = True, temperature: float = 1.0,
) -> SearchOutput | SampledSearchOutput:
    """Search from roots the world model has just inferred and stored (an ``InferenceOutput`` of
    ``initial_inference`` or ``initial_inference_from_history`` for the same ``env_ids``).

    A continuous-action model (``config.action_dim`` > 0) is searched by ``sampled_search`` and
    gives a :class:`~zerokv.search.sampled.SampledSearchOutput` (it has no legal-action mask)."""
    root = RootFnOutput(
        value=roots.value.cpu().numpy(), policy_logits=roots.policy_logits.cpu().numpy(),
        latent=roots.latent_state,
    )
    if _continuous(world_model):
        _no_mask(legal_actions_mask)
        return sampled_search(root, model_recurrent_fn(world_model, env_ids), config, rng=rng,
                              add_noise=add_noise, temperature=temperature)
    return muzero_search(root, model_recurrent_fn(world_model, env_ids), config, rng=rng,
                         legal_actions_mask=legal_actions_mask, add_noise=add_noise, temperature=temperature)


def _no_mask(legal_actions_mask) -> None:
    if legal_actions_mask is not None:
        raise ValueError("legal_actions_mask with a continuous-action model: a continuous search has no "
                         "action mask (pass None)")


def _continuous(world_model) -> bool:
    """True for a continuous-action world model (a stand-in model without a config is discrete)."""
    config = getattr(world_model, "config", None)
    return bool(getattr(config, "action_dim", 0))


def model_recurrent_fn(world_model, env_ids: Sequence[int] | None = None) -> RecurrentFn:
    """The search's ``recurrent_fn`` for a world model whose roots tree b = env ``env_ids[b]``
    (default: env b): each request is one batched ``recurrent_inference``."""
    envs_of_tree = None if env_ids is None else [int(e) for e in env_ids]

    def recurrent_fn(request: Expansion) -> RecurrentFnOutput:
        # One row per tree, or (multi-leaf) several rows per tree: tree_index names each row's tree.
        trees = request.tree_index.tolist()
        envs = trees if envs_of_tree is None else [envs_of_tree[t] for t in trees]
        out = world_model.recurrent_inference(request.parent_latent, request.action, env_ids=envs,
                                              parent_ids=request.parent_id, child_ids=request.child_id)
        return RecurrentFnOutput(
            reward=out.reward.cpu().numpy(), value=out.value.cpu().numpy(),
            policy_logits=out.policy_logits.cpu().numpy(), latent=out.latent_state,
        )

    return recurrent_fn
