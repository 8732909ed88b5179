"""The default value targets (``fresh_value_targets=True``): n-step rewards from replay plus the
*current* network's value of the bootstrap state, on hand-sized segments with hand-computed targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zerokv import WorldModel, WorldModelConfig
from zerokv.rl import Learner
from zerokv.rl.learner import ROW_BUCKET, bootstrap_values
from zerokv.rl.replay import (
    Batch,
    GameSegment,
    ReplayBuffer,
    n_step_bootstrap,
    n_step_value_targets,
)

REWARDS = [1.0, 2.0, 3.0, 4.0]
# td_steps = 2, discount = 0.5, T = 4: z_j = r_j + 0.5 r_{j+1} + 0.25 v_{j+2} while j + 2 < T; at
# the end the rewards stop and v_T is the segment's bootstrap value (0 when terminated).
#   j = 0: 1 + 0.5·2 = 2.0        + 0.25 · v_2
#   j = 1: 2 + 0.5·3 = 3.5        + 0.25 · v_3
#   j = 2: 3 + 0.5·4 + 0.25·v_T   (v_T known: no network value needed)
#   j = 3: 4 + 0.5·v_T
TRUNCATED_KNOWN = [2.0, 3.5, 3 + 2 + 0.25 * 100, 4 + 0.5 * 100]  # bootstrap_value = 100
TERMINATED_KNOWN = [2.0, 3.5, 5.0, 4.0]
SCALE = [0.25, 0.25, 0.0, 0.0]


@pytest.mark.parametrize(("bootstrap", "known"), [(100.0, TRUNCATED_KNOWN), (0.0, TERMINATED_KNOWN)])
def test_n_step_bootstrap_by_hand(bootstrap, known):
    got_known, got_scale = n_step_bootstrap(np.array(REWARDS), bootstrap, td_steps=2, discount=0.5)
    assert got_known.dtype == got_scale.dtype == np.float32
    assert got_known.tolist() == known and got_scale.tolist() == SCALE
    # With the stored root values in place of the network's, it is the stored n-step target.
    values = np.array([10.0, 20.0, 30.0, 40.0])
    m = np.minimum(np.arange(4) + 2, 3)
    np.testing.assert_allclose(got_known + got_scale * values[m],
                               n_step_value_targets(np.array(REWARDS), values, bootstrap, 2, 0.5), rtol=1e-6)


def segment(obs: np.ndarray, root_values, terminated: bool) -> GameSegment:
    seg = GameSegment(obs.shape[1:], 2)
    for t, (o, r, v) in enumerate(zip(obs, REWARDS, root_values, strict=True)):
        seg.append(o, t % 2, r, v, np.array([0.5, 0.5]))
    seg.close(terminated=terminated, bootstrap_value=100.0)
    return seg


def test_sampled_rows_carry_the_bootstrap_parts_by_hand():
    obs = np.arange(4, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # obs_t = [t, t, t]
    buffer = ReplayBuffer(100, (3,), 2, unroll_steps=2, td_steps=2, discount=0.5, seed=0)
    buffer.add(segment(obs, [0.0] * 4, terminated=False))
    batch = buffer.sample(64)
    for row in range(64):
        t = int(batch.obs[row, 0, 0])  # the row's start
        n = min(3, 4 - t)  # real positions
        np.testing.assert_array_equal(batch.value_known[row, :n], TRUNCATED_KNOWN[t:t + n])
        np.testing.assert_array_equal(batch.bootstrap_scale[row, :n], SCALE[t:t + n])
        assert (batch.value_known[row, n:] == 0).all() and (batch.bootstrap_scale[row, n:] == 0).all()
        # o_m with m = min(t + k + 2, T - 1): where scale > 0 it is the state the target bootstraps from.
        expected_m = np.minimum(np.arange(t, t + 3) + 2, 3)
        np.testing.assert_array_equal(batch.bootstrap_obs[row, :, 0], expected_m)
    assert {int(t) for t in batch.obs[:, 0, 0]} == {0, 1, 2, 3}


def tiny_model(env_num: int) -> WorldModel:
    torch.manual_seed(0)
    cfg = WorldModelConfig(observation_shape=(3,), action_space_size=2, embed_dim=16, num_layers=1, num_heads=2,
                           context_length=4, max_tokens=8, env_num=env_num, num_simulations=2, support_size=5)
    return WorldModel(cfg)


def network_values(model: WorldModel, obs: np.ndarray) -> np.ndarray:
    """v(o) of each observation alone, by another path than the learner's: a context-free root."""
    model.clear_caches()
    values = model.initial_inference(obs).value.numpy().astype(np.float64)
    model.clear_caches()
    return values


