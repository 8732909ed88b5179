"""Random sequences of valid and invalid calls to the public inference API, on every backend.

Each call either raises ``ValueError``/``TypeError`` with a message, or returns what the no-cache
reference (``cache_backend="none"``, same weights) returns for the same valid calls — so no bad
call corrupts a cache or changes another env's results. The test's own record of the search
(which envs are rooted, which node ids exist, their latents) decides what is valid.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kvutil import one_thread  # noqa: F401  (fixture)

from zerokv import WorldModel, WorldModelConfig
from zerokv.search import SearchConfig, plan

ENVS, SIMS, ACTIONS, OBS_DIM = 3, 4, 2, 3
ATOL = 1e-5


def build(backend: str) -> WorldModel:
    torch.manual_seed(0)
    cfg = WorldModelConfig(observation_shape=(OBS_DIM,), action_space_size=ACTIONS, embed_dim=16, num_heads=2,
                           num_layers=1, context_length=4, max_tokens=8, env_num=ENVS, num_simulations=SIMS,
                           support_size=3, cache_backend=backend)
    return WorldModel(cfg).eval()


def outputs(out) -> list[torch.Tensor]:
    extra = [] if out.reward_logits is None else [out.reward_logits]
    return [out.value, out.reward, out.policy_logits, out.latent_state, out.value_logits, *extra]


class Spec:
    """What the current search holds, per env: node id → (tested model's latent, reference's latent)."""

    def __init__(self) -> None:
        self.nodes: list[dict[int, tuple]] = [{} for _ in range(ENVS)]
        self.used: list[set[int]] = [set() for _ in range(ENVS)]
        self.rooted: list[int] = []

    def new_search(self, envs: list[int], sims: int = 0, roots=None) -> None:
        self.rooted = list(envs)
        self.nodes = [{} for _ in range(ENVS)]
        self.used = [set() for _ in range(ENVS)]
        for i, e in enumerate(envs):
            self.used[e] = set(range(sims + 1))
            if roots is not None:
                self.nodes[e][0] = (roots[0].latent_state[i], roots[1].latent_state[i])


def expect_refusal(fn, *args, **kwargs) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        fn(*args, **kwargs)
    assert str(info.value)


def assert_close(a, b) -> None:
    for x, y in zip(outputs(a), outputs(b), strict=True):
        assert (x - y).abs().max().item() <= ATOL


def root_args(data, rng: np.random.Generator) -> tuple:
    envs = data.draw(st.lists(st.integers(0, ENVS - 1), min_size=1, max_size=ENVS, unique=True), "envs")
    obs = rng.random((len(envs), OBS_DIM), dtype=np.float32)
    last = data.draw(st.lists(st.one_of(st.none(), st.integers(0, ACTIONS - 1)), min_size=len(envs),
                              max_size=len(envs)), "last")
    return envs, obs, last


ROOT_FAULTS = ["nan", "inf", "complex", "float_action", "bad_env", "dup_env", "float_env", "bad_action",
               "short_actions", "shape"]


def spoil_root(fault: str, envs: list, obs: np.ndarray, last: list) -> tuple:
    envs, obs, last = list(envs), obs.copy(), list(last)
    if fault in ("nan", "inf"):
        obs[-1, 0] = np.nan if fault == "nan" else -np.inf
    elif fault == "complex":
        obs = obs + 1j
    elif fault == "float_action":
        last[0] = 0.7
    elif fault == "bad_env":
        envs[0] = ENVS
    elif fault == "dup_env":
        envs, obs, last = envs + envs[:1], np.concatenate([obs, obs[:1]]), last + last[:1]
    elif fault == "float_env":
        envs[0] = float(envs[0]) + 0.5
    elif fault == "bad_action":
        last[0] = ACTIONS
    elif fault == "short_actions":
        last = last + [0]
    else:
        obs = obs[:, :-1]
    return envs, obs, last


EXPAND_FAULTS = ["parent_oob", "child_oob", "reused_child", "uncreated_parent", "unrooted_env", "nan_latent",
                 "float_action", "bad_action", "short_ids", "int_latent"]


def draw_expansion(data, spec: Spec) -> list[tuple[int, int, int, int]] | None:
    """1–3 valid rows (env, parent, action, child) from known nodes with free child ids, or None."""
    free = {e: sorted(set(range(1, SIMS + 1)) - spec.used[e]) for e in spec.rooted}
    options = [e for e in spec.rooted if spec.nodes[e] and free[e]]
    if not options:
        return None
    rows = []
    for _ in range(data.draw(st.integers(1, 3), "rows")):
        e = data.draw(st.sampled_from(options), "env")
        if not free[e]:
            break
        parent = data.draw(st.sampled_from(sorted(spec.nodes[e])), "parent")
        rows.append((e, parent, data.draw(st.integers(0, ACTIONS - 1), "action"), free[e].pop(0)))
    return rows


def spoil_expansion(fault: str, spec: Spec, rows: list, latent: torch.Tensor, kwargs: dict) -> tuple:
    env, parents, acts, children = (list(x) for x in zip(*rows, strict=True))
    unknown = [n for n in range(1, SIMS + 1) if n not in spec.used[env[0]]]
    unrooted = [e for e in range(ENVS) if e not in spec.rooted]
    if fault == "uncreated_parent" and unknown:
        parents[0] = unknown[0]
    elif fault == "unrooted_env" and unrooted:
        env[0] = unrooted[0]
    elif fault == "reused_child":
        children[0] = parents[0] if parents[0] else 0
    elif fault == "child_oob":
        children[0] = SIMS + 1
    elif fault == "nan_latent":
        latent = latent.clone()
        latent[0, 0] = float("nan")
    elif fault == "float_action":
        acts = np.asarray(acts, np.float64) + 0.5
    elif fault == "bad_action":
        acts[0] = ACTIONS
    elif fault == "short_ids":
        parents = parents[:-1] if len(parents) > 1 else []
    elif fault == "int_latent":
        latent = latent.long()
    else:  # parent_oob, and the faults above that found nothing to spoil
        parents[0] = -1
    return latent, acts, dict(kwargs, env_ids=env, parent_ids=parents, child_ids=children)


def root_call(data, rng, wm, ref, spec: Spec, fault: str | None) -> None:
    envs, obs, last = root_args(data, rng)
    if fault is not None:
        bad = spoil_root(fault, envs, obs, last)
        expect_refusal(wm.initial_inference, bad[1], env_ids=bad[0], last_actions=bad[2])
        return
    a, b = (m.initial_inference(obs, env_ids=envs, last_actions=last) for m in (wm, ref))
    assert_close(a, b)
    spec.new_search(envs, roots=(a, b))


def expand_call(data, wm, ref, spec: Spec, fault: str | None) -> None:
    rows = draw_expansion(data, spec)
    if rows is None:
        return
    env, parents, acts, children = (list(x) for x in zip(*rows, strict=True))
    mine = torch.stack([spec.nodes[e][p][0] for e, p in zip(env, parents, strict=True)])
    theirs = torch.stack([spec.nodes[e][p][1] for e, p in zip(env, parents, strict=True)])
    kwargs = dict(env_ids=env, parent_ids=parents, child_ids=children)
    if fault is not None:
        latent, bad_acts, bad = spoil_expansion(fault, spec, rows, mine, kwargs)
        expect_refusal(wm.recurrent_inference, latent, bad_acts, **bad)
        return
    a = wm.recurrent_inference(mine, np.asarray(acts), **kwargs)
    b = ref.recurrent_inference(theirs, np.asarray(acts), **kwargs)
    assert_close(a, b)
    for i, (e, c) in enumerate(zip(env, children, strict=True)):
        spec.nodes[e][c] = (a.latent_state[i], b.latent_state[i])
        spec.used[e].add(c)


def plan_call(data, rng, wm, ref, spec: Spec, fault: str | None) -> None:
    envs, obs, last = root_args(data, rng)
    noise = np.random.default_rng(data.draw(st.integers(0, 100), "noise"))
    if fault in ("nan", "float_env", "bad_action"):  # refused at the roots
        bad = spoil_root(fault, envs, obs, last)
        expect_refusal(plan, wm, bad[1], config=SearchConfig(num_simulations=2), rng=noise, env_ids=bad[0],
                       last_actions=bad[2])
    elif fault is not None:  # a search larger than the models were built for: refused mid-search
        expect_refusal(plan, wm, obs, config=SearchConfig(num_simulations=SIMS + 2), rng=noise, env_ids=envs,
                       last_actions=last)
        ref.initial_inference(obs, env_ids=envs, last_actions=last)  # its roots were stored
        spec.new_search(envs, sims=SIMS)
    else:
        sims = data.draw(st.integers(1, SIMS), "sims")
        state = noise.bit_generator.state
        a = plan(wm, obs, config=SearchConfig(num_simulations=sims), rng=noise, env_ids=envs, last_actions=last)
        noise.bit_generator.state = state
        b = plan(ref, obs, config=SearchConfig(num_simulations=sims), rng=noise, env_ids=envs, last_actions=last)
        np.testing.assert_array_equal(a.visit_counts, b.visit_counts)
        np.testing.assert_allclose(a.root_value, b.root_value, atol=ATOL, rtol=0)
        spec.new_search(envs, sims=sims)


@pytest.mark.slow  # 40 generated call sequences per backend, each against the reference
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("backend", ["legacy", "manager", "paged"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_calls_are_refused_or_match_the_reference(backend, data):
    wm, ref = build(backend), build("none")
    spec = Spec()
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), "seed"))
    for _ in range(data.draw(st.integers(1, 10), "calls")):
        kind = data.draw(st.sampled_from(["root", "expand", "expand", "plan", "clear"]), "kind")
        faults = EXPAND_FAULTS if kind == "expand" else ROOT_FAULTS
        fault = data.draw(st.one_of(st.none(), st.sampled_from(faults)), "fault")
        if kind == "clear":
            wm.clear_caches()
            ref.clear_caches()
        elif kind == "root":
            root_call(data, rng, wm, ref, spec, fault)
        elif kind == "expand":
            expand_call(data, wm, ref, spec, fault)
        else:
            plan_call(data, rng, wm, ref, spec, fault)
