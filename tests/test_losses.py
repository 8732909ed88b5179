"""UniZero's losses on a tiny sequence whose every term is computed by hand."""

from __future__ import annotations

import math

import torch

from zerokv.model.losses import unizero_losses
from zerokv.model.outputs import SequenceOutput
from zerokv.model.support import h_inverse

LN2, LN3, LN5 = math.log(2), math.log(3), math.log(5)
BIG = 50.0  # logits of the masked step: they must not count


def test_unizero_losses_by_hand():
    # B = 1, K + 1 = 3 steps, the last one masked; support S = 1 (3 bins), 2 actions, E = 4 in 2 groups.
    value_logits = torch.tensor([[[0, 0, LN2], [0, 0, 0], [BIG, 0, 0]]])  # softmax (1/4, 1/4, 1/2), uniform
    reward_logits = torch.tensor([[[0, LN3, 0], [0, 0, 0], [0, 0, BIG]]])  # (1/5, 3/5, 1/5), uniform
    policy_logits = torch.tensor([[[0, LN3], [0, 0], [BIG, 0]]])  # (1/4, 3/4), uniform
    next_latent = torch.tensor([[[0.5, 0.5, 0.25, 0.75], [1, 0, 1, 0], [1, 0, 1, 0]]])
    out = SequenceOutput(value_logits=value_logits, policy_logits=policy_logits, reward_logits=reward_logits,
                         next_latent=next_latent, latents=torch.zeros(1, 3, 4))
    losses = unizero_losses(
        out,
        target_latents=torch.tensor([[[1, 0, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]]]),
        rewards=torch.zeros(1, 3),
        value_targets=torch.stack([h_inverse(torch.tensor(0.5)), torch.tensor(0.0), torch.tensor(9.0)])[None],
        policy_targets=torch.tensor([[[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]]),
        mask=torch.tensor([[1.0, 1.0, 0.0]]), support_size=1, group_size=2,
    )
    # value: step 0 targets h = 0.5 (half on bins 0 and 1): -(ln 1/4 + ln 1/2)/2 = 1.5 ln 2; step 1: ln 3.
    value = (1.5 * LN2 + LN3) / 2
    reward = (math.log(5 / 3) + LN3) / 2  # both target 0 (the middle bin)
    policy = (2 * LN2 + LN2) / 2  # -ln 1/4, then -ln 1/2
    entropy = ((0.25 * 2 * LN2 + 0.75 * math.log(4 / 3)) + LN2) / 2
    # latent: ô_1 (step 0) against o_1's target, per group KL(target || pred), averaged over groups;
    # step 1's prediction is masked (step 2 is). Group 1: 1·ln(1/0.5); group 2: ½ln(½/¼) + ½ln(½/¾).
    latent = (LN2 + (0.5 * LN2 + 0.5 * math.log(2 / 3))) / 2
    total = 10 * latent + reward + 0.5 * value + policy - 1e-4 * entropy
    expected = dict(value=value, reward=reward, policy=policy, entropy=entropy, latent=latent, total=total)
    for name, want in expected.items():
        assert abs(getattr(losses, name).item() - want) < 1e-5, (name, getattr(losses, name).item(), want)
    assert abs(LN5 / 2 - reward) < 1e-12  # the reward term simplifies to ln 5 / 2
