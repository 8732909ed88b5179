"""VisualMatch and KeyToDoor: phases, rewards and the observation layout, pinned by scripted play."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

import zerokv.envs  # noqa: F401 (registers the ids)
from zerokv.envs.memory import COLOURS, KeyToDoorEnv, VisualMatchEnv
from zerokv.rl.envs import make_env

N, S, W, E = 0, 1, 2, 3
# From the reward room's start (5, 5): four steps north reach the middle colour (1, 5); the left (1, 2)
# and right (1, 8) ones are reached across row 3, without touching the middle one.
PATH_TO = {"b": [N, N, W, W, W, N, N], "c": [N, N, N, N], "e": [N, N, E, E, E, N, N]}


def symbols(env) -> list[str]:
    return ["".join(row) for row in env.room.view()]


def play(env, actions):
    """Step through ``actions``; the list of (reward, terminated, phase) per step."""
    out = []
    for a in actions:
        _, r, term, trunc, info = env.step(a)
        assert not trunc
        out.append((r, term, info["phase"]))
    return out


def skip_to_reward(env):
    """From reset, step (north) until the reward phase's first view."""
    steps = 0
    while env.PHASES[env.phase] != "reward":
        env.step(N)
        steps += 1
    return steps


def test_visual_match_phases_and_episode_length():
    env = VisualMatchEnv(memory_length=7)
    obs, info = env.reset(seed=0)
    assert obs.shape == (3, 5, 5) and obs.dtype == np.float32 and info["phase"] == "explore"
    assert env.episode_steps == 1 + 7 + 15
    steps = play(env, [N] * env.episode_steps)
    phases = [p for _, _, p in steps]
    # The action ending a phase returns the next phase's first view.
    assert phases == ["distractor"] * 7 + ["reward"] * 15 + ["reward"]
    assert [t for _, t, _ in steps] == [False] * 22 + [True]
    assert all(r == 0.0 for r, _, _ in steps[:8])  # apples are worth 0 by default


def test_visual_match_explore_view_shows_the_target_colour():
    env = VisualMatchEnv(memory_length=3)
    seen = set()
    for seed in range(30):
        obs, _ = env.reset(seed=seed)
        view = symbols(env)
        assert view[2][2] == "+"
        ring = [view[i][j] for i in (1, 2, 3) for j in (1, 2, 3) if (i, j) != (2, 2)]
        assert sorted(ring) == sorted(["#"] * 7 + [env.target])  # seven walls, one colour square
        assert view[0] == "     " and view[4] == "     "
        np.testing.assert_allclose(obs[:, 2, 2], np.array(COLOURS["+"]) / 1000)
        i, j = next((i, j) for i in (1, 2, 3) for j in (1, 2, 3) if view[i][j] == env.target)
        np.testing.assert_allclose(obs[:, i, j], np.array(COLOURS[env.target]) / 1000)
        env.step(N)  # the player is walled in: it cannot move onto the colour
        seen.add(env.target)
    assert seen == {"b", "c", "e"}


def test_visual_match_reward_room_layout():
    env = VisualMatchEnv(memory_length=2)
    env.reset(seed=1)
    skip_to_reward(env)
    assert symbols(env) == ["     ", "#   #", "# + #", "#####", "     "]
    assert env.room.player == (5, 5)


@pytest.mark.parametrize("choice", ["b", "c", "e"])
def test_visual_match_reward_only_for_the_remembered_colour(choice):
    env = VisualMatchEnv(memory_length=4)
    for seed in range(12):
        env.reset(seed=seed)
        skip_to_reward(env)
        rewards = [r for r, _, _ in play(env, PATH_TO[choice])]
        right = choice == env.target
        assert rewards[:-1] == [0.0] * (len(rewards) - 1)
        assert rewards[-1] == (1.0 if right else 0.0)
        assert env.success is right and env.choice == choice
        assert env.room.items == {}  # the choice is final: every colour vanished
        if not right:  # walking to the target afterwards gives nothing
            row1 = {"b": 2, "c": 5, "e": 8}
            dc = row1[env.target] - row1[choice]
            assert all(r == 0.0 for r, _, _ in play(env, [E if dc > 0 else W] * abs(dc)))


