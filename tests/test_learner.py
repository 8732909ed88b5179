"""The learner's update: the same training step as the plain formulation, and its options."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from zerokv import WorldModel, WorldModelConfig
from zerokv.bench.learner import LearnerBench, report, run
from zerokv.model.linear import uses_onednn
from zerokv.model.losses import unizero_losses
from zerokv.model.support import support_to_scalar
from zerokv.rl import GameSegment, ReplayBuffer, TrainConfig
from zerokv.rl.learner import Learner, bootstrap_values

HYPER = dict(learning_rate=1e-3, weight_decay=1e-4, grad_clip=5.0, target_update_rate=0.05)


def model_config(image: bool = False, embed_dim: int = 32) -> WorldModelConfig:
    return WorldModelConfig(
        observation_shape=(3, 64, 64) if image else (5,), action_space_size=3, embed_dim=embed_dim,
        num_heads=4, num_layers=2, context_length=4, max_tokens=8, support_size=10,
    )


def replay_for(cfg: WorldModelConfig, seed: int = 0, segments: int = 4, length: int = 9) -> ReplayBuffer:
    """Segments short enough that some targets bootstrap from the segment's end (scale 0)."""
    rng = np.random.default_rng(seed)
    replay = ReplayBuffer(1000, cfg.observation_shape, cfg.action_space_size, unroll_steps=3, td_steps=2,
                          discount=0.9, seed=seed)
    for _ in range(segments):
        replay.add(GameSegment.from_arrays(
            rng.random((length, *cfg.observation_shape), dtype=np.float32), rng.integers(3, size=length),
            rng.normal(size=length).astype(np.float32), rng.normal(size=length).astype(np.float32),
            rng.dirichlet(np.ones(3), size=length).astype(np.float32), terminated=False, bootstrap_value=0.5,
        ))
    return replay


def plain_update(model, target_encoder, optimizer, batch, *, grad_clip, tau) -> dict[str, float]:
    """The update as first written: one forward_sequence per bootstrap observation (all heads,
    both tokens, every position), the for-loop AdamW, float32 throughout."""
    cfg = model.config
    obs, actions = torch.as_tensor(batch.obs), torch.as_tensor(batch.actions)
    b, steps = actions.shape
    out = model.forward_sequence(obs, actions)
    with torch.no_grad():
        target_latents = target_encoder(obs[:, 1:].flatten(0, 1)).view(b, steps - 1, -1)
        boot = torch.as_tensor(batch.bootstrap_obs).flatten(0, 1).unsqueeze(1)
        boot_out = model.forward_sequence(boot, torch.zeros(b * steps, 1, dtype=torch.long))
        values = support_to_scalar(boot_out.value_logits[:, 0], cfg.support_size).view(b, steps)
        value_targets = torch.as_tensor(batch.value_known) + torch.as_tensor(batch.bootstrap_scale) * values
    losses = unizero_losses(
        out, target_latents=target_latents, rewards=torch.as_tensor(batch.rewards), value_targets=value_targets,
        policy_targets=torch.as_tensor(batch.policy_targets), mask=torch.as_tensor(batch.mask),
        support_size=cfg.support_size, group_size=cfg.latent_group_size,
    )
    optimizer.zero_grad(set_to_none=True)
    losses.total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    with torch.no_grad():
        for target, online in zip(target_encoder.parameters(), model.encoder.parameters(), strict=True):
            target.lerp_(online, tau)
    return {**losses.as_floats(), "grad_norm": float(grad_norm)}


@pytest.mark.parametrize("image", [False, True])
def test_update_equals_the_plain_float32_update_to_rounding(image):
    cfg = model_config(image)
    torch.manual_seed(0)
    model = WorldModel(cfg)
    reference = copy.deepcopy(model)
    learner = Learner(model, fresh_value_targets=True, td_steps=2, **HYPER)
    ref_target = copy.deepcopy(reference.encoder).requires_grad_(False)
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=HYPER["learning_rate"],
                                weight_decay=HYPER["weight_decay"], foreach=False)
    replay = replay_for(cfg)
    updates = 3
    for step in range(updates):
        batch = replay.sample(6)
        # Positions without a bootstrap term, with one inside the window (k + n <= K: the forward's
        # latent is reused) and with one outside it (encoded).
        assert (batch.bootstrap_scale == 0).any()
        assert (batch.bootstrap_scale[:, :2] != 0).any() and (batch.bootstrap_scale[:, 2:] != 0).any()
        got = learner.update(batch)
        want = plain_update(reference, ref_target, ref_opt, batch, grad_clip=HYPER["grad_clip"],
                            tau=HYPER["target_update_rate"])
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
        if step == 0:  # the same weights in: the same gradients, to float32 rounding
            for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
                scale = float(q.grad.abs().max())
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)
    # AdamW moves each weight by about the learning rate whatever its gradient's size, so rounding
    # in a near-zero gradient shows as a small fraction of a step, not of the weight.
    atol = 0.05 * HYPER["learning_rate"] * updates
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=atol, msg=name)
    for p, q in zip(learner.target_encoder.parameters(), ref_target.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=atol)


