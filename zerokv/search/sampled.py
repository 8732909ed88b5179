"""Sampled MuZero search for continuous actions (Hubert et al. 2021, "Learning and Planning in
Complex and Stochastic Action Spaces"), on top of the batched discrete search of `mcts.py`.

Each node, when the model evaluates it, gets K actions sampled from a proposal beta (the node's
policy, a tanh-squashed Gaussian, :mod:`zerokv.model.gaussian`); from then on the node is a node
of the discrete search with K "actions", the indices of its samples. Nothing else changes: node
ids are those of `muzero_search`, each expansion is one batched model call that adds two tokens
per tree, so every cache backend serves a continuous search exactly as a discrete one.

- Proposal: beta = the policy with its standard deviation times tau (``sample_temperature``);
  u_k = mean + tau * std * eps_k, a_k = tanh(u_k), eps_k ~ N(0, I).
- Prior with the sampled-policy correction: prior_k ∝ beta-hat(a_k) / beta(a_k) * pi(a_k), with
  beta-hat the empirical distribution of the K samples (1/K each: continuous samples are
  distinct). The tanh Jacobian is the same in pi and beta, so the ratio is the Gaussians' ratio
  in u: log pi/beta = sum_d 0.5 * (1 - tau^2) * eps_d^2 + D log tau. tau = 1 gives a uniform prior.
- Root exploration noise: Dirichlet over the K root priors (as in the discrete search).
- The chosen action, and the training target: the root's visit counts over its K samples.

Sampling draws from the search's ``rng`` (so a fixed seed gives identical searches), in float64;
actions are handed to the model and returned in float32.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from zerokv.model.gaussian import LOG_STD_MAX, LOG_STD_MIN
from zerokv.search.config import SearchConfig
from zerokv.search.mcts import muzero_search
from zerokv.search.records import (
    Expansion,
    RecurrentFn,
    RecurrentFnOutput,
    RootFnOutput,
    SearchOutput,
)

__all__ = ["SampledSearchOutput", "sample_actions", "sampled_search"]


@dataclass(frozen=True, slots=True)
class SampledSearchOutput(SearchOutput):
    """``SearchOutput`` of ``sampled_search`` for B envs, K sampled root actions of D entries: the
    discrete search's record over the root's K samples, with the samples themselves.

    Attributes (besides ``SearchOutput``'s, whose ``visit_counts`` and ``search_policy`` are
    [B, K] over the root's samples):
        action: [B, D] float32 in [-1, 1], the chosen action (one of the root's samples).
        action_index: [B] int64, its index among the root's samples.
        sampled_actions: [B, K, D] float32, the root's sampled actions.
    """

    action_index: np.ndarray
    sampled_actions: np.ndarray


def sample_actions(rng: np.random.Generator, policy_params: np.ndarray, k: int,
                   tau: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """K actions per row from ``policy_params [R, 2D]`` (means, log stds) with proposal std × tau.

    Returns (actions [R, K, D] float32 in [-1, 1], log_prior [R, K] float64): the log of the
    corrected prior beta-hat/beta * pi up to a per-row constant (a softmax of it is the prior).
    """
    params = np.asarray(params_checked(policy_params), np.float64)
    mean, log_std = np.split(params, 2, axis=-1)  # [R, D] each
    std = np.exp(np.clip(log_std, LOG_STD_MIN, LOG_STD_MAX))
    eps = rng.standard_normal((params.shape[0], k, mean.shape[-1]))  # [R, K, D]
    u = mean[:, None] + tau * std[:, None] * eps
    log_prior = (0.5 * (1.0 - tau * tau) * eps * eps).sum(-1)  # [R, K]; log(1/K) and D log tau dropped
    return np.tanh(u).astype(np.float32), log_prior


def params_checked(policy_params) -> np.ndarray:
    params = np.asarray(policy_params)
    if params.ndim != 2 or params.shape[1] % 2 or params.shape[1] == 0:
        raise ValueError(f"policy_logits of shape {params.shape}; a continuous policy gives [R, 2D] (means, log stds)")
    if not np.isfinite(params).all():
        raise ValueError("policy_logits hold NaN or inf; a continuous policy's means and log stds must be finite")
    return params


def sampled_search(
    root: RootFnOutput,
    recurrent_fn: RecurrentFn,
    config: SearchConfig,
    *,
    rng: np.random.Generator,
    add_noise: bool = True,
    temperature: float = 1.0,
) -> SampledSearchOutput:
    """``config.num_simulations`` simulations of Sampled MuZero in each of the B trees.

    ``root.policy_logits [B, 2D]`` are the roots' Gaussians; ``recurrent_fn`` gets
    :class:`Expansion` requests whose ``action`` is ``[R, D]`` float32 (the sampled vectors) and
    returns ``policy_logits [R, 2D]``. Otherwise as ``muzero_search`` (which runs the tree).
    """
    k, tau = config.num_sampled_actions, config.sample_temperature
    params = params_checked(root.policy_logits)
    batch, dim = params.shape[0], params.shape[1] // 2
    # [B, N, K, D]: the sampled actions of node n of tree b, written when the node is evaluated.
    table = np.zeros((batch, config.num_simulations + 1, k, dim), np.float32)
    table[:, 0], root_log_prior = sample_actions(rng, params, k, tau)

    def expand(request: Expansion) -> RecurrentFnOutput:
        vectors = table[request.tree_index, request.parent_id, request.action]  # [R, D]
        out = recurrent_fn(dataclasses.replace(request, action=vectors))
        child_params = params_checked(out.policy_logits)
        if child_params.shape != (len(request.action), 2 * dim):
            raise ValueError(f"policy_logits of shape {child_params.shape}; expected ({len(request.action)}, {2 * dim})")
        table[request.tree_index, request.child_id], log_prior = sample_actions(rng, child_params, k, tau)
        return dataclasses.replace(out, policy_logits=log_prior)

    discrete_root = dataclasses.replace(root, policy_logits=root_log_prior)
    out = muzero_search(discrete_root, expand, config, rng=rng, add_noise=add_noise, temperature=temperature)
    rows = np.arange(batch)
    discrete = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    return SampledSearchOutput(**{**discrete, "action": table[rows, 0, out.action].copy()},
                               action_index=out.action, sampled_actions=table[:, 0].copy())
