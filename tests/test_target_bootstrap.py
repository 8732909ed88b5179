"""LightZero's two learning settings: value targets bootstrapped by the momentum copy of the whole
network (``value_bootstrap="target"``) and label-smoothed two-hot reward/value targets."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_learner import HYPER, model_config, replay_for
from test_value_targets import value_targets

from zerokv import WorldModel
from zerokv.model.losses import unizero_losses
from zerokv.model.outputs import SequenceOutput
from zerokv.model.support import scalar_to_support, smooth_labels
from zerokv.rl.config import TrainConfig
from zerokv.rl.learner import Learner, bootstrap_values


def learner(model, value_bootstrap: str = "target", **kwargs) -> Learner:
    hyper = {**HYPER, "learning_rate": 1e-2, **kwargs}  # a large step: the copy falls visibly behind
    return Learner(model, fresh_value_targets=True, td_steps=2, value_bootstrap=value_bootstrap, **hyper)


def fresh_targets_by(net, batch) -> np.ndarray:
    """known + scale · v(o_{t+n}) with ``net``'s value of each bootstrap observation, [B, K+1]."""
    values = bootstrap_values(net, torch.as_tensor(batch.bootstrap_obs).flatten(0, 1)).view(batch.mask.shape)
    return batch.value_known + batch.bootstrap_scale * values.numpy()


def test_target_value_targets_come_from_the_momentum_copy():
    cfg = model_config()
    torch.manual_seed(0)
    lrn = learner(WorldModel(cfg))
    replay = replay_for(cfg)
    for _ in range(3):
        lrn.update(replay.sample(6))
    batch = replay.sample(6)
    boot = batch.bootstrap_scale != 0
    assert boot[:, :2].any() and boot[:, 2:].any()  # reused latents (k + n <= K) and encoded ones
    got = value_targets(lrn, batch)
    np.testing.assert_allclose(got, fresh_targets_by(lrn.target_model, batch), rtol=1e-5, atol=1e-5)
    online = fresh_targets_by(lrn.model, batch)
    assert np.abs(got - online)[boot].max() > 1e-3  # the copy is not the current network
    np.testing.assert_array_equal(got[~boot], batch.value_known[~boot])


def test_a_copy_equal_to_the_network_gives_the_online_update():
    cfg = model_config(image=True)
    torch.manual_seed(1)
    model = WorldModel(cfg)
    online, target = learner(copy.deepcopy(model), "online"), learner(model)
    batch = replay_for(cfg).sample(6)
    np.testing.assert_allclose(value_targets(target, batch), value_targets(online, batch), rtol=1e-5, atol=1e-5)
    a, b = online.update(batch), target.update(batch)
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key


def test_the_copy_of_the_whole_network_moves_at_the_rate():
    cfg = model_config()
    torch.manual_seed(2)
    lrn = learner(WorldModel(cfg), target_update_rate=0.3)
    assert lrn.target_encoder is lrn.target_model.encoder  # one copy serves the latent targets too
    assert not any(p.requires_grad for p in lrn.target_model.parameters())
    replay = replay_for(cfg)
    for _ in range(2):
        before = {n: p.clone() for n, p in lrn.target_model.named_parameters()}
        lrn.update(replay.sample(6))
        online = dict(lrn.model.named_parameters())
        assert before.keys() == online.keys()
        for name, p in lrn.target_model.named_parameters():
            torch.testing.assert_close(p, before[name] + 0.3 * (online[name] - before[name]), rtol=1e-6, atol=1e-7)
            assert not torch.equal(p, online[name]), name  # behind the network, every part of it
    assert not torch.equal(lrn.target_model.head_value[0].weight, before["head_value.0.weight"])


def test_checkpoint_carries_the_copy_and_resumes_exactly():
    cfg = model_config()
    torch.manual_seed(3)
    lrn = learner(WorldModel(cfg), target_label_smoothing=0.1)
    replay = replay_for(cfg)
    lrn.update(replay.sample(6))
    state = copy.deepcopy(lrn.state_dict())
    assert "target_model" in state and "target_encoder" not in state
    torch.manual_seed(4)
    resumed = learner(WorldModel(cfg), target_label_smoothing=0.1)  # other weights, overwritten
    resumed.load_state_dict(state)
    for p, q in zip(resumed.target_model.parameters(), lrn.target_model.parameters(), strict=True):
        assert torch.equal(p, q)
    batch = replay.sample(6)
    assert resumed.update(batch) == lrn.update(batch)
    for p, q in zip(resumed.target_model.parameters(), lrn.target_model.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="no 'target_encoder'.*another value_bootstrap than 'online'"):
        learner(WorldModel(cfg), "online").load_state_dict(state)


