"""The world model's output records (B rows each; shapes in the docstrings)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True, slots=True)
class InferenceOutput:
    """One batched inference (B rows).

    value:         [B] float32, expected value (categorical support → scalar)
    reward:        [B] float32, predicted reward of the transition into this node (0 at roots)
    policy_logits: [B, A] float32
    latent_state:  [B, E] float32, the node's latent (root: encoded observation; else ô)
    value_logits:  [B, 2S+1] float32, the categorical value the scalar is read from
    reward_logits: [B, 2S+1] float32 (None at roots: no transition)

    The scalars are the expectation over the support mapped through h⁻¹, which magnifies tiny
    logit differences (≈ 300 × h⁻¹' at support 601); exactness is checked on the logits and latent.
    Every field is float32 whatever the model's dtype (a bfloat16 model's outputs are cast once,
    at the end of each entry point; its scalars are read from the logits in float64).
    """

    value: torch.Tensor
    reward: torch.Tensor
    policy_logits: torch.Tensor
    latent_state: torch.Tensor
    value_logits: torch.Tensor | None = None
    reward_logits: torch.Tensor | None = None

    def float32(self) -> InferenceOutput:
        """This output with every tensor in float32 (a float32 output is returned as it is)."""
        if self.latent_state.dtype == torch.float32:
            return self
        return InferenceOutput(**{
            f.name: None if (t := getattr(self, f.name)) is None else t.float() for f in fields(self)
        })


@dataclass(frozen=True, slots=True)
class SequenceOutput:
    """Training forward over ``[o_0, a_0, …, o_K, a_K]`` (B rows, K+1 steps).

    value_logits [B, K+1, 2S+1] and policy_logits [B, K+1, A] read at observation tokens;
    reward_logits [B, K+1, 2S+1] and next_latent [B, K+1, E] at action tokens;
    latents [B, K+1, E] the encoded observations.
    """

    value_logits: torch.Tensor
    policy_logits: torch.Tensor
    reward_logits: torch.Tensor
    next_latent: torch.Tensor
    latents: torch.Tensor
