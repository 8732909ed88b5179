"""zerokv.Agent: loads from a run directory, a checkpoint or an export; acts for one env or a
batch, keeping each env's context; reset at episode ends; search settings overridable, the
model's caches sized from the requested simulations."""

from __future__ import annotations

import numpy as np
import pytest

import zerokv
from zerokv.rl.config import TrainConfig
from zerokv.rl.evaluator import evaluate_episodes
from zerokv.rl.export import ExportArgs, export
from zerokv.rl.trainer import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("agent") / "run"
    train(TrainConfig(env="CartPole-v1", out=str(out), total_env_steps=16, num_envs=2, collect_steps=4,
                      num_simulations=4, embed_dim=16, num_heads=2, num_layers=1, context_length=4, support_size=5,
                      batch_size=4, unroll_steps=2, td_steps=2, min_replay_steps=8, segment_length=5,
                      eval_episodes=1, eval_every=0, checkpoint_every=8, progress=False, history_steps=4,
                      eval_max_steps=20, threads=1))
    return out


def test_agent_is_a_public_name_loaded_lazily():
    assert "Agent" in zerokv.__all__ and zerokv.Agent.__name__ == "Agent"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        zerokv.Nope  # noqa: B018


def test_load_from_a_run_directory_a_checkpoint_and_an_export_gives_the_same_actions(run, tmp_path, capsys):
    export(ExportArgs(checkpoint=str(run / "best.pt"), out=str(tmp_path / "export")))
    sources = [run, run / "best.pt", tmp_path / "export"]
    agents = [zerokv.Agent.load(path) for path in sources]
    assert agents[0].policy.source == str(run / "best.pt")  # a run directory means its best weights
    assert {a.env_id for a in agents} == {"CartPole-v1"} and {a.num_simulations for a in agents} == {4}
    obs = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    for step in range(3):
        actions = [a.predict(obs * (step + 1)) for a in agents]
        assert all(np.array_equal(actions[0], other) for other in actions[1:])
    only_checkpoints = zerokv.Agent.load(run / "checkpoints" / "ckpt_000000016.pt")
    assert only_checkpoints.policy.source.endswith("ckpt_000000016.pt")


def test_more_simulations_than_training_used_work_the_caches_are_sized_from_them(run):
    agent = zerokv.Agent.load(run, num_simulations=25)
    assert agent.num_simulations == 25 and agent.model_config(1).num_simulations == 25
    env = agent.make_env()
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        obs, *_ = env.step(agent.predict(obs))
    assert agent._model.cache_stats().fallbacks == 0


def test_single_obs_gives_an_int_a_batch_an_array_and_they_agree_with_the_evaluator(run):
    agent = zerokv.Agent.load(run)
    env = agent.make_env()
    obs, _ = env.reset(seed=3)
    action = agent.predict(obs)
    assert isinstance(action, int) and action in (0, 1)
    batch = agent.predict(np.stack([obs, obs]))
    assert batch.shape == (2,) and batch.dtype == np.int64
    with pytest.raises(ValueError, match=r"obs has shape \(3,\); CartPole-v1 observations are \(4,\)"):
        agent.predict(np.zeros(3, np.float32))
    # Greedy episodes played through predict/reset return what the trainer's evaluator returns.
    fresh = zerokv.Agent.load(run)
    returns = []
    for episode in range(2):
        fresh.reset()
        env = fresh.make_env()
        obs, _ = env.reset(seed=100 + 7919 * episode)
        total, steps, done = 0.0, 0, False
        while not done and steps < 20:
            obs, reward, terminated, truncated, _ = env.step(fresh.predict(obs))
            total, steps, done = total + reward, steps + 1, terminated or truncated
        returns.append(total)
    agent_cfg = fresh.model_config(1)
    reference = [evaluate_episodes(fresh.policy.weights, agent_cfg, "CartPole-v1", episodes=1, seed=100 + 7919 * e,
                                   search=fresh.search, max_steps=20).returns[0] for e in range(2)]
    assert returns == reference


def test_reset_starts_only_the_named_envs_afresh(run):
    agent, kept, fresh = (zerokv.Agent.load(run) for _ in range(3))
    obs = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    for a in (agent, kept):
        a.predict(obs)
        a.predict(obs * 2)
    agent.reset([1])
    assert agent._last[1] == -1 and agent._last[0] != -1 and agent._last[2] != -1
    for a in (agent, kept, fresh):
        a.predict(obs * 3)
    # env 1 started from its observation alone (as a fresh agent's first step); 0 and 2 went on
    value, value_kept, value_fresh = (a.last_search.root_value for a in (agent, kept, fresh))
    assert abs(value[1] - value_fresh[1]) < 1e-5 < abs(value[1] - value_kept[1])
    assert np.allclose(value[[0, 2]], value_kept[[0, 2]], atol=1e-5) and abs(value[0] - value_fresh[0]) > 1e-5
    assert agent._model.cache_stats().fallbacks == 0
    with pytest.raises(ValueError, match=r"env id 3; this agent acts for 3 env\(s\)"):
        agent.reset(3)
    agent.reset()
    assert (agent._last == -1).all()


def test_a_bad_path_or_setting_is_one_clear_error(run, tmp_path):
    (tmp_path / "started" / "checkpoints").mkdir(parents=True)  # a run killed before its first checkpoint
    with pytest.raises(ValueError, match="holds no best.pt and no checkpoints"):
        zerokv.Agent.load(tmp_path / "started")
    with pytest.raises(ValueError, match="num_simulations=0"):
        zerokv.Agent.load(run, num_simulations=0)
    with pytest.raises(ValueError, match="dtype='float16'"):
        zerokv.Agent.load(run, dtype="float16")



def test_export_writes_a_model_card_naming_the_env_return_and_how_to_load(run, tmp_path):
    directory = export(ExportArgs(checkpoint=str(run), out=str(tmp_path / "card")))
    card = (directory / "README.md").read_text()
    assert "# zerokv agent: CartPole-v1" in card and "at 16 env steps" in card
    assert f'zerokv.Agent.load("{directory}")' in card and "| num_simulations | 4 |" in card
