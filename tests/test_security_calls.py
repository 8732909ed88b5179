"""Check, then change: a refused call (plan, muzero_search, inference, weight loading) leaves
the model as it was; nothing non-finite enters a cache or a search tree."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from secutil import TINY_MODEL

from zerokv import WorldModel, WorldModelConfig
from zerokv.search import SearchConfig, muzero_search, plan
from zerokv.search.records import RecurrentFnOutput, RootFnOutput

SEARCH = SearchConfig(num_simulations=6)


def model(backend: str = "paged", seed: int = 0) -> WorldModel:
    torch.manual_seed(seed)
    return WorldModel(WorldModelConfig(**{**TINY_MODEL, "env_num": 2, "num_simulations": 6,
                                          "cache_backend": backend})).eval()


OBS = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, -0.1, 0.0, 0.2]], np.float32)


@pytest.mark.parametrize("bad", [
    {"temperature": -1.0}, {"temperature": float("nan")}, {"add_noise": "yes"}, {"rng": 3},
    {"config": {"num_simulations": 6}}, {"legal_actions_mask": np.zeros((2, 2), bool)},
    {"legal_actions_mask": np.ones((2, 3), bool)}, {"legal_actions_mask": np.ones((2, 2), np.int64)},
])
@pytest.mark.parametrize("backend", ["none", "paged"])
def test_a_refused_plan_leaves_no_trace(bad, backend):
    """The retry's visit counts equal those of a model that never saw the refused call."""
    def run(refuse: bool) -> np.ndarray:
        wm, rng = model(backend), np.random.default_rng(7)
        first = plan(wm, OBS, config=SEARCH, rng=rng)
        last = first.action.tolist()
        if refuse:
            args = {"config": SEARCH, "rng": rng, "last_actions": last, **bad}
            with pytest.raises((ValueError, TypeError)):
                plan(wm, OBS + 0.1, **args)
        return plan(wm, OBS + 0.1, config=SEARCH, rng=rng, last_actions=last).visit_counts

    np.testing.assert_array_equal(run(True), run(False))


def test_an_empty_batch_is_a_clear_error():
    with pytest.raises(ValueError, match="empty batch"):
        plan(model(), np.zeros((0, 4), np.float32), config=SEARCH, rng=np.random.default_rng(0))


def _root(value=(0.0, 0.0), logits=((0.0, 0.0), (0.0, 0.0))) -> RootFnOutput:
    return RootFnOutput(value=np.asarray(value, np.float32), policy_logits=np.asarray(logits, np.float32),
                        latent=torch.zeros(2, 16))


def _recurrent(logit=0.0, latent=0.0):
    def fn(request):
        n = len(request.tree_index)
        return RecurrentFnOutput(reward=np.zeros(n, np.float32), value=np.zeros(n, np.float32),
                                 policy_logits=np.full((n, 2), logit, np.float32),
                                 latent=torch.full((n, 16), latent))
    return fn


@pytest.mark.parametrize(("root", "fn", "message"), [
    (_root(value=(float("nan"), 0.0)), _recurrent(), r"root.value must be finite; rows \[0\]"),
    (_root(logits=((0.0, float("inf")), (0.0, 0.0))), _recurrent(), "root.policy_logits must be finite"),
    (_root(), _recurrent(logit=float("nan")), "policy_logits must be finite"),
    (_root(), _recurrent(latent=float("nan")), "latent must be finite"),
])
def test_muzero_search_refuses_non_finite_roots_and_outputs(root, fn, message):
    with pytest.raises(ValueError, match=message):
        muzero_search(root, fn, SEARCH, rng=np.random.default_rng(0))


def test_weight_loading_is_all_or_nothing_and_thread_guarded():
    wm, other = model(seed=0), model(seed=1)
    plan(wm, OBS, config=SEARCH, rng=np.random.default_rng(0))  # binds wm to this thread
    before = {k: v.clone() for k, v in wm.state_dict().items()}
    errors = []

    def load() -> None:
        for call in (lambda: wm.load_weights_from(other), lambda: wm.load_state_dict(other.state_dict())):
            try:
                call()
            except RuntimeError as e:
                errors.append(str(e))

    thread = threading.Thread(target=load, name="intruder")
    thread.start()
    thread.join()
    assert len(errors) == 2 and all("intruder" in e for e in errors)
    assert all(torch.equal(before[k], v) for k, v in wm.state_dict().items())  # not one tensor copied
    broken = {**other.state_dict()}
    broken["transformer.ln_f.bias"] = torch.full_like(broken["transformer.ln_f.bias"], float("nan"))
    with pytest.raises(ValueError, match="'transformer.ln_f.bias' holds NaN"):
        wm.load_state_dict(broken)
    del broken["transformer.ln_f.bias"]
    with pytest.raises(ValueError, match="nothing was loaded"):
        wm.load_state_dict(broken)
    assert all(torch.equal(before[k], v) for k, v in wm.state_dict().items())


def test_load_state_dict_clears_the_caches_it_invalidates():
    wm, other = model(seed=0), model(seed=1)
    plan(wm, OBS, config=SEARCH, rng=np.random.default_rng(0))
    wm.load_state_dict(other.state_dict())
    fresh = model(seed=1)
    a = wm.initial_inference(OBS + 0.1, env_ids=[0, 1], last_actions=[0, 1])  # no stale root: a fresh start
    b = fresh.initial_inference(OBS + 0.1, env_ids=[0, 1])
    assert torch.equal(a.value, b.value)


@pytest.mark.parametrize("huge", [2**70, 2**63])
def test_huge_ids_and_actions_are_value_errors(huge):
    wm = model()
    with pytest.raises(ValueError, match="out of range"):
        wm.initial_inference(OBS, env_ids=[0, huge])
    with pytest.raises(ValueError, match="out of range"):
        wm.initial_inference(OBS, last_actions=[huge, 0])
    roots = wm.initial_inference(OBS)
    with pytest.raises(ValueError, match="out of range"):
        wm.recurrent_inference(roots.latent_state, [0, huge])


def test_an_empty_batch_of_observations_is_a_clear_error():
    with pytest.raises(ValueError, match="obs"):
        model().initial_inference(np.zeros((0, 4), np.float32))


def test_validation_mode_reports_a_latent_that_is_not_its_parents():
    from zerokv.errors import CacheValidationError

    wm = WorldModel(WorldModelConfig(**{**TINY_MODEL, "env_num": 2, "num_simulations": 4, "cache_backend": "paged",
                                        "cache_validation_mode": True}))
    roots = wm.initial_inference(OBS)
    wm.recurrent_inference(roots.latent_state, [0, 1], parent_ids=[0, 0], child_ids=[1, 1])
    with pytest.raises(CacheValidationError, match="disagrees with recomputation"):
        # the roots' latents sent as if they were nodes 1's: the paged answer would follow the ids
        wm.recurrent_inference(roots.latent_state, [1, 0], parent_ids=[1, 1], child_ids=[2, 2])
