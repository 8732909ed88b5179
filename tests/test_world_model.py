"""The world model with the cache built in: every backend gives the no-cache reference's answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zerokv import CacheValidationError, WorldModel, WorldModelConfig
from zerokv.search import SearchConfig, plan

ATOL = 1e-5


def tiny_config(backend: str, image: bool = False, **overrides) -> WorldModelConfig:
    base = dict(
        observation_shape=(3, 64, 64) if image else (5,), action_space_size=3, embed_dim=32,
        num_heads=4, num_layers=2, context_length=4, max_tokens=12, env_num=3, num_simulations=12,
        support_size=10, cache_backend=backend,
    )
    base.update(overrides)
    return WorldModelConfig(**base)


def build(backend: str, image: bool = False, seed: int = 0, **overrides) -> WorldModel:
    torch.manual_seed(seed)
    return WorldModel(tiny_config(backend, image, **overrides)).eval()


def flatten(out) -> list[torch.Tensor]:
    extra = [] if out.reward_logits is None else [out.reward_logits]
    return [out.value, out.reward, out.policy_logits, out.latent_state, out.value_logits, *extra]


def search_shaped(wm: WorldModel, image: bool, seed: int = 1) -> list[torch.Tensor]:
    """Real steps with differing histories per env, then per step: siblings and a deep path."""
    rng = np.random.default_rng(seed)
    shape = wm.config.observation_shape
    outputs: list[torch.Tensor] = []
    last = None
    for step in range(4):
        obs = rng.random((3, *shape), dtype=np.float32)
        root = wm.initial_inference(obs, last_actions=last)
        outputs += flatten(root)
        # Siblings: every action from the root, one recurrent call each. Node ids as a search
        # numbers them (root 0, then 1, 2, … per env): the paged backend addresses nodes by them.
        children, next_id = [], 1
        for a in range(wm.config.action_space_size):
            child = wm.recurrent_inference(root.latent_state, np.full(3, a), parent_ids=np.zeros(3, int),
                                           child_ids=np.full(3, next_id))
            outputs += flatten(child)
            children.append(child)
            next_id += 1
        # A path deeper than the window (context_length 4 tokens = 2 steps) from the first child.
        latent, parent = children[0].latent_state, 1
        for _ in range(2 * wm.config.context_length):
            child = wm.recurrent_inference(latent, rng.integers(0, 3, size=3), parent_ids=np.full(3, parent),
                                           child_ids=np.full(3, next_id))
            outputs += flatten(child)
            latent, parent, next_id = child.latent_state, next_id, next_id + 1
        # Envs restart at different times: env 1 starts over at step 2, env 2 at step 3.
        last = [int(a) for a in rng.integers(0, 3, size=3)]
        if step == 1:
            last[1] = None
        if step == 2:
            last[2] = None
    return outputs


@pytest.mark.parametrize("image", [False, True], ids=["vector", "image"])
def test_every_backend_matches_the_reference(image):
    reference = search_shaped(build("none", image), image)
    for backend in ("legacy", "manager", "paged"):
        wm = build(backend, image)
        outputs = search_shaped(wm, image)
        diff = max((a - b).abs().max().item() for a, b in zip(reference, outputs, strict=True))
        assert diff <= ATOL, f"{backend}: max |diff| {diff}"
        stats = wm.cache_stats()
        assert stats.fallbacks == 0 and stats.misses == 0


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("leaves_per_call", [1, 4], ids=["one-leaf", "multi-leaf"])
def test_real_searches_give_identical_visit_counts(leaves_per_call, dtype):
    """Every search mode (dtype × leaves per call): each cache gives the visit counts of the
    no-cache reference computed in the same dtype."""
    results = {}
    search = SearchConfig(num_simulations=12, leaves_per_call=leaves_per_call)
    for backend in ("none", "legacy", "manager", "paged"):
        wm = build(backend, dtype=dtype)
        rng = np.random.default_rng(3)
        obs_rng = np.random.default_rng(4)
        visits, last = [], None
        for _ in range(3):
            out = plan(wm, obs_rng.random((3, 5), dtype=np.float32), config=search, rng=rng, last_actions=last)
            visits.append(out.visit_counts)
            last = out.action
            assert out.model_calls == 12 if leaves_per_call == 1 else out.model_calls < 12
        results[backend] = np.stack(visits)
        stats = wm.cache_stats()
        assert stats.fallbacks == 0 and stats.misses == 0
    np.testing.assert_array_equal(results["none"], results["legacy"])
    np.testing.assert_array_equal(results["none"], results["manager"])
    np.testing.assert_array_equal(results["none"], results["paged"])


def test_roots_match_the_teacher_forced_training_forward():
    wm = build("manager")
    rng = np.random.default_rng(0)
    obs = rng.random((1, 6, 5), dtype=np.float32)
    actions = rng.integers(0, 3, size=(1, 6))
    seq = wm.forward_sequence(torch.as_tensor(obs), torch.as_tensor(actions))
    last = None
    for t in range(6):
        root = wm.initial_inference(obs[:, t], env_ids=[0], last_actions=last)
        expected = seq.policy_logits[:, t]
        assert (root.policy_logits - expected).abs().max().item() <= ATOL
        last = [int(actions[0, t])]


@pytest.mark.parametrize("backend", ["legacy", "manager", "paged"])
def test_a_colliding_hash_still_gives_the_right_answers(backend):
    reference = search_shaped(build("none"), False)
    torch.manual_seed(0)
    wm = WorldModel(tiny_config(backend), key_hash=lambda env, epoch, payload: 0).eval()
    outputs = search_shaped(wm, False)
    assert max((a - b).abs().max().item() for a, b in zip(reference, outputs, strict=True)) <= ATOL
    assert wm.cache_stats().fallbacks == 0


@pytest.mark.parametrize("backend", ["legacy", "manager"])
def test_eviction_through_the_real_path(backend):
    wm = build(backend, recur_pool_size=3)
    root = wm.initial_inference(np.zeros((3, 5), np.float32))
    first = wm.recurrent_inference(root.latent_state, np.zeros(3, int))  # 3 children fill the pool
    assert wm.cache_stats().evictions == 0
    wm.recurrent_inference(root.latent_state, np.ones(3, int))  # 3 more evict the first three
    assert wm.cache_stats().evictions == 3
    before = wm.cache_stats().fallbacks
    wm.recurrent_inference(first.latent_state, np.zeros(3, int))  # their pasts are gone
    assert wm.cache_stats().fallbacks == before + 3


def test_no_silent_context_loss_with_default_pools_and_counted_with_tiny_ones():
    def run(**overrides):
        wm = build("manager", **overrides)
        rng, last = np.random.default_rng(0), None
        for _ in range(3):
            out = plan(wm, rng.random((3, 5), dtype=np.float32), config=SearchConfig(num_simulations=12),
                       rng=rng, last_actions=last)
            last = out.action
        return wm.cache_stats()

    assert run().fallbacks == 0
    tiny = run(recur_pool_size=4)
    assert tiny.fallbacks > 0 and tiny.evictions > 0


def test_validation_mode_passes_for_every_backend_on_real_searches():
    def visits(wm) -> np.ndarray:
        rng, last, counts = np.random.default_rng(0), None, []
        for _ in range(2):
            out = plan(wm, rng.random((3, 5), dtype=np.float32), config=SearchConfig(num_simulations=12), rng=rng,
                       last_actions=last)
            counts.append(out.visit_counts)
            last = out.action
        return np.stack(counts)

    reference = visits(build("none"))
    for backend in ("legacy", "manager", "paged"):
        wm = build(backend, cache_validation_mode=True)
        np.testing.assert_array_equal(visits(wm), reference)  # validation changes no answer
        stats = wm.cache_stats()
        assert stats.backend == f"{backend}+validation" and stats.fallbacks == 0 and stats.hits > 0


def test_validation_mode_raises_on_a_corrupted_entry():
    wm = build("manager", cache_validation_mode=True)
    root = wm.initial_inference(np.zeros((3, 5), np.float32))
    child = wm.recurrent_inference(root.latent_state, np.zeros(3, int))
    wm.recurrent_inference(child.latent_state, np.zeros(3, int))  # agrees: no error
    pool = wm.kv_cache_manager.recur_pool
    for key in list(pool.keys()):
        pool.get(key)[0].get()[0].add_(1.0)  # corrupt every stored key tensor of layer 0
    with pytest.raises(CacheValidationError, match="disagrees"):
        wm.recurrent_inference(child.latent_state, np.ones(3, int))


def test_clear_caches_empties_every_pool():
    wm = build("manager")
    root = wm.initial_inference(np.zeros((3, 5), np.float32))
    wm.recurrent_inference(root.latent_state, np.zeros(3, int))
    assert wm.cache_stats().size == 6
    wm.clear_caches()
    stats = wm.cache_stats()
    assert stats.size == 0
    summary = stats.summary
    assert all("size=0" in s for s in summary["init_pools"].values())
    assert "size=0" in summary["recur_pool"]
    assert wm.keys_values_wm_list == [] and wm.keys_values_wm_size_list == []
    # The next real step finds no previous root: a counted fallback, not a silent one.
    wm.initial_inference(np.zeros((3, 5), np.float32), last_actions=[0, 1, 2])
    assert wm.cache_stats().fallbacks == 3


def test_the_seeds_switch():
    assert WorldModelConfig(use_new_cache_manager=True).cache_backend == "manager"
    assert WorldModelConfig(use_new_cache_manager=False).cache_backend == "legacy"
    assert WorldModelConfig().cache_backend == "paged"
    with pytest.raises(ValueError, match="contradicts"):
        WorldModelConfig(use_new_cache_manager=False, cache_backend="manager")
    assert type(build("legacy").kv_cache_manager).__name__ == "LegacyKVStore"
    assert type(build("manager").kv_cache_manager).__name__ == "KVCacheManager"
    assert type(build("paged").kv_cache_manager).__name__ == "PagedArena"


@pytest.mark.parametrize("backend", ["none", "legacy", "manager", "paged"])
def test_the_seeds_names_expand_a_node_exactly_as_recurrent_inference(backend):
    wm, twin = build(backend), build(backend)
    obs = np.random.default_rng(0).random((3, 5), dtype=np.float32)
    roots = [m.initial_inference(obs) for m in (wm, twin)]
    acts, ones = torch.tensor([0, 1, 2]), np.ones(3, int)
    expected = twin.recurrent_inference(roots[1].latent_state, acts, parent_ids=np.zeros(3, int), child_ids=ones)
    # One expansion by hand, through the seeds' names.
    sizes = wm.retrieve_or_generate_kvcache(roots[0].latent_state, [0, 1, 2], node_ids=np.zeros(3, int))
    assert sizes == wm.keys_values_wm_size_list and len(wm.keys_values_wm_list) == 3 and min(sizes) >= 1
    batch = wm.trim_and_pad_kv_cache(new_tokens=2)
    with torch.no_grad():
        h_act = batch.forward(wm.action_embedding(acts).unsqueeze(1))[:, 0]
        latent = wm.head_latent(h_act)
        h_obs = batch.forward(latent.unsqueeze(1))[:, 0]
        wm.update_cache_context(batch, [0, 1, 2], latent, node_ids=ones, is_init_infer=False)
    torch.testing.assert_close(wm.head_policy(h_obs), expected.policy_logits, rtol=0, atol=ATOL)
    torch.testing.assert_close(latent, expected.latent_state, rtol=0, atol=ATOL)
    # The stored children are the same: their own children agree too, and nothing fell back.
    a, b = (m.recurrent_inference(lat, acts, parent_ids=ones, child_ids=np.full(3, 2))
            for m, lat in ((wm, latent), (twin, expected.latent_state)))
    torch.testing.assert_close(a.value_logits, b.value_logits, rtol=0, atol=ATOL)
    assert wm.cache_stats().fallbacks == 0 and wm.cache_stats().hits == twin.cache_stats().hits
    # Roots through update_cache_context start a search, like initial_inference.
    with torch.no_grad():
        fresh = wm.trim_and_pad_kv_cache(new_tokens=1)  # the same pasts; any context will do
        fresh.forward(roots[0].latent_state.unsqueeze(1))
        wm.update_cache_context(fresh, [0, 1, 2], roots[0].latent_state, is_init_infer=True)
    with pytest.raises(ValueError, match="parent id 1 of env 0 .*is not a node of this search"):
        wm.recurrent_inference(latent, acts, parent_ids=ones, child_ids=np.full(3, 2))
    wm.clear_caches()
    assert wm.keys_values_wm_list == [] and wm.cache_stats().size == 0


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(cache_backend="redis"), "cache_backend='redis'"),
        (dict(context_length=5), "context_length=5"),
        (dict(observation_shape=(3, 32, 32)), r"\(3, 32, 32\)"),
        (dict(embed_dim=30), "embed_dim=30"),
        (dict(num_simulations=0), "num_simulations=0"),
        (dict(eviction_strategy="random"), "random"),
    ],
)
def test_bad_config_values_are_named(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny_config("manager", **overrides)


def test_bad_inference_inputs_are_named():
    wm = build("manager")
    with pytest.raises(ValueError, match="env_id 7"):
        wm.initial_inference(np.zeros((1, 5), np.float32), env_ids=[7])
    with pytest.raises(ValueError, match=r"obs of shape \(3, 4\)"):
        wm.initial_inference(np.zeros((3, 4), np.float32))
    root = wm.initial_inference(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="action 5"):
        wm.recurrent_inference(root.latent_state, np.array([0, 5, 1]))


def test_rebuilt_root_context_equals_the_uninterrupted_one():
    rng = np.random.default_rng(5)
    obs = rng.random((4, 3, 5), dtype=np.float32)  # [T, env, D]
    acts = rng.integers(0, 3, size=(3, 3))  # [T-1, env]
    outs = {}
    for rebuild in (False, True):
        wm = build("manager")
        last = None
        for t in range(3):
            wm.initial_inference(obs[t], last_actions=last)
            last = acts[t]
        if rebuild:
            wm.clear_caches()
            wm.rebuild_root_contexts([0, 1, 2], [obs[:3, e] for e in range(3)], [acts[:2, e] for e in range(3)])
        outs[rebuild] = wm.initial_inference(obs[3], last_actions=last)
        assert wm.cache_stats().fallbacks == 0
    for a, b in zip(flatten(outs[False]), flatten(outs[True]), strict=True):
        assert (a - b).abs().max().item() <= ATOL


def test_copy_with_has_the_same_weights_under_another_config_and_leaves_the_rng_alone():
    wm = build("paged")
    state = torch.random.get_rng_state()
    ref = wm.copy_with(cache_backend="none", env_num=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert ref.config.cache_backend == "none" and ref.config.env_num == 5 and not ref.training
    for name, tensor in wm.state_dict().items():
        assert torch.equal(ref.state_dict()[name], tensor) and ref.state_dict()[name] is not tensor, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_equals_the_pairwise_rotation_bit_for_bit(dtype):
    from zerokv.model.transformer import apply_rope, rope_tables

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, 16, generator=gen).to(dtype)  # (q/k, B, H, T, hd)
    positions = torch.randint(0, 5000, (3, 5), generator=gen)
    cos, sin = rope_tables(positions, 16, 10_000.0, dtype)
    angles = positions.float().unsqueeze(-1) * (1.0 / 10_000.0 ** (torch.arange(0, 16, 2).float() / 16))
    c, s = angles.cos().unsqueeze(1).to(dtype), angles.sin().unsqueeze(1).to(dtype)  # (B, 1, T, hd/2)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    expected = torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)
    assert torch.equal(apply_rope(x, cos, sin), expected)


@pytest.mark.parametrize("backend", ["none", "legacy", "manager", "paged"])
def test_cache_stats_is_one_typed_record_counted_once(backend):
    import dataclasses

    from zerokv import CacheReport, StatsSource

    wm = build(backend)
    assert isinstance(wm.kv_cache_manager, StatsSource)
    out = plan(wm, np.zeros((3, 5), np.float32), config=SearchConfig(num_simulations=4), rng=np.random.default_rng(0))
    wm.initial_inference(np.ones((3, 5), np.float32), last_actions=out.action)
    stats = wm.cache_stats()
    assert isinstance(stats, CacheReport) and stats.backend == backend
    # 4 expansions × 3 envs find their parents, then 3 roots their previous roots: each lookup once.
    assert (stats.hits, stats.misses, stats.fallbacks, stats.rebuilds) == (15, 0, 0, 0) and stats.hit_rate == 1.0
    assert stats.size == wm.kv_cache_manager.totals().size > 0 and stats.nbytes > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.hits = 0
    wm.rebuild_root_contexts([0, 2], [np.zeros((2, 5), np.float32)] * 2, [[0], [1]])
    assert wm.cache_stats().rebuilds == 2 and wm.cache_stats().hits == 15
    wm.reset_cache_stats()
    assert (wm.cache_stats().hits, wm.cache_stats().rebuilds) == (0, 0)


def test_weights_are_shared_only_by_the_same_architecture():
    wm = build("paged")
    view = WorldModel(tiny_config("none", env_num=5), share_weights_with=wm)  # another backend and env_num
    assert view.transformer is wm.transformer and view.head_latent is wm.head_latent and not view.training
    obs = np.random.default_rng(0).random((3, 5), dtype=np.float32)
    torch.testing.assert_close(view.initial_inference(obs).policy_logits, wm.initial_inference(obs).policy_logits,
                               rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="embed_dim=64 differs from the shared model's 32"):
        WorldModel(tiny_config("paged", embed_dim=64), share_weights_with=wm)