def test_visual_match_success_is_reported_at_the_end():
    env = VisualMatchEnv(memory_length=1)
    env.reset(seed=3)
    skip_to_reward(env)
    play(env, PATH_TO[env.target])
    for _ in range(env.steps_per_phase["reward"] - env.room.frame):
        _, r, term, _, info = env.step(S)
        assert r == 0.0
    assert term and info["success"] and info["phase"] == "reward"


def test_distractor_apples_and_their_reward():
    env = VisualMatchEnv(memory_length=10, apple_reward=(1.0, 1.0))
    env.reset(seed=0)
    env.step(N)
    assert env.PHASES[env.phase] == "distractor"
    assert len(env.room.items) == 10 and set(env.room.items.values()) == {"a"}
    apples = set(env.room.items)
    r0, c0 = env.room.player
    total = 0.0
    for a in (W, W, N, N, E, E, E, E):
        _, r, _, _, _ = env.step(a)
        expect = 1.0 if env.room.player in apples else 0.0
        apples.discard(env.room.player)
        assert r == expect
        total += r
    assert (r0, c0) == (5, 5)


def key_path(env) -> list[int]:
    """From the explore room's start to the key: to column 5, north through the gap to row 2 (or 1),
    then across (row 3 is open at columns 4-6 only)."""
    (kr, kc), = env.room.items
    pr, pc = env.room.player
    path = [W if pc > 5 else E] * abs(pc - 5) + [N] * (pr - 2)
    path += [N] if kr == 1 else []
    return path + [W if kc < 5 else E] * abs(kc - 5)


def test_key_to_door_opens_only_with_the_key():
    env = KeyToDoorEnv(memory_length=3)
    assert env.steps_per_phase == {"explore": 15, "distractor": 3, "reward": 15}
    for take_key in (True, False):
        env.reset(seed=5)
        for a in key_path(env) if take_key else []:
            env.step(a)
        assert env.has_key is take_key
        skip_to_reward(env)
        assert symbols(env) == ["##d##", "#   #", "# + #", "#   #", "#####"]
        rewards = [r for r, _, _ in play(env, [N, N])]
        if take_key:  # the door opens once
            assert rewards == [0.0, 1.0] and env.success and env.room.player == (1, 5)
            assert [r for r, _, _ in play(env, [S, N])] == [0.0, 0.0]
        else:  # the door stays shut
            assert rewards == [0.0, 0.0] and not env.success and env.room.player == (2, 5)


def test_key_pickup_flashes_the_indicator_for_one_frame():
    env = KeyToDoorEnv(memory_length=1)
    for seed in range(5):
        env.reset(seed=seed)
        flashes = []
        for a in key_path(env) + [S]:
            had = env.has_key
            env.step(a)
            flashes.append(env.room.flash)
            assert env.room.flash == ({(0, 5): "i"} if env.has_key and not had else {})
        assert env.has_key and flashes.count({(0, 5): "i"}) == 1


def test_registered_ids_take_memory_length():
    env = gymnasium.make("zerokv/VisualMatch-v0", memory_length=5)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 5, 5) and env.action_space.n == 4
    steps = 0
    done = False
    while not done:
        _, _, done, _, _ = env.step(env.action_space.sample())
        steps += 1
    assert steps == 1 + 5 + 15
    env = make_env("zerokv/KeyToDoor-v0", seed=0)
    assert env.observation_space.shape == (3, 5, 5)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10"])
def test_bad_memory_length_is_named(bad):
    with pytest.raises(ValueError, match="memory_length"):
        VisualMatchEnv(memory_length=bad)
