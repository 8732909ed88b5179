"""Env construction: shapes and dtypes, seeding, SAME_STEP autoreset, Atari options, and clear errors."""

import subprocess
import sys

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from zerokv.rl.envs import EnvOptions, EnvSpec, env_spec, is_atari, make_env, make_vector_env


class _BoxObsEnv(gymnasium.Env):
    """A tiny env whose observation space is a Box of any shape (to test rank checks)."""

    def __init__(self, shape: tuple[int, ...] = (2, 2), action_space: spaces.Space | None = None) -> None:
        self.observation_space = spaces.Box(0, 255, shape, np.uint8)
        self.action_space = spaces.Discrete(3) if action_space is None else action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


gymnasium.register("ZerokvTest/Rank2-v0", entry_point=_BoxObsEnv, kwargs={"shape": (2, 2)})
gymnasium.register("ZerokvTest/Rank3-v0", entry_point=_BoxObsEnv, kwargs={"shape": (3, 4, 5)})
gymnasium.register("ZerokvTest/UnboundedActions-v0", entry_point=_BoxObsEnv,
                   kwargs={"shape": (3,), "action_space": spaces.Box(-np.inf, np.inf, (2,))})
gymnasium.register("ZerokvTest/DictActions-v0", entry_point=_BoxObsEnv,
                   kwargs={"shape": (3,), "action_space": spaces.Dict({"a": spaces.Discrete(2)})})


def test_cartpole_spec_and_float32_obs():
    assert env_spec("CartPole-v1") == EnvSpec("CartPole-v1", (4,), 2, reward_threshold=475.0)
    env = make_env("CartPole-v1", seed=0)
    obs, _ = env.reset()
    assert obs.shape == (4,) and obs.dtype == np.float32
    assert env.observation_space.dtype == np.float32
    obs, *_ = env.step(0)
    assert obs.dtype == np.float32


def test_seed_makes_runs_reproducible():
    def rollout(seed: int) -> np.ndarray:
        env = make_env("CartPole-v1", seed=seed)
        obs = [env.reset()[0]]
        for _ in range(5):
            obs.append(env.step(env.action_space.sample())[0])
        return np.stack(obs)

    np.testing.assert_array_equal(rollout(3), rollout(3))
    assert not np.array_equal(rollout(3), rollout(4))


def test_rank3_non_atari_box_is_cast_unchanged():
    assert env_spec("ZerokvTest/Rank3-v0").observation_shape == (3, 4, 5)
    assert env_spec("ZerokvTest/Rank3-v0").reward_threshold is None  # not registered: never stops early
    obs, _ = make_env("ZerokvTest/Rank3-v0", seed=0).reset()
    assert obs.shape == (3, 4, 5) and obs.dtype == np.float32


def test_unknown_env_id_names_the_id_and_a_known_one():
    with pytest.raises(ValueError, match=r"'NoSuchEnv-v0'.*CartPole-v1"):
        make_env("NoSuchEnv-v0")
    with pytest.raises(ValueError, match="'CartPole-v99'"):
        env_spec("CartPole-v99")


def test_unusable_action_spaces_rejected_naming_the_space():
    with pytest.raises(ValueError, match=r"'ZerokvTest/UnboundedActions-v0' has action space Box\(.*infinite bounds"):
        make_env("ZerokvTest/UnboundedActions-v0")
    with pytest.raises(ValueError, match=r"'ZerokvTest/DictActions-v0' has action space Dict\(.*Dict, Tuple"):
        make_env("ZerokvTest/DictActions-v0")


def test_non_box_observation_rejected_naming_the_space():
    with pytest.raises(ValueError, match=r"observation space Discrete\(16\).*Box"):
        make_env("FrozenLake-v1")


def test_box_of_rank_2_rejected():
    with pytest.raises(ValueError, match=r"observation shape \(2, 2\) \(rank 2\)"):
        make_env("ZerokvTest/Rank2-v0")


def test_bad_atari_knobs_rejected():
    with pytest.raises(ValueError, match="sticky_action_prob=1.5"):
        EnvOptions(sticky_action_prob=1.5)
    with pytest.raises(ValueError, match="frame_skip=0"):
        EnvOptions(frame_skip=0)
    with pytest.raises(ValueError, match="full_action_space=1"):
        EnvOptions(full_action_space=1)


def test_is_atari():
    assert is_atari("ALE/Pong-v5") and is_atari("BreakoutNoFrameskip-v4")
    assert not is_atari("CartPole-v1")


def test_missing_ale_py_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)  # makes `import ale_py` fail
    with pytest.raises(ImportError, match=r"pip install -e \"\.\[atari\]\""):
        make_env("ALE/Pong-v5")


def test_atari_preprocessing():
    # The test command installs the atari extra (scripts/setup.sh), so this always runs.
    assert env_spec("ALE/Pong-v5") == EnvSpec("ALE/Pong-v5", (3, 64, 64), 6, observation_dtype="uint8")
    env = make_env("ALE/Pong-v5", seed=0, options=EnvOptions(sticky_action_prob=0.1, frame_skip=3))
    obs, _ = env.reset()
    assert obs.shape == (3, 64, 64) and obs.dtype == np.uint8  # frames stay uint8 until the model
    assert obs.flags.c_contiguous and obs.max() > 0
    assert env.observation_space.dtype == np.uint8 and env.observation_space.shape == (3, 64, 64)
    ale_env = env.unwrapped
    assert ale_env.spec.kwargs["frameskip"] == 1  # skipping happens in AtariPreprocessing
    assert ale_env.ale.getFloat("repeat_action_probability") == pytest.approx(0.1)
    assert env.env.frame_skip == 3 and env.env.noop_max == 30
    obs, *_ = env.step(1)
    assert obs.shape == (3, 64, 64)