def test_bootstrap_observations_inside_the_window_are_the_batch_observations():
    # The contract the learner's latent reuse rests on: o_{t+k+n} is obs[:, k+n] when k + n <= K.
    cfg = model_config()
    replay = replay_for(cfg, length=7)
    n, steps = replay.td_steps, replay.unroll_steps + 1
    batch = replay.sample(32)
    checked = 0
    for b, k in zip(*np.nonzero(batch.bootstrap_scale), strict=True):
        if k + n < steps:
            np.testing.assert_array_equal(batch.bootstrap_obs[b, k], batch.obs[b, k + n])
            checked += 1
    assert checked > 0


def test_bootstrap_values_are_forward_sequence_values_at_step_zero():
    cfg = model_config(image=True)
    torch.manual_seed(1)
    model = WorldModel(cfg)
    obs = torch.rand(5, *cfg.observation_shape)
    with torch.no_grad():
        out = model.forward_sequence(obs.unsqueeze(1), torch.tensor([[0], [1], [2], [0], [1]]))
    want = support_to_scalar(out.value_logits[:, 0], cfg.support_size)
    torch.testing.assert_close(bootstrap_values(model, obs), want, rtol=1e-6, atol=1e-6)


def test_inference_after_an_update_uses_the_new_weights():
    # The fused AdamW step does not bump the weights' version counters; the learner must drop
    # the oneDNN-packed copies, or the next no-grad forward computes with the old weights.
    cfg = model_config(embed_dim=64)
    torch.manual_seed(2)
    model = WorldModel(cfg)
    learner = Learner(model, fresh_value_targets=True, **HYPER)
    obs = torch.rand(128, *cfg.observation_shape)
    with torch.no_grad():  # the packed path is exercised
        assert uses_onednn(torch.randn(128, 64), model.transformer.blocks[0].qkv.weight)
    bootstrap_values(model, obs)  # packs the current weights
    learner.update(replay_for(cfg).sample(6))
    fresh = copy.deepcopy(model)  # new parameter objects: nothing packed for them yet
    torch.testing.assert_close(bootstrap_values(model, obs), bootstrap_values(fresh, obs), rtol=0, atol=0)


def test_bfloat16_learner_trains_float32_weights_close_to_the_float32_learner():
    cfg = model_config(image=True)
    replay = replay_for(cfg)
    batches = [replay.sample(6) for _ in range(3)]
    results = {}
    for dtype in ("float32", "bfloat16"):
        torch.manual_seed(3)
        learner = Learner(WorldModel(cfg), fresh_value_targets=True, dtype=dtype, **HYPER)
        results[dtype] = [learner.update(b) for b in batches]
        assert all(p.dtype == torch.float32 for p in learner.model.parameters())
        assert all(s["exp_avg"].dtype == torch.float32 for s in learner.optimizer.state.values())
    for f32, bf16 in zip(results["float32"], results["bfloat16"], strict=True):
        for key in ("total", "value", "reward", "policy"):
            assert np.isfinite(bf16[key]) and bf16[key] == pytest.approx(f32[key], rel=0.05), key
    # Not the float32 computation under another name.
    assert results["float32"][0]["total"] != results["bfloat16"][0]["total"]


def test_learner_dtype_is_checked():
    with pytest.raises(ValueError, match="dtype='float16'.*allowed: float32, bfloat16"):
        Learner(WorldModel(model_config()), dtype="float16", **HYPER)
    with pytest.raises(ValueError, match="learner_dtype='half'"):
        TrainConfig(learner_dtype="half")


def test_a_td_steps_other_than_the_replays_is_refused():
    cfg = model_config()
    torch.manual_seed(5)
    learner = Learner(WorldModel(cfg), fresh_value_targets=True, td_steps=1, **HYPER)  # the replay's is 2
    with pytest.raises(ValueError, match="td_steps=1 does not match the batch"):
        learner.update(replay_for(cfg).sample(6))


def test_optimizer_stays_fused_after_loading_an_unfused_checkpoint():
    cfg = model_config()
    torch.manual_seed(4)
    learner = Learner(WorldModel(cfg), **HYPER)
    state = learner.state_dict()
    for group in state["optimizer"]["param_groups"]:
        group["fused"] = None  # as saved by the earlier, unfused optimizer
    learner.load_state_dict(state)
    assert all(g["fused"] for g in learner.optimizer.param_groups)
    learner.update(replay_for(cfg).sample(4))


def test_learner_bench_reports_every_part():
    bench = LearnerBench(dtypes="float32", updates=1, warmup=1, batch_size=2, unroll_steps=2, td_steps=2,
                         embed_dim=32, segment_length=8, replay_steps=40)
    timings, sample_seconds = run(bench)
    (timing,) = timings
    assert timing.update_ms > 0 and sample_seconds > 0
    assert all(ms >= 0 for ms in timing.parts_ms.values())
    assert sum(timing.parts_ms.values()) <= timing.update_ms * 1.01
    text = report(bench, timings, sample_seconds)
    assert "bwd transformer" in text and "updates/s" in text
    with pytest.raises(ValueError, match="dtypes='int8'"):
        LearnerBench(dtypes="float32,int8")
