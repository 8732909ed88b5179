"""The search with a world model: ``initial_inference`` at the roots, then ``muzero_search``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zerokv.search.mcts import RecurrentFnOutput, RootFnOutput, SearchOutput, muzero_search


@dataclass
class SearchConfig:
    """Knobs of one MCTS search (MuZero's defaults)."""

    num_simulations: int = 50
    """Simulations per search (one batched recurrent_inference each)."""
    discount: float = 0.997
    """Per-step discount of backed-up returns."""
    pb_c_base: float = 19652.0
    """pUCT base."""
    pb_c_init: float = 1.25
    """pUCT initial exploration weight."""
    dirichlet_alpha: float = 0.3
    """Root Dirichlet noise concentration."""
    exploration_fraction: float = 0.25
    """Share of the root prior replaced by noise (collection only)."""
    leaves_per_call: int = 1
    """Leaves expanded per env in each batched recurrent_inference call (>1: multi-leaf mode with
    virtual visits; changes the search policy, see zerokv.search.mcts)."""


def plan(
    world_model, obs, *, config: SearchConfig, rng: np.random.Generator,
    env_ids: Sequence[int] | None = None, last_actions: Sequence[int] | None = None,
    legal_actions_mask: np.ndarray | None = None, add_noise: bool = True, temperature: float = 1.0,
) -> SearchOutput:
    """Search from the current observations of a batch of envs with the world model's caches."""
    roots = world_model.initial_inference(obs, env_ids=env_ids, last_actions=last_actions)
    return search_from_roots(world_model, roots, config=config, rng=rng, env_ids=env_ids,
                             legal_actions_mask=legal_actions_mask, add_noise=add_noise, temperature=temperature)


def search_from_roots(
    world_model, roots, *, config: SearchConfig, rng: np.random.Generator, env_ids: Sequence[int] | None = None,
    legal_actions_mask: np.ndarray | None = None, add_noise: bool = True, temperature: float = 1.0,
) -> SearchOutput:
    """Search from roots the world model has just inferred and stored (an ``InferenceOutput`` of
    ``initial_inference`` or ``initial_inference_from_history`` for the same ``env_ids``)."""
    root = RootFnOutput(
        value=roots.value.cpu().numpy(), policy_logits=roots.policy_logits.cpu().numpy(),
        latent=roots.latent_state,
    )
    rows = None if env_ids is None else list(env_ids)

    def recurrent_fn(latent, action, parent_id, child_id, tree_index=None) -> RecurrentFnOutput:
        # One row per env, or (multi-leaf) several rows per env: tree_index names each row's tree.
        if tree_index is None:
            envs = rows
        else:
            envs = tree_index.tolist() if rows is None else [rows[t] for t in tree_index]
        out = world_model.recurrent_inference(latent, action, env_ids=envs, parent_ids=parent_id, child_ids=child_id)
        return RecurrentFnOutput(
            reward=out.reward.cpu().numpy(), value=out.value.cpu().numpy(),
            policy_logits=out.policy_logits.cpu().numpy(), latent=out.latent_state,
        )

    return muzero_search(
        root, recurrent_fn, num_simulations=config.num_simulations, rng=rng,
        legal_actions_mask=legal_actions_mask, discount=config.discount, pb_c_base=config.pb_c_base,
        pb_c_init=config.pb_c_init, dirichlet_alpha=config.dirichlet_alpha,
        exploration_fraction=config.exploration_fraction, add_noise=add_noise, temperature=temperature,
        leaves_per_call=config.leaves_per_call,
    )