def learner(model: WorldModel, fresh: bool) -> Learner:
    return Learner(model, learning_rate=1e-3, weight_decay=0.0, grad_clip=1.0, target_update_rate=0.1,
                   fresh_value_targets=fresh)


def value_targets(learner: Learner, batch: Batch) -> np.ndarray:
    """The learner's targets for ``batch``, given the forward's and the target encoder's latents of
    its observations."""
    with torch.no_grad():
        obs = torch.as_tensor(batch.obs)
        latents = learner.model.encoder(obs.flatten(0, 1)).view(*obs.shape[:2], -1)
        target_latents = learner.target_encoder(obs[:, 1:].flatten(0, 1)).view(obs.shape[0], obs.shape[1] - 1, -1)
    return learner._value_targets(batch, latents, target_latents).numpy()


def test_learner_value_targets_use_the_current_networks_bootstrap_value():
    model = tiny_model(env_num=3)
    rng = np.random.default_rng(1)
    boot_obs = rng.random((1, 3, 3), dtype=np.float32)  # [B=1, K+1=3, obs]
    known = np.array([[2.0, 3.5, 30.0]], np.float32)
    scale = np.array([[0.25, 0.25, 0.0]], np.float32)
    stale = np.full((1, 3), 9.0, np.float32)  # what was stored at collection
    batch = Batch(obs=boot_obs, actions=np.zeros((1, 3), np.int64), rewards=np.zeros((1, 3), np.float32),
                  value_targets=stale, policy_targets=np.full((1, 3, 2), 0.5, np.float32),
                  mask=np.ones((1, 3), np.float32), weights=np.ones(1, np.float32), bootstrap_obs=boot_obs,
                  value_known=known, bootstrap_scale=scale)
    v = network_values(model, boot_obs[0])
    fresh = value_targets(learner(model, fresh=True), batch)
    np.testing.assert_allclose(fresh[0, :2], [2.0 + 0.25 * v[0], 3.5 + 0.25 * v[1]], rtol=1e-5, atol=1e-5)
    assert fresh[0, 2] == 30.0  # scale 0: the network's value does not enter
    assert not np.allclose(fresh, stale)
    np.testing.assert_array_equal(value_targets(learner(model, fresh=False), batch), stale)


def test_fresh_targets_equal_stored_ones_when_stored_values_are_the_networks():
    """Store each step's root value as the network's own v(o_t): the fresh path (rewards + current
    v(o_m)) and the stored path (n_step_value_targets over the stored values) must then agree."""
    model = tiny_model(env_num=4)
    obs = np.random.default_rng(2).random((4, 3), dtype=np.float32)
    for terminated in (False, True):
        buffer = ReplayBuffer(100, (3,), 2, unroll_steps=2, td_steps=2, discount=0.5, seed=3)
        buffer.add(segment(obs, network_values(model, obs).tolist(), terminated))
        batch = buffer.sample(32)
        fresh = value_targets(learner(model, fresh=True), batch)
        np.testing.assert_allclose(fresh * batch.mask, batch.value_targets, rtol=1e-5, atol=1e-5)



def test_bootstrap_passes_run_on_whole_row_buckets_and_give_each_rows_value():
    """The bootstrap encoder and value passes see a multiple of ROW_BUCKET rows whatever the batch
    holds (oneDNN caches a kernel per row count), and the padding changes no row's target."""
    model = tiny_model(env_num=4)
    obs = np.random.default_rng(2).random((4, 3), dtype=np.float32)
    buffer = ReplayBuffer(100, (3,), 2, unroll_steps=2, td_steps=2, discount=0.5, seed=3)
    buffer.add(segment(obs, [0.0] * 4, terminated=False))
    # td_steps=None: no latent reused from the unrolled window, every bootstrap row is encoded
    learn = Learner(model, learning_rate=1e-3, weight_decay=0.0, grad_clip=1.0, target_update_rate=0.1,
                    fresh_value_targets=True, td_steps=None)
    rows_seen: list[int] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: rows_seen.append(args[0].shape[0]))
             for m in (model.encoder, model.transformer)]
    try:
        for size in (3, 7, 32):
            batch = buffer.sample(size)
            rows_seen.clear()
            fresh = value_targets(learn, batch)
            boot = rows_seen[1:]  # the first call is value_targets' own encoding of batch.obs
            assert boot and all(n % ROW_BUCKET == 0 for n in boot), rows_seen
            v = bootstrap_values(model, torch.as_tensor(batch.bootstrap_obs.reshape(-1, 3)))  # every row, unpadded
            v = v.numpy().reshape(batch.bootstrap_scale.shape)
            np.testing.assert_allclose(fresh, batch.value_known + batch.bootstrap_scale * v, rtol=1e-5, atol=1e-5)
    finally:
        for h in hooks:
            h.remove()
