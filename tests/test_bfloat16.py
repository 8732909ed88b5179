"""The bfloat16 search mode: bf16 weights and caches, float32 outputs, close to the float32 reference.

Tolerances. bfloat16 keeps 8 significant bits (unit roundoff 2^-9 ≈ 2e-3); a recurrent call
rounds activations some 15 times on the way to a logit of magnitude ~1, so its logits move by
~1e-2 (measured on these tiny vector models: policy 8e-3, value/reward logits 9e-3, latent 1e-3,
scalars 2e-2). The bounds are 5e-2 for logits and latents and 0.1 for the scalars (relative,
|a−b|/max(1,|b|)): ~5× the measured error, far below what a wrong cast or rotary table gives
(errors of order 1). A lower bound (> 1e-4) shows the model really ran in bfloat16.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_world_model import build, flatten, search_shaped, tiny_config

from zerokv import WorldModel, WorldModelConfig
from zerokv.bench.multileaf import policy_distance
from zerokv.model.support import support_to_scalar
from zerokv.search import SearchConfig, plan

BACKENDS = ("none", "legacy", "manager", "paged")
LOGIT_ATOL = 5e-2
SCALAR_RTOL = 0.1


def float_tensors(obj, seen: set[int] | None = None, depth: int = 16) -> list[torch.Tensor]:
    """Every floating-point tensor reachable from ``obj`` through attributes, lists and dicts."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth == 0:
        return []
    seen.add(id(obj))
    if torch.is_tensor(obj):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        items = list(obj)
    elif hasattr(obj, "__dict__") or hasattr(obj, "__slots__"):
        names = list(getattr(obj, "__dict__", {})) + [
            n for cls in type(obj).__mro__ for n in getattr(cls, "__slots__", ())
        ]
        items = [getattr(obj, n, None) for n in names]
    else:
        return []
    return [t for item in items for t in float_tensors(item, seen, depth - 1)]


def test_dtype_is_validated_and_named():
    assert WorldModelConfig().dtype == "float32" and WorldModelConfig().torch_dtype == torch.float32
    assert WorldModelConfig(dtype="bfloat16").torch_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype='float16'; allowed: float32, bfloat16"):
        WorldModelConfig(dtype="float16")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("validation", [False, True], ids=["plain", "validating"])
def test_weights_caches_and_batch_buffers_are_bfloat16_and_outputs_float32(backend, validation):
    wm = build(backend, dtype="bfloat16", cache_validation_mode=validation)
    root = wm.initial_inference(np.zeros((3, 5), np.float32))
    child = wm.recurrent_inference(root.latent_state, np.zeros(3, int), parent_ids=np.zeros(3, int),
                                   child_ids=np.ones(3, int))
    wm.retrieve_or_generate_kvcache(child.latent_state, [0, 1, 2], node_ids=np.ones(3, int))  # the children
    batch = wm.trim_and_pad_kv_cache(new_tokens=2)
    tensors = float_tensors(wm) + float_tensors(batch)
    assert len(tensors) > len(list(wm.parameters()))  # the caches were reached, not only the weights
    assert {t.dtype for t in tensors} == {torch.bfloat16}
    for out in (root, child):
        assert all(t.dtype == torch.float32 for t in flatten(out))
    assert wm.cache_stats().fallbacks == 0


def test_an_image_model_runs_in_bfloat16():
    wm = build("paged", image=True, dtype="bfloat16")
    out = plan(wm, np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32),
               config=SearchConfig(num_simulations=4), rng=np.random.default_rng(0))
    assert {p.dtype for p in wm.parameters()} == {torch.bfloat16}
    assert out.visit_counts.sum() == 3 * 4 and np.isfinite(out.root_value).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16_outputs_stay_close_to_the_float32_reference(backend):
    reference = search_shaped(build("none"), False)
    wm = build(backend, dtype="bfloat16")
    outputs = search_shaped(wm, False)
    # flatten() lists value and reward scalars first in every group: compare them relatively.
    scalar = [a.dim() == 1 for a in reference]
    logit_diff = max((a - b).abs().max().item() for a, b, s in zip(reference, outputs, scalar, strict=True) if not s)
    scalar_diff = max(((a - b).abs() / a.abs().clamp(min=1)).max().item()
                      for a, b, s in zip(reference, outputs, scalar, strict=True) if s)
    assert 1e-4 < logit_diff <= LOGIT_ATOL
    assert scalar_diff <= SCALAR_RTOL
    bf16_none = search_shaped(build("none", dtype="bfloat16"), False)
    cache_diff = max((a - b).abs().max().item() for a, b in zip(bf16_none, outputs, strict=True))
    assert cache_diff <= 1e-2  # a cache is no further from bf16 recompute than bf16 rounding (measured: 0)
    assert wm.cache_stats().fallbacks == 0 and wm.cache_stats().misses == 0


