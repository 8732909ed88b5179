"""Continuous actions: the world model's action projection and Gaussian policy, the sampled search,
and the cache's exactness on a continuous search (every backend against the no-cache reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal, TanhTransform, TransformedDistribution

from zerokv import WorldModel, WorldModelConfig
from zerokv.model import gaussian
from zerokv.search import SearchConfig, plan, sample_actions

ATOL = 1e-5
BACKENDS = ("none", "legacy", "manager", "paged")


def build(backend: str, *, dim: int = 2, seed: int = 0, **overrides) -> WorldModel:
    torch.manual_seed(seed)
    base = dict(observation_shape=(5,), action_dim=dim, embed_dim=32, num_heads=4, num_layers=2, context_length=4,
                max_tokens=12, env_num=3, num_simulations=12, support_size=10, cache_backend=backend)
    base.update(overrides)
    return WorldModel(WorldModelConfig(**base)).eval()


def _outputs(out) -> list[torch.Tensor]:
    extra = [] if out.reward_logits is None else [out.reward_logits]
    return [out.value, out.reward, out.policy_logits, out.latent_state, *extra]


def test_continuous_model_every_depth_matches_the_reference():
    """Siblings and a path twice the window deep, per real step, with restarts: every backend's
    outputs at every node equal the recompute reference's."""
    results = {}
    for backend in BACKENDS:
        wm, rng, outs, last = build(backend), np.random.default_rng(1), [], None
        for step in range(3):
            root = wm.initial_inference(rng.random((3, 5), dtype=np.float32), last_actions=last)
            outs += _outputs(root)
            latent, parent, next_id = root.latent_state, 0, 1
            for _ in range(2 * wm.config.context_length):
                child = wm.recurrent_inference(latent, rng.uniform(-1, 1, (3, 2)).astype(np.float32),
                                               parent_ids=np.full(3, parent), child_ids=np.full(3, next_id))
                outs += _outputs(child)
                latent, parent, next_id = child.latent_state, next_id, next_id + 1
            last = list(rng.uniform(-1, 1, (3, 2)).astype(np.float32))
            if step == 1:
                last[2] = None  # env 2 starts a new episode
        results[backend] = outs
        stats = wm.cache_stats()
        assert stats.fallbacks == 0 and stats.misses == 0, backend
    for backend in BACKENDS[1:]:
        diff = max((a - b).abs().max().item() for a, b in zip(results["none"], results[backend], strict=True))
        assert diff <= ATOL, f"{backend}: max |diff| {diff}"


@pytest.mark.parametrize("leaves_per_call", [1, 4], ids=["one-leaf", "multi-leaf"])
def test_sampled_searches_give_identical_visit_counts_on_every_backend(leaves_per_call):
    search = SearchConfig(num_simulations=12, num_sampled_actions=5, leaves_per_call=leaves_per_call)
    results = {}
    for backend in BACKENDS:
        wm, rng, obs_rng = build(backend), np.random.default_rng(3), np.random.default_rng(4)
        visits, samples, last = [], [], None
        for _ in range(3):
            out = plan(wm, obs_rng.random((3, 5), dtype=np.float32), config=search, rng=rng, last_actions=last)
            visits.append(out.visit_counts)
            samples.append(out.sampled_actions)
            assert out.visit_counts.shape == (3, 5) and (out.visit_counts.sum(1) == 12).all()
            np.testing.assert_array_equal(out.action, out.sampled_actions[np.arange(3), out.action_index])
            last = out.action
        results[backend] = np.stack(visits), np.stack(samples)
        stats = wm.cache_stats()
        assert stats.fallbacks == 0 and stats.misses == 0, backend
    for backend in BACKENDS[1:]:
        np.testing.assert_array_equal(results["none"][0], results[backend][0])
        np.testing.assert_allclose(results["none"][1], results[backend][1], atol=ATOL)


def test_roots_match_the_teacher_forced_training_forward():
    wm = build("paged")
    obs, acts = torch.rand(2, 5, 5), torch.rand(2, 5, 2) * 2 - 1
    seq = wm.forward_sequence(obs, acts)
    last = None
    for t in range(5):
        root = wm.initial_inference(obs[:, t], env_ids=[0, 1], last_actions=last)
        assert (root.policy_logits - seq.policy_logits[:, t]).abs().max().item() <= ATOL
        last = acts[:, t].numpy()
    rebuilt = wm.initial_inference_from_history(obs[:, :3], acts[:, :2], env_ids=[0, 1])
    assert (rebuilt.policy_logits - seq.policy_logits[:, 2]).abs().max().item() <= ATOL


def test_log_prob_and_entropy_match_torch_distributions():
    torch.manual_seed(0)
    mean, log_std = torch.randn(4, 3), torch.randn(4, 3)
    params = torch.cat([mean, log_std], -1)
    m, std = gaussian.split(params)
    a = torch.rand(4, 3) * 1.8 - 0.9
    ref = Independent(TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()]), 1)
    torch.testing.assert_close(gaussian.log_prob(m, std, a), ref.log_prob(a), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(gaussian.entropy(std), Independent(Normal(mean, log_std.exp()), 1).entropy())


def test_sampled_prior_is_uniform_for_the_policy_and_corrected_for_a_wider_proposal():
    params = np.array([[0.3, -0.2, np.log(0.5), np.log(0.2)]])
    actions, log_prior = sample_actions(np.random.default_rng(0), params, 6, tau=1.0)
    assert actions.shape == (1, 6, 2) and np.abs(actions).max() < 1 and np.ptp(log_prior) == 0
    actions, log_prior = sample_actions(np.random.default_rng(0), params, 6, tau=2.0)
    # beta-hat/beta * pi with beta = N(mean, 2 std): log pi(u) - log beta(u), computed directly.
    u = np.arctanh(actions[0].astype(np.float64))
    mean, std = params[0, :2], np.exp(params[0, 2:])
    log_n = lambda s: (-0.5 * ((u - mean) / s) ** 2 - np.log(s)).sum(-1)  # noqa: E731
    direct = log_n(std) - log_n(2 * std)
    np.testing.assert_allclose(log_prior[0] - log_prior[0].mean(), direct - direct.mean(), atol=1e-4)


@pytest.mark.parametrize("bad, match", [
    (np.array([[np.nan, 0.0]] * 3, np.float32), "NaN"),
    (np.array([[1.5, 0.0]] * 3, np.float32), r"outside \[-1, 1\]"),
    (np.zeros((3, 3), np.float32), r"expected \(3, 2\)"),
])
def test_bad_continuous_actions_are_refused_by_name(bad, match):
    wm = build("paged")
    root = wm.initial_inference(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match=match):
        wm.recurrent_inference(root.latent_state, bad, parent_ids=np.zeros(3, int), child_ids=np.ones(3, int))
    with pytest.raises(ValueError, match=match):
        wm.initial_inference(np.zeros((3, 5), np.float32), last_actions=bad)
    assert wm.cache_stats().fallbacks == 0


def test_a_continuous_model_round_trips_through_save_pretrained(tmp_path):
    wm = build("paged")
    wm.save_pretrained(tmp_path / "agent")
    loaded = WorldModel.from_pretrained(tmp_path / "agent")
    assert loaded.config.action_dim == 2
    obs, last = np.ones((3, 5), np.float32), np.full((3, 2), 0.5, np.float32)
    wm.initial_inference(obs)
    loaded.initial_inference(obs)
    a, b = wm.initial_inference(obs, last_actions=last), loaded.initial_inference(obs, last_actions=last)
    assert torch.equal(a.policy_logits, b.policy_logits)
