"""The torch.compile'd recurrent step and learner update: exact against eager, bounded recompiles,
weight updates seen without recompiling, and one warning (then eager) where compilation fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zerokv import WorldModel, WorldModelConfig
from zerokv.model import compiled
from zerokv.rl import compiled as learner_compiled
from zerokv.rl.config import TrainConfig
from zerokv.rl.factory import world_model_config
from zerokv.rl.learner import Learner
from zerokv.rl.replay import GameSegment, ReplayBuffer
from zerokv.search import SearchConfig, plan

HYPER = dict(learning_rate=1e-3, weight_decay=1e-4, grad_clip=5.0, target_update_rate=0.05)


def tiny(env_num: int = 3, **changes) -> WorldModelConfig:
    # env_num 3: searches run 3 rows, padded to the 4-row bucket (the padding path is exercised)
    return WorldModelConfig(observation_shape=(4,), action_space_size=3, embed_dim=16, num_heads=2, num_layers=2,
                            context_length=4, max_tokens=10, support_size=5, num_simulations=12,
                            env_num=env_num, cache_backend="paged", **changes)


def visits(model: WorldModel, obs: np.ndarray) -> np.ndarray:
    model.clear_caches()
    return plan(model, obs, config=SearchConfig(num_simulations=model.config.num_simulations),
                rng=np.random.default_rng(5), add_noise=True, temperature=1.0).visit_counts


def test_bucket_is_the_next_power_of_two():
    assert [compiled.bucket(b) for b in (1, 2, 3, 4, 5, 8, 9, 200)] == [1, 2, 4, 4, 8, 8, 16, 256]


def test_compile_flag_is_checked():
    with pytest.raises(ValueError, match="compile"):
        tiny(compile="yes")


def _failing_compile(*args, **kwargs):
    def fail(*a, **k):
        raise RuntimeError("no C++ compiler here")
    return fail


def test_failed_compile_warns_once_and_searches_eagerly(monkeypatch):
    monkeypatch.setattr(compiled.torch, "compile", _failing_compile)
    torch.manual_seed(0)
    eager = WorldModel(tiny()).eval()
    broken = eager.copy_with(compile=True)
    obs = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler here") as caught:
        got = visits(broken, obs)
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    np.testing.assert_array_equal(got, visits(eager, obs))
    report = broken.compile_report
    assert report.failed.startswith("RuntimeError") and report.compiled_calls == 0 and report.eager_calls > 0


def _replay(cfg: WorldModelConfig) -> ReplayBuffer:
    rng = np.random.default_rng(0)
    replay = ReplayBuffer(200, cfg.observation_shape, cfg.action_space_size, unroll_steps=3, td_steps=2,
                          discount=0.9, seed=0)
    for _ in range(3):
        replay.add(GameSegment.from_arrays(
            rng.random((9, *cfg.observation_shape), dtype=np.float32), rng.integers(3, size=9),
            rng.normal(size=9).astype(np.float32), rng.normal(size=9).astype(np.float32),
            rng.dirichlet(np.ones(3), size=9).astype(np.float32), terminated=False, bootstrap_value=0.5,
        ))
    return replay


def _learners(cfg: WorldModelConfig, **kwargs) -> list[Learner]:
    out = []
    for flag in (False, True):
        torch.manual_seed(0)
        out.append(Learner(WorldModel(cfg), **HYPER, fresh_value_targets=True, td_steps=2, compile=flag, **kwargs))
    return out


def test_failed_learner_compile_warns_once_and_updates_eagerly(monkeypatch):
    monkeypatch.setattr(learner_compiled.torch, "compile", _failing_compile)
    eager, broken = _learners(tiny())
    replay = _replay(tiny())
    with pytest.warns(RuntimeWarning, match="learner update failed") as caught:
        batches = [replay.sample(4) for _ in range(2)]
        got = [broken.update(b) for b in batches]
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert got == [eager.update(b) for b in batches]  # the eager update itself, bit for bit


@pytest.mark.slow
def test_compiled_search_matches_eager_and_reference_and_follows_weight_updates():
    torch.manual_seed(0)
    eager = WorldModel(tiny()).eval()
    fast, reference = eager.copy_with(compile=True), eager.copy_with(cache_backend="none")
    obs = np.random.default_rng(1).random((3, 4), dtype=np.float32)
    got = visits(fast, obs)
    np.testing.assert_array_equal(got, visits(eager, obs))
    np.testing.assert_array_equal(got, visits(reference, obs))
    report = fast.compile_report
    assert sorted(report.graphs) == [4] and report.eager_calls == 0 and report.compiled_calls == 12
    # A weight update (in place, as the learner's) is seen by the next call, with no recompile.
    with torch.no_grad():
        for p in [*eager.parameters(), *fast.parameters()]:
            p.mul_(1.5)
    eager.clear_caches()
    fast.clear_caches()
    np.testing.assert_array_equal(visits(fast, obs), visits(eager, obs))
    out = [m.initial_inference(obs) for m in (eager, fast)]
    step = [m.recurrent_inference(o.latent_state, [0, 1, 2], parent_ids=[0, 0, 0], child_ids=[1, 1, 1])
            for m, o in zip((eager, fast), out, strict=True)]
    for name in ("value_logits", "policy_logits", "reward_logits", "latent_state"):
        torch.testing.assert_close(getattr(step[1], name), getattr(step[0], name), atol=1e-5, rtol=1e-5)
    assert sorted(fast.compile_report.graphs) == [4] and fast.compile_report.recompiles == 0


@pytest.mark.slow
def test_compiled_learner_losses_match_eager():
    cfg = tiny()
    eager, fast = _learners(cfg)
    replay = _replay(cfg)
    for _ in range(2):  # the second update runs on weights the first one changed
        batch = replay.sample(4)
        want, got = eager.update(batch), fast.update(batch)
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
    assert set(fast.parts.compile_seconds) == {"forward", "target", "losses"} and fast.parts.failed is None


def test_train_config_compile_reaches_the_model_and_is_checked():
    assert world_model_config(TrainConfig(env="CartPole-v1", compile=True)).compile
    assert not world_model_config(TrainConfig(env="CartPole-v1")).compile
    with pytest.raises(ValueError, match="compile"):
        TrainConfig(compile=1)


def test_compile_note_names_graphs_and_fallbacks():
    parts = learner_compiled.UpdateParts(None, None, None, compiled=True, compile_seconds={"forward": 2.0})
    parts.failed = "RuntimeError: boom"
    note = learner_compiled.compile_note(parts, compiled.CompileReport(graphs={8: 3.5}, recompiles=1))
    assert "forward 2.0 s" in note and "8 rows 3.5 s" in note and "1 recompiles" in note
    assert "learner fell back to eager (RuntimeError: boom)" in note