@pytest.mark.slow
def test_bfloat16_searches_keep_the_float32_search_policy():
    """Real searches: every bf16 backend gives bf16 none's visit counts, close to float32's.

    Measured on 12 positions: float32 vs bfloat16 TV 0.007, same top action everywhere; float32
    under another noise draw: TV 0.07–0.27, top action 58–100%.
    """
    search = SearchConfig(num_simulations=12)
    visits = {}
    for key, backend, dtype in [("float32", "none", "float32"), *((b, b, "bfloat16") for b in BACKENDS)]:
        wm = build(backend, dtype=dtype)
        rng, obs_rng, last, counts = np.random.default_rng(3), np.random.default_rng(4), None, []
        for _ in range(4):
            out = plan(wm, obs_rng.random((3, 5), dtype=np.float32), config=search, rng=rng, last_actions=last)
            counts.append(out.visit_counts)
            last = out.action
        visits[key] = np.concatenate(counts)
        assert wm.cache_stats().fallbacks == 0
    for backend in ("legacy", "manager", "paged"):
        np.testing.assert_array_equal(visits["none"], visits[backend])
    change = policy_distance(visits["float32"], visits["none"])
    assert change["tv"] <= 0.1 and change["top_action_agrees"] >= 0.75, change


def test_load_weights_from_casts_copies_and_clears_the_caches():
    source = build("manager")  # float32, seed 0
    target = build("manager", seed=1, dtype="bfloat16")
    plan(target, np.zeros((3, 5), np.float32), config=SearchConfig(num_simulations=4), rng=np.random.default_rng(0))
    assert target.cache_stats().size > 0
    target.load_weights_from(source)
    assert target.cache_stats().size == 0  # stale keys/values would mix old and new weights
    theirs = source.state_dict()
    for name, tensor in target.state_dict().items():
        assert tensor.dtype == torch.bfloat16
        assert torch.equal(tensor, theirs[name].to(torch.bfloat16)), name
    # bfloat16 matmuls run on oneDNN-packed weights, packed by the search above: the copy must
    # compute with the new weights, exactly as a model that never held the old ones
    obs = np.random.default_rng(3).normal(size=(3, 5)).astype(np.float32)
    fresh = source.copy_with(dtype="bfloat16")
    with torch.no_grad():
        mine, expected = target.initial_inference(obs), fresh.initial_inference(obs)
    assert torch.equal(mine.policy_logits, expected.policy_logits)
    assert torch.equal(mine.latent_state, expected.latent_state)
    back = build("paged", seed=2)  # and back to float32, with another backend and env_num
    back.load_weights_from(target)
    assert all(torch.equal(t, target.state_dict()[n].float()) for n, t in back.state_dict().items())
    with pytest.raises(ValueError, match="parameter .* the architectures differ"):
        build("manager", embed_dim=64).load_weights_from(source)


def test_bfloat16_models_are_not_trained():
    wm = build("paged", dtype="bfloat16")
    with pytest.raises(ValueError, match="dtype='bfloat16'; training needs dtype='float32'"):
        wm.forward_sequence(torch.zeros(1, 2, 5), torch.zeros(1, 2, dtype=torch.long))


@pytest.mark.slow
def test_scalars_of_bfloat16_logits_are_float32():
    logits = torch.randn(4, 21).to(torch.bfloat16)
    value = support_to_scalar(logits, 10)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, support_to_scalar(logits.float(), 10))
    assert support_to_scalar(logits.double(), 10).dtype == torch.float64


def test_a_bfloat16_model_accepts_float32_and_float64_inputs():
    cfg = tiny_config("paged", dtype="bfloat16")
    wm = WorldModel(cfg).eval()
    root = wm.initial_inference(np.zeros((3, 5), np.float64))
    wm.recurrent_inference(root.latent_state.double(), np.zeros(3, int), parent_ids=np.zeros(3, int),
                           child_ids=np.ones(3, int))
    wm.rebuild_root_contexts([0], [np.zeros((2, 5), np.float32)], [[1]])
    assert wm.cache_stats().fallbacks == 0