def test_the_online_default_keeps_its_checkpoint_layout():
    lrn = Learner(WorldModel(model_config()), **HYPER)
    assert (lrn.value_bootstrap, lrn.label_smoothing, lrn.target_model) == ("online", 0.0, None)
    assert set(lrn.state_dict()) == {"model", "target_encoder", "optimizer", "updates"}


def test_smoothed_labels_are_the_formula_and_sum_to_one():
    two_hot = scalar_to_support(torch.tensor([[0.0, 2.5, -7.0], [100.0, 0.3, -0.2]]), 5)
    smoothed = smooth_labels(two_hot, 0.1)
    torch.testing.assert_close(smoothed.sum(-1), torch.ones(2, 3))
    torch.testing.assert_close(smoothed, 0.9 * two_hot + 0.1 / 11)
    assert float(smoothed.min()) == pytest.approx(0.1 / 11)
    assert smooth_labels(two_hot, 0.0) is two_hot


def sequence_output(seed: int, steps: int = 3, bins: int = 7) -> SequenceOutput:
    g = torch.Generator().manual_seed(seed)
    latent = torch.softmax(torch.randn(2, steps, 4, 2, generator=g), -1).flatten(2)
    return SequenceOutput(value_logits=torch.randn(2, steps, bins, generator=g),
                          policy_logits=torch.randn(2, steps, 3, generator=g),
                          reward_logits=torch.randn(2, steps, bins, generator=g), next_latent=latent,
                          latents=torch.zeros(2, steps, 8))


LOSS_INPUTS = dict(target_latents=torch.softmax(torch.randn(2, 2, 4, 2), -1).flatten(2),
                   rewards=torch.tensor([[0.0, 1.0, -1.0], [1.0, 0.0, 0.0]]),
                   value_targets=torch.tensor([[3.2, -0.4, 8.0], [0.0, 1.5, -2.0]]),
                   policy_targets=torch.softmax(torch.randn(2, 3, 3), -1),
                   mask=torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]), support_size=3, group_size=2)


def test_smoothed_losses_mix_the_two_hot_loss_with_the_uniform_one():
    # CE((1-ε)·q + ε/N, p) = (1-ε)·CE(q, p) + ε·mean_i(-log p_i): per step, then the same masked mean.
    out, eps = sequence_output(5), 0.1
    plain = unizero_losses(out, **LOSS_INPUTS)
    smoothed = unizero_losses(out, **LOSS_INPUTS, label_smoothing=eps)
    mask = LOSS_INPUTS["mask"]
    for name, logits in (("value", out.value_logits), ("reward", out.reward_logits)):
        uniform = (-F.log_softmax(logits, -1).mean(-1) * mask).sum() / mask.sum()
        want = (1 - eps) * getattr(plain, name) + eps * uniform
        assert float(getattr(smoothed, name)) == pytest.approx(float(want), rel=1e-6), name
    for name in ("latent", "policy", "entropy"):
        assert torch.equal(getattr(smoothed, name), getattr(plain, name)), name
    delta = 0.5 * (smoothed.value - plain.value) + (smoothed.reward - plain.reward)
    assert float(smoothed.total) == pytest.approx(float(plain.total + delta), rel=1e-6)


def test_no_smoothing_is_the_plain_two_hot_loss_bit_for_bit():
    # The value and reward terms as written before smoothing existed, against the default call.
    out = sequence_output(6)
    losses = unizero_losses(out, **LOSS_INPUTS)
    assert torch.equal(losses.total, unizero_losses(out, **LOSS_INPUTS, label_smoothing=0.0).total)
    mask, s = LOSS_INPUTS["mask"], LOSS_INPUTS["support_size"]
    for name, targets in (("value", LOSS_INPUTS["value_targets"]), ("reward", LOSS_INPUTS["rewards"])):
        ce = -(scalar_to_support(targets, s) * F.log_softmax(getattr(out, f"{name}_logits").float(), -1)).sum(-1)
        assert torch.equal(getattr(losses, name), (ce * mask).sum() / mask.sum().clamp(min=1.0)), name


@pytest.mark.parametrize("bad, message", [
    (dict(target_label_smoothing=1.0), "target_label_smoothing=1.0; must be a finite number >= 0 and < 1"),
    (dict(target_label_smoothing=-0.1), "target_label_smoothing=-0.1"),
    (dict(target_label_smoothing=math.nan), "target_label_smoothing=nan"),
    (dict(value_bootstrap="momentum"), "value_bootstrap='momentum'; allowed: online, target"),
    (dict(value_bootstrap="target", fresh_value_targets=False), "needs fresh_value_targets=True"),
])
def test_bad_settings_are_refused_naming_the_value(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)
    if "fresh_value_targets" not in bad:
        with pytest.raises(ValueError, match=message.split(";")[0]):
            Learner(WorldModel(model_config()), **HYPER, **bad)
