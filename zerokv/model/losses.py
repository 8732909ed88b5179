"""UniZero's training losses over a teacher-forced sequence (weights as in LightZero's UniZero).

    total = 10·latent + 1·reward + 0.5·value + 1·policy − entropy_weight·H(policy)

* latent: next-latent consistency, the predicted ô_{t+1} against the *target* encoder's latent of
  o_{t+1}, as a KL between SimNorm groups (both sides are per-group distributions);
* reward, value: cross-entropy against two-hot targets on the categorical support (with
  ``label_smoothing`` ε, mixed with the uniform distribution: (1-ε)·two_hot + ε/N, as LightZero);
* policy: cross-entropy against the search's visit distribution; for continuous actions (Sampled
  MuZero) the tanh-squashed Gaussian's log-likelihood of the root's K sampled actions weighted by
  their visit shares, and the entropy is the pre-squash Gaussian's (:mod:`zerokv.model.gaussian`).
Every term is averaged over the real (unmasked) steps only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zerokv.model import gaussian
from zerokv.model.support import scalar_to_support, smooth_labels


@dataclass(frozen=True, slots=True)
class LossWeights:
    latent: float = 10.0
    reward: float = 1.0
    value: float = 0.5
    policy: float = 1.0
    entropy: float = 1e-4


@dataclass(frozen=True, slots=True)
class Losses:
    """Scalar tensors; ``total`` carries the gradient, the rest are for logging."""

    total: torch.Tensor
    latent: torch.Tensor
    reward: torch.Tensor
    value: torch.Tensor
    policy: torch.Tensor
    entropy: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {name: float(getattr(self, name).detach()) for name in self.__slots__}


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def unizero_losses(
    out, *, target_latents: torch.Tensor, rewards: torch.Tensor, value_targets: torch.Tensor,
    policy_targets: torch.Tensor, mask: torch.Tensor, support_size: int, group_size: int,
    weights: LossWeights = LossWeights(), label_smoothing: float = 0.0,
    sampled_actions: torch.Tensor | None = None,
) -> Losses:
    """Losses of a :class:`~zerokv.model.world_model.SequenceOutput` ``out`` (B rows, K+1 steps).

    target_latents [B, K, E] (target encoder on o_1..o_K), rewards/value_targets/mask [B, K+1],
    policy_targets [B, K+1, A]; continuous: policy_targets [B, K+1, N] over ``sampled_actions
    [B, K+1, N, D]`` (N samples per position) and policy_logits [B, K+1, 2D]. Computed in float32 whatever the dtype of ``out`` (bfloat16 under
    the learner's autocast).
    """
    b, steps = mask.shape
    value_labels = smooth_labels(scalar_to_support(value_targets, support_size), label_smoothing)
    reward_labels = smooth_labels(scalar_to_support(rewards, support_size), label_smoothing)
    value_ce = -(value_labels * F.log_softmax(out.value_logits.float(), -1)).sum(-1)
    reward_ce = -(reward_labels * F.log_softmax(out.reward_logits.float(), -1)).sum(-1)
    if sampled_actions is None:
        log_pi = F.log_softmax(out.policy_logits.float(), -1)
        policy_ce = -(policy_targets * log_pi).sum(-1)
        entropy = -(log_pi.exp() * log_pi).sum(-1)
    else:
        mean, std = gaussian.split(out.policy_logits.float())  # [B, K+1, D] each
        log_pi = gaussian.log_prob(mean.unsqueeze(2), std.unsqueeze(2), sampled_actions.float())  # [B, K+1, N]
        policy_ce = -(policy_targets * log_pi).sum(-1)
        entropy = gaussian.entropy(std)
    # ô_{t+1} from the action token at step t, against the target latent of o_{t+1}.
    pred = out.next_latent[:, :-1].float().reshape(b, steps - 1, -1, group_size)
    target = target_latents.float().reshape(b, steps - 1, -1, group_size)
    latent_kl = (target * (target.clamp_min(1e-8).log() - pred.clamp_min(1e-8).log())).sum(-1).mean(-1)
    next_mask = mask[:, 1:]
    parts = dict(
        latent=_masked_mean(latent_kl, next_mask), reward=_masked_mean(reward_ce, mask),
        value=_masked_mean(value_ce, mask), policy=_masked_mean(policy_ce, mask),
        entropy=_masked_mean(entropy, mask),
    )
    total = (
        weights.latent * parts["latent"] + weights.reward * parts["reward"] + weights.value * parts["value"]
        + weights.policy * parts["policy"] - weights.entropy * parts["entropy"]
    )
    return Losses(total=total, **parts)
