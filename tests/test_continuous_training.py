"""Continuous actions through the training stack: envs, segments and replay, the learner's
Gaussian policy loss, the collector (and its resume) on Pendulum-v1, and refusals by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from zerokv import WorldModel, WorldModelConfig
from zerokv.rl.action_spaces import action_space_problem
from zerokv.rl.collector import Collector
from zerokv.rl.envs import EnvOptions, env_spec, make_env
from zerokv.rl.learner import Learner
from zerokv.rl.replay import GameSegment, ReplayBuffer
from zerokv.search import SearchConfig

K, D = 4, 2


def segment(steps: int, rng: np.random.Generator, terminated: bool = True) -> GameSegment:
    seg = GameSegment((3,), K, action_dim=D)
    for _ in range(steps):
        sampled = rng.uniform(-1, 1, (K, D)).astype(np.float32)
        policy = rng.dirichlet(np.ones(K)).astype(np.float32)
        seg.append(rng.random(3, dtype=np.float32), sampled[int(policy.argmax())], float(rng.random()), 0.5,
                   policy, sampled)
    seg.close(terminated=terminated)
    return seg


def test_replay_stores_continuous_actions_in_their_own_dtype_and_shape():
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(40, (3,), K, unroll_steps=3, td_steps=2, action_dim=D)
    segs = [segment(n, rng) for n in (5, 7)]
    for s in segs:
        buf.add(s)
    buf.check_invariants()
    assert segs[0].actions.dtype == np.float32 and segs[0].actions.shape == (5, D)
    batch = buf.sample(16)
    assert batch.actions.shape == (16, 4, D) and batch.actions.dtype == np.float32
    assert batch.sampled_actions.shape == (16, 4, K, D) and batch.policy_targets.shape == (16, 4, K)
    real = batch.mask.astype(bool)
    # Each real action is one of its position's sampled actions.
    hit = (np.abs(batch.sampled_actions - batch.actions[:, :, None]).max(-1) == 0).any(-1)
    assert hit[real].all() and np.abs(batch.actions).max() <= 1
    history = buf.histories(buf.sample_positions(5), 2)
    assert history.actions.shape == (5, 2, D) and history.actions.dtype == np.float32
    # A snapshot's fields include the sampled actions; loading them back gives the same contents.
    contents = buf.contents()
    assert set(contents.fields) == {"obs", "actions", "rewards", "root_values", "policies", "sampled_actions"}
    copy = ReplayBuffer(40, (3,), K, unroll_steps=3, td_steps=2, action_dim=D)
    copy.load_contents(contents.segments, lambda name, view: view.__setitem__(
        slice(None), np.concatenate(contents.fields[name])))
    copy.check_invariants()
    np.testing.assert_array_equal(copy.contents().fields["sampled_actions"][0],
                                  np.concatenate(contents.fields["sampled_actions"]))


def test_a_discrete_segment_is_refused_by_a_continuous_buffer():
    buf = ReplayBuffer(40, (3,), K, action_dim=D)
    seg = GameSegment((3,), K)
    seg.append(np.zeros(3, np.float32), 1, 0.0, 0.0, np.full(K, 0.25, np.float32))
    seg.close(terminated=True)
    with pytest.raises(ValueError, match="action_dim 0 != buffer action_dim 2"):
        buf.add(seg)


@pytest.mark.parametrize("action, sampled, match", [
    (np.array([np.nan, 0.0]), np.zeros((K, D)), "finite"),
    (np.array([0.0, 2.0]), np.zeros((K, D)), r"in \[-1, 1\]"),
    (np.array([0.0, 0.0]), None, "sampled_actions"),
])
def test_bad_continuous_steps_are_refused(action, sampled, match):
    seg = GameSegment((3,), K, action_dim=D)
    with pytest.raises(ValueError, match=match):
        seg.append(np.zeros(3, np.float32), action, 0.0, 0.0, np.full(K, 0.25, np.float32), sampled)


def test_learner_fits_the_visit_weighted_gaussian_likelihood():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    buf = ReplayBuffer(200, (3,), K, unroll_steps=2, td_steps=2, action_dim=D)
    for _ in range(6):
        buf.add(segment(10, rng))
    model = WorldModel(WorldModelConfig(observation_shape=(3,), action_space_size=K, action_dim=D, embed_dim=32,
                                        num_heads=2, context_length=4, max_tokens=6, env_num=2, num_simulations=4,
                                        support_size=5))
    learner = Learner(model, learning_rate=3e-3, weight_decay=0.0, grad_clip=5.0, target_update_rate=0.05)
    assert learner.loss_weights.entropy == pytest.approx(5e-2)
    batch = buf.sample(32)
    first = learner.update(batch)
    for _ in range(25):
        last = learner.update(batch)
    assert all(np.isfinite(v) for v in first.values())
    assert last["policy"] < first["policy"] - 0.1


def test_pendulum_spec_and_bounds_and_action_repeat():
    spec = env_spec("Pendulum-v1")
    assert spec.action_dim == 1 and spec.action_space_size == 0 and spec.observation_shape == (3,)
    env = make_env("Pendulum-v1", 0)
    assert env.action_space.low.tolist() == [-1.0] and env.action_space.high.tolist() == [1.0]
    # +1 is the env's max torque (2.0): same next state as the raw env given 2.0.
    raw = make_env("Pendulum-v1", 0)
    a = env.step(np.array([1.0], np.float32))[0]
    b = raw.unwrapped.step(np.array([2.0], np.float32))[0]
    np.testing.assert_allclose(a, b, rtol=1e-6)
    twice = make_env("Pendulum-v1", 0, options=EnvOptions(action_repeat=2))
    once = make_env("Pendulum-v1", 0)
    r2 = twice.step(np.array([0.3], np.float32))[1]
    r1 = once.step(np.array([0.3], np.float32))[1] + once.step(np.array([0.3], np.float32))[1]
    assert r2 == pytest.approx(r1)


@pytest.mark.parametrize("space, match", [
    (spaces.Box(-np.inf, np.inf, (2,)), "infinite bounds"),
    (spaces.Box(-1, 1, (2, 2)), "rank 2"),
    (spaces.Dict({"a": spaces.Discrete(2)}), "Dict, Tuple"),
])
def test_unusable_action_spaces_are_named(space, match):
    assert match in action_space_problem(space)
    assert action_space_problem(spaces.Box(-2, 2, (3,))) is None


def test_collector_on_pendulum_stores_vectors_and_resumes_exactly():
    torch.manual_seed(0)
    cfg = WorldModelConfig(observation_shape=(3,), action_space_size=3, action_dim=1, embed_dim=16, num_heads=2,
                           context_length=4, max_tokens=8, env_num=2, num_simulations=3, support_size=5)
    search = SearchConfig(num_simulations=3, num_sampled_actions=3)

    def collector(model, sink):
        return Collector("Pendulum-v1", 2, model, sink, search=search, seed=5, segment_length=3, history_steps=2,
                         keep_root_context=True)

    class Sink(list):
        add = list.append

    model = WorldModel(cfg).eval()
    sink = Sink()
    first = collector(model, sink)
    for _ in range(4):
        first.step(temperature=1.0)
    state = first.state_dict()
    model.clear_caches()  # as after a weight update: both runs continue from rebuilt root contexts
    first.rebuild_contexts()
    after = [first.step(temperature=1.0).search.action for _ in range(2)]
    assert sink and sink[0].actions.shape == (3, 1) and sink[0].sampled_actions.shape == (3, 3, 1)
    model.clear_caches()
    second = collector(model, Sink())
    second.load_state_dict(state)
    second.rebuild_contexts()
    again = [second.step(temperature=1.0).search.action for _ in range(2)]
    np.testing.assert_allclose(np.stack(after), np.stack(again), atol=1e-5)
    first.close()
    second.close()



def test_dmc_and_mujoco_envs_are_bounded_boxes_with_flat_state():
    dmc = env_spec("dm_control/cartpole-swingup-v0", EnvOptions(action_repeat=2))
    assert dmc.action_dim == 1 and dmc.observation_shape == (5,) and dmc.observation_dtype == "float32"
    env = make_env("dm_control/cartpole-swingup-v0", 0, options=EnvOptions(action_repeat=2))
    obs, reward, *_ = env.step(np.array([0.5], np.float32))
    assert obs.shape == (5,) and obs.dtype == np.float32 and np.isfinite(reward)
    env.close()
    mujoco = env_spec("InvertedPendulum-v5")
    assert mujoco.action_dim == 1 and mujoco.observation_shape == (4,)


def test_a_discrete_checkpoint_is_refused_on_a_continuous_env():
    from zerokv.rl.config import TrainConfig
    from zerokv.rl.factory import check_same_actions, world_model_config
    from zerokv.rl.rundir import RunDirError, resume_config

    discrete = world_model_config(TrainConfig(env="CartPole-v1"))
    continuous = world_model_config(TrainConfig(env="Pendulum-v1"))
    assert continuous.action_dim == 1 and continuous.action_space_size == 20
    with pytest.raises(ValueError, match=r"discrete actions \(action_dim=0\); this env has continuous"):
        check_same_actions({"action_dim": 0}, continuous, "the checkpoint")
    check_same_actions({"action_dim": 0}, discrete, "the checkpoint")
    with pytest.raises(RunDirError, match="env"):
        resume_config(TrainConfig(env="CartPole-v1", out="x").to_dict(), TrainConfig(env="Pendulum-v1", out="x",
                                                                                       resume=True))
    with pytest.raises(ValueError, match="reanalysis of sampled searches"):
        world_model_config(TrainConfig(env="Pendulum-v1", reanalyze_per_iteration=8))


def test_the_dmc_preset_has_unizeros_dmc_settings():
    from zerokv.rl.config import TrainConfig
    from zerokv.rl.config_files import file_overrides
    from zerokv.rl.factory import env_options, search_config, world_model_config

    cfg = TrainConfig(**{**TrainConfig().to_dict(), **file_overrides("dmc", None)})
    model, search = world_model_config(cfg), search_config(cfg)
    assert (search.num_sampled_actions, search.num_simulations, model.context_length, cfg.unroll_steps) == (20, 50, 8, 10)
    assert (cfg.replay_ratio, cfg.batch_size, env_options(cfg).action_repeat, model.action_dim) == (0.25, 64, 2, 1)
