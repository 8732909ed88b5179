"""The public inference API refuses every bad input before anything is stored (zerokv/model/inputs.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kvutil import one_thread  # noqa: F401  (fixture)
from test_world_model import build, flatten

from zerokv.search import SearchConfig, plan

pytestmark = pytest.mark.usefixtures("one_thread")
BACKENDS = ("none", "legacy", "manager", "paged")
OBS = np.random.default_rng(0).random((3, 5), dtype=np.float32)
ZEROS, ONES = np.zeros(3, int), np.ones(3, int)


def expand(wm, root, env: int, action: int, parent: int, child: int):
    return wm.recurrent_inference(root.latent_state[env:env + 1], [action], env_ids=[env],
                                  parent_ids=[parent], child_ids=[child])


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(flatten(a), flatten(b), strict=True))


# ------------------------------------------------------------------------------ node ids
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("parent", "child", "match"), [
    (-1, 1, r"parent id -1 of env 0 .*\[0, 12\]"),
    (13, 1, r"parent id 13 of env 0 .*\[0, 12\]"),
    (0, 0, r"child id 0 of env 0 .*\[1, 12\]"),
    (0, -3, r"child id -3 of env 0 .*\[1, 12\]"),
])
def test_node_ids_out_of_range_are_refused_and_leave_every_env_alone(backend, parent, child, match):
    wm, twin = build(backend), build(backend)
    root, twin_root = wm.initial_inference(OBS), twin.initial_inference(OBS)
    with pytest.raises(ValueError, match=match):
        expand(wm, root, 0, 1, parent, child)
    # Every env's next expansion is what a model that never saw the bad call computes (on `paged`
    # a parent id of -1 used to wrap to a row of env 1's root window and overwrite it).
    for env in range(3):
        assert same(expand(wm, root, env, 2, 0, 1), expand(twin, twin_root, env, 2, 0, 1)), env
    assert wm.cache_stats().fallbacks == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_node_ids_of_the_wrong_length_are_named(backend):
    wm = build(backend)
    root = wm.initial_inference(OBS)
    with pytest.raises(ValueError, match="2 parent_ids for a batch of 3"):
        wm.recurrent_inference(root.latent_state, ZEROS, parent_ids=[0, 0], child_ids=ONES)
    with pytest.raises(ValueError, match="4 child_ids for a batch of 3"):
        wm.recurrent_inference(root.latent_state, ZEROS, parent_ids=ZEROS, child_ids=[1, 1, 1, 1])
    with pytest.raises(ValueError, match="parent_ids and child_ids go together"):
        wm.recurrent_inference(root.latent_state, ZEROS, parent_ids=ZEROS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_child_id_is_never_reused_within_a_search(backend):
    wm = build(backend)
    root = wm.initial_inference(OBS)
    expand(wm, root, 1, 0, 0, 1)
    with pytest.raises(ValueError, match="child id 1 of env 1 .*already exists in this search"):
        expand(wm, root, 1, 2, 0, 1)
    expand(wm, root, 2, 2, 0, 1)  # another env's node 1 is another node
    with pytest.raises(ValueError, match="child id 2 of env 0 appears twice"):
        wm.recurrent_inference(root.latent_state[[0, 0]], [0, 1], env_ids=[0, 0], parent_ids=[0, 0],
                               child_ids=[2, 2])
    wm.initial_inference(OBS, last_actions=[0, 0, 0])  # a new search: ids start over
    expand(wm, root, 1, 2, 0, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_parent_must_be_a_node_of_this_search(backend):
    wm = build(backend)
    root = wm.initial_inference(OBS[:2], env_ids=[0, 1])
    with pytest.raises(ValueError, match="parent id 4 of env 1 .*is not a node of this search"):
        expand(wm, root, 1, 0, 4, 1)
    with pytest.raises(ValueError, match=r"env 2 has no root in this search \(the last roots were of envs \[0, 1\]\)"):
        wm.recurrent_inference(root.latent_state[:1], [0], env_ids=[2], parent_ids=[0], child_ids=[1])
    # A parent created in the same call is not there yet: its child waits for the next call.
    with pytest.raises(ValueError, match="parent id 1 of env 0 .*is not a node of this search"):
        wm.recurrent_inference(root.latent_state[[0, 0]], [0, 1], env_ids=[0, 0], parent_ids=[0, 1],
                               child_ids=[1, 2])
    child = expand(wm, root, 0, 0, 0, 1)
    wm.recurrent_inference(child.latent_state, [1], env_ids=[0], parent_ids=[1], child_ids=[2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_search_larger_than_the_model_was_built_for_is_refused(backend):
    wm = build(backend)  # num_simulations=12
    with pytest.raises(ValueError, match=r"child id 13 .*num_simulations=12"):
        plan(wm, OBS, config=SearchConfig(num_simulations=20), rng=np.random.default_rng(0))
    assert wm.cache_stats().fallbacks == 0


# ---------------------------------------------------------------------------- observations
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("bad", "found"), [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_a_non_finite_observation_is_refused_before_anything_is_stored(backend, bad, found):
    wm, twin = build(backend), build(backend)
    wm.initial_inference(OBS)
    twin.initial_inference(OBS)
    size = wm.cache_stats().size
    obs = OBS.copy()
    obs[1, 3] = bad
    with pytest.raises(ValueError, match=rf"obs row 1 \(env 2\) .*{found}"):
        wm.initial_inference(obs, env_ids=[0, 2, 1], last_actions=[0, 1, 2])
    assert wm.cache_stats().size == size
    # The envs go on as if the bad call had never been made.
    a = wm.initial_inference(OBS, env_ids=[0, 2, 1], last_actions=[0, 1, 2])
    b = twin.initial_inference(OBS, env_ids=[0, 2, 1], last_actions=[0, 1, 2])
    assert same(a, b) and wm.cache_stats().fallbacks == 0
    history = np.stack([OBS, OBS], 1)  # [B, T=2, 5]
    history[2, 0, 0] = bad
    with pytest.raises(ValueError, match=rf"observations row 2 \(env 2\) .*{found}"):
        wm.initial_inference_from_history(history, np.zeros((3, 1), int))


def test_integer_and_float64_observations_are_cast_and_complex_ones_refused():
    wm = build("paged")
    frames = np.arange(15, dtype=np.uint8).reshape(3, 5)
    a = wm.initial_inference(frames)
    b = build("paged").initial_inference(frames.astype(np.float32))
    assert same(a, b)
    c = build("paged").initial_inference(OBS.astype(np.float64))
    assert same(c, build("paged").initial_inference(OBS))
    with pytest.raises(TypeError, match="obs of dtype complex64"):
        wm.initial_inference(OBS + 1j)
    with pytest.raises(TypeError, match="obs of dtype torch.complex64"):
        wm.initial_inference(torch.zeros(3, 5, dtype=torch.complex64))
    with pytest.raises(TypeError, match="obs of dtype <U1"):
        wm.initial_inference(np.full((3, 5), "a"))


# ------------------------------------------------------------------ actions and env ids
@pytest.mark.parametrize("backend", ["manager", "paged"])
def test_non_integral_actions_and_env_ids_are_refused(backend):
    wm = build(backend)
    with pytest.raises(TypeError, match="env_ids must be integers; got 0.7"):
        wm.initial_inference(OBS[:1], env_ids=[0.7])
    with pytest.raises(TypeError, match="last_actions must be integers"):
        wm.initial_inference(OBS, last_actions=[0, 1.9, 0])
    root = wm.initial_inference(OBS)
    with pytest.raises(TypeError, match="action must be integers"):
        wm.recurrent_inference(root.latent_state, np.array([0.7, 1.9, 0.0]), parent_ids=ZEROS, child_ids=ONES)
    with pytest.raises(TypeError, match="action must be integers"):
        wm.recurrent_inference(root.latent_state, torch.tensor([0.0, 1.0, 0.0]), parent_ids=ZEROS,
                               child_ids=ONES)
    with pytest.raises(TypeError, match="child_ids must be integers"):
        wm.recurrent_inference(root.latent_state, ZEROS, parent_ids=ZEROS, child_ids=[1.0, 1, 1])
    with pytest.raises(TypeError, match="actions must be integers"):
        wm.initial_inference_from_history(np.stack([OBS, OBS], 1), np.full((3, 1), 0.5))
    # Integral inputs of every kind pass.
    out = wm.recurrent_inference(root.latent_state, torch.tensor([0, 1, 2]), env_ids=np.arange(3),
                                 parent_ids=torch.zeros(3, dtype=torch.int32), child_ids=[np.int64(1)] * 3)
    assert out.value.shape == (3,)


# --------------------------------------------------------------------------- latent state
@pytest.mark.parametrize("backend", ["none", "paged"])
def test_the_latent_state_is_checked(backend):
    wm = build(backend)
    root = wm.initial_inference(OBS)
    latent = root.latent_state.clone()
    latent[2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"latent_state row 2 \(env 2\) .*NaN"):
        wm.recurrent_inference(latent, ZEROS, parent_ids=ZEROS, child_ids=ONES)
    with pytest.raises(TypeError, match="latent_state of dtype torch.int64"):
        wm.recurrent_inference(root.latent_state.long(), ZEROS, parent_ids=ZEROS, child_ids=ONES)
    with pytest.raises(ValueError, match=r"latent_state of shape \(3, 31\); expected \(3, 32\)"):
        wm.recurrent_inference(root.latent_state[:, :31], ZEROS, parent_ids=ZEROS, child_ids=ONES)
    # Nothing was stored by the refused calls: node 1 is still free, and numpy latents work.
    out = wm.recurrent_inference(root.latent_state.numpy().astype(np.float64), ZEROS, parent_ids=ZEROS,
                                 child_ids=ONES)
    assert torch.isfinite(out.value).all() and wm.cache_stats().fallbacks == 0
