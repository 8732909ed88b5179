"""Contexts of 150+ tokens end to end: whole VisualMatch episodes searched through the paged arena
(validated against recomputation at every call), their root contexts snapshotted and rebuilt for
reanalysis, and the cache's memory per node and per env at that length."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kvutil import one_thread  # noqa: F401  (fixture)

from zerokv import SearchConfig, WorldModel, WorldModelConfig, plan
from zerokv.envs import VisualMatchEnv

pytestmark = pytest.mark.usefixtures("one_thread")
MEMORY = 60
STEPS = 1 + MEMORY + 15  # a whole episode: 76 steps, 151 tokens at its last root
SEARCH = SearchConfig(num_simulations=4)


def build(**overrides) -> WorldModel:
    cfg = dict(observation_shape=(3, 5, 5), action_space_size=4, embed_dim=32, num_heads=4, num_layers=2,
               context_length=2 * (STEPS + 5), max_tokens=2 * (STEPS + 5), env_num=2, num_simulations=4,
               support_size=10)
    cfg.update(overrides)
    torch.manual_seed(0)
    return WorldModel(WorldModelConfig(**cfg)).eval()


def play_episode(wm: WorldModel, steps: int):
    """Two VisualMatch envs searched by ``wm`` for ``steps`` steps: (observations [2, steps, 3, 5, 5],
    actions [2, steps - 1], the last search's output, the actions chosen after the last observation)."""
    envs = [VisualMatchEnv(memory_length=MEMORY) for _ in range(2)]
    obs = [env.reset(seed=i)[0] for i, env in enumerate(envs)]
    rng = np.random.default_rng(0)
    seen, acts, last = [], [], None
    for _ in range(steps):
        seen.append(np.stack(obs))
        out = plan(wm, np.stack(obs), config=SEARCH, rng=rng, last_actions=last, add_noise=True, temperature=1.0)
        last = out.action
        acts.append(last)
        obs = [env.step(int(a))[0] for env, a in zip(envs, last, strict=True)]
    return np.stack(seen, 1), np.stack(acts[:-1], 1), out, last


@pytest.mark.slow  # validation recomputes ~150 tokens at every call
def test_whole_episodes_search_exactly_through_the_paged_arena():
    wm = build(cache_validation_mode=True)  # every call is checked against recomputation (atol 1e-5)
    play_episode(wm, STEPS)
    stats = wm.cache_stats()
    assert stats.fallbacks == 0 and stats.hit_rate == 1.0 and stats.misses == 0
    # Memory at this length: the 2 roots hold their ~150-token contexts, each search node only its own
    # two tokens; nodes holding copies of their contexts would take far more.
    per_token = 2 * wm.config.num_layers * wm.config.embed_dim * 4  # K and V of every layer, float32
    nodes = stats.summary["live_nodes"]
    assert nodes == SEARCH.num_simulations * 2
    assert stats.nbytes < (2 * STEPS * 2 + nodes * STEPS) * per_token / 2


def test_root_contexts_survive_a_snapshot_and_rebuild_for_reanalysis():
    wm = build()
    obs, acts, _, last = play_episode(wm, STEPS - 1)  # the last root holds 149 tokens
    restored = wm.copy_with()
    restored.load_caches_from_bytes(wm.caches_to_bytes())
    nxt = np.random.default_rng(5).random((2, 3, 5, 5), dtype=np.float32)
    a = wm.initial_inference(nxt, last_actions=last)
    b = restored.initial_inference(nxt, last_actions=last)
    assert torch.equal(a.value_logits, b.value_logits) and torch.equal(a.policy_logits, b.policy_logits)
    # Reanalysis: a model that never saw the episode rebuilds that root from the whole episode alone.
    history = np.concatenate([obs, nxt[:, None]], axis=1)  # [2, 76, 3, 5, 5]
    actions = np.concatenate([acts, np.asarray(last)[:, None]], axis=1)  # [2, 75]
    rebuilt = wm.copy_with().initial_inference_from_history(history, actions)
    np.testing.assert_allclose(rebuilt.value_logits, a.value_logits, atol=1e-5)
    np.testing.assert_allclose(rebuilt.policy_logits, a.policy_logits, atol=1e-5)