@pytest.mark.parametrize(("env_id", "sticky"), [("ALE/Pong-v5", 0.25), ("PongNoFrameskip-v4", 0.0)])
def test_sticky_actions_default_to_the_ids_own(env_id, sticky):
    # ALE/...-v5 ids are registered with sticky actions, the NoFrameskip-v4 ids LightZero trains on
    # without; zerokv used to force 0.25 on both.
    env = make_env(env_id, seed=0)
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(sticky)
    assert env.env.frame_skip == 4


def test_full_action_space_gives_18_actions():
    assert env_spec("ALE/Pong-v5", EnvOptions(full_action_space=True)).action_space_size == 18
    assert env_spec("ALE/Pong-v5").action_space_size == 6


def test_seeded_atari_episodes_replay_exactly_with_sticky_actions():
    # The collector restores an env by replaying its episode's actions: the emulator's sticky
    # draws must follow the seed.
    def rollout() -> np.ndarray:
        env = make_env("ALE/Pong-v5", options=EnvOptions(sticky_action_prob=0.5))
        frames = [env.reset(seed=7)[0]]
        frames += [env.step(a)[0] for a in [2, 3, 2, 2, 3, 3, 2, 3] * 4]
        return np.stack(frames)

    np.testing.assert_array_equal(rollout(), rollout())


def test_vector_env_same_step_autoreset_and_seeds():
    envs = make_vector_env("CartPole-v1", num_envs=3, seed=10)
    assert envs.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.SAME_STEP
    obs, _ = envs.reset()
    assert obs.shape == (3, 4) and obs.dtype == np.float32
    # Sub-env i is make_env(env_id, seed + i).
    for i in range(3):
        np.testing.assert_array_equal(obs[i], make_env("CartPole-v1", seed=10 + i).reset()[0])

    ended = 0
    for _ in range(500):
        obs, _, terminated, truncated, info = envs.step(np.zeros(3, np.int64))  # always push left
        done = terminated | truncated
        if done.any():
            assert info["_final_obs"].tolist() == done.tolist()
            for i in np.flatnonzero(done):
                final = info["final_obs"][i]
                assert final.shape == (4,) and abs(final[2]) > 0.2  # pole fell over
                assert np.all(np.abs(obs[i]) <= 0.05)  # obs is already the reset observation
            ended += int(done.sum())
        if ended >= 3:
            break
    assert ended >= 3
    with pytest.raises(ValueError, match="num_envs=0"):
        make_vector_env("CartPole-v1", num_envs=0)


@pytest.mark.slow
def test_an_atari_id_with_every_option_given_is_made_in_a_fresh_process():
    # The ALE ids are registered on first use, whichever options are given (a resumed run
    # passes a concrete sticky probability and once failed here).
    code = ("from zerokv.rl.envs import EnvOptions, make_env; "
            "print(make_env('ALE/Pong-v5', options=EnvOptions(sticky_action_prob=0.25)).observation_space.shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "(3, 64, 64)" in out.stdout, out.stderr[-1000:]


@pytest.mark.slow  # spawns one process per env
def test_async_vector_env_steps_and_replays_exactly_like_sync():
    from zerokv.rl.envs import replay_actions

    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, size=(60, 2))
    seen = {}
    for mode in ("sync", "async"):
        envs = make_vector_env("CartPole-v1", num_envs=2, seed=5, mode=mode)
        try:
            assert isinstance(envs, gymnasium.vector.AsyncVectorEnv) == (mode == "async")
            trace = [envs.reset(seed=[5, 6])[0]]
            for a in actions:  # long enough for an autoreset
                obs, reward, terminated, truncated, _ = envs.step(a)
                trace += [obs, reward, terminated | truncated]
            replayed = replay_actions(envs, {1: [0, 1, 1]}, keep=2)
            assert list(replayed) == [1] and len(replayed[1][0]) == 2
            trace += [*replayed[1][0], replayed[1][1], envs.step(np.zeros(2, np.int64))[0]]
            seen[mode] = trace
        finally:
            envs.close()
    assert any(done.any() for done in seen["sync"][3::3][:60])
    for a, b in zip(seen["sync"], seen["async"], strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="mode='threads'"):
        make_vector_env("CartPole-v1", num_envs=1, mode="threads")


@pytest.mark.slow  # spawns one process per env
def test_env_bench_reports_both_modes_and_their_ratio(capsys):
    from zerokv.bench.envs import EnvBench, bench

    result = bench(EnvBench(env="CartPole-v1", num_envs=2, steps=4, chunk=2, warmup=1))
    assert set(result) == {"sync", "async", "async/sync"} and min(result.values()) > 0
    assert result["async/sync"] == pytest.approx(result["async"] / result["sync"])
    assert "async / sync:" in capsys.readouterr().out
    with pytest.raises(ValueError, match="chunk=0"):
        EnvBench(chunk=0)
