"""KV storage dtypes: the stated error per dtype, an exact float32 store, a paged arena and searches on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kvutil import one_thread  # noqa: F401  (fixture)

from zerokv import PagedArena, SearchConfig, WorldModel, WorldModelConfig, plan
from zerokv.cache.storage import KV_STORAGE_DTYPES, KVStorage, dequantize, error_bound, quantize

pytestmark = pytest.mark.usefixtures("one_thread")
LOSSY = ("bfloat16", "float8_e4m3fn", "int8")


def head_vectors(seed: int = 0) -> torch.Tensor:
    """``(6, 7, 16)`` float32 vectors of very different magnitudes per (row, head), one all zero,
    one beyond float8's largest value (448), one of subnormal-sized float8 values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 7, 16, generator=g) * torch.logspace(-6, 4, 7)[None, :, None]
    x[0, 0] = 0.0
    x[1, 1, :4] = 3000.0  # an outlier among small values
    return x


@pytest.mark.parametrize("storage", list(KV_STORAGE_DTYPES))
def test_round_trip_is_within_the_stated_error(storage):
    x = head_vectors()
    q = quantize(x, storage)
    assert q.payload.dtype == KV_STORAGE_DTYPES[storage] and q.payload.shape == x.shape
    back = dequantize(q, torch.empty_like(x))
    assert torch.isfinite(back).all()
    err, bound = (back - x).abs(), error_bound(x, storage)
    assert (err <= bound * (1 + 1e-6)).all(), (err - bound).max()
    if storage == "float32":
        assert torch.equal(back, x)
    else:
        assert err.max() > 0  # it does round
    if storage in ("int8", "float8_e4m3fn"):
        largest = 127 if storage == "int8" else 448
        absmax = x.abs().amax(-1)
        scale = q.scale.float()
        assert q.scale.dtype == torch.bfloat16 and q.scale.shape == x.shape[:-1]
        assert (scale * largest >= absmax).all()  # rounded up: nothing clipped
        assert (scale * largest <= absmax * (1 + 2**-7) + 1e-30).all()
        assert (back[0, 0] == 0).all()  # an all-zero head stays zero


def test_int8_error_is_relative_to_each_heads_own_absmax():
    x = head_vectors()
    err = (dequantize(quantize(x, "int8"), torch.empty_like(x)) - x).abs()
    absmax = x.abs().amax(-1, keepdim=True)
    assert (err <= absmax * (1 + 2**-7) / 254 + 1e-30).all()
    # The head of tiny values keeps its precision although another head holds 3000.
    assert err[1, 0].max() < 1e-7


@pytest.mark.parametrize("storage", list(KV_STORAGE_DTYPES))
def test_storage_rows_round_trip_and_export_import_is_bit_exact(storage):
    s = KVStorage((2, 2, 3, 10, 8), storage, torch.float32, "cpu")
    values = torch.randn(2, 2, 3, 4, 8)
    s.put(torch.tensor([7, 1, 4, 9]), values)
    out = torch.empty(2, 2, 3, 2, 8)
    s.take(torch.tensor([4, 7]), out)
    expected = values[:, :, :, [2, 0]]
    assert (out - expected).abs().le(error_bound(expected, storage) * (1 + 1e-6)).all()
    assert torch.equal(out, expected) == (storage == "float32")
    stored = s.export_rows(np.array([4, 7]))
    other = KVStorage((2, 2, 3, 10, 8), storage, torch.float32, "cpu")
    other.import_rows(np.array([0, 5]), stored)
    again = torch.empty_like(out)
    other.take(torch.tensor([0, 5]), again)
    assert torch.equal(again, out)  # stored form moved: no second rounding


def test_bytes_per_token_count_the_scales():
    shape = (2, 2, 8, 5, 96)  # the atari config: 2 layers, 8 heads of 96
    token = {n: KVStorage(shape, n, torch.float32, "cpu").token_bytes for n in KV_STORAGE_DTYPES}
    assert token == {"float32": 2 * 2 * 768 * 4, "bfloat16": 2 * 2 * 768 * 2,
                     "float8_e4m3fn": 2 * 2 * 8 * (96 + 2), "int8": 2 * 2 * 8 * (96 + 2)}
    assert token["float32"] / token["int8"] > 3.9
    s = KVStorage(shape, "int8", torch.float32, "cpu")
    assert s.nbytes == 5 * token["int8"]


def test_an_int8_arena_gathers_in_the_compute_dtype_within_the_bound():
    arena = PagedArena(env_num=2, num_simulations=2, window=3, num_layers=1, num_heads=2, head_dim=4,
                       storage="int8")
    assert arena.storage == "int8" and arena.kv.dtype == torch.int8 and arena.scale.shape == (1, 2, 2, arena.rows)
    assert arena.node_bytes == 2 * 1 * 2 * 2 * (4 + 2)
    window = torch.randn(1, 2, 2, 2, 3, 4)  # (L, 2, H, B, W, hd)
    arena.write_roots(np.array([0, 1]), ["a", "b"], window, np.array([3, 3]), np.array([2, 2]))
    g = arena.gather(np.array([1, 0]), np.array([0, 0]), new_tokens=0)
    assert g.kv.dtype == torch.float32
    expected = window[:, :, :, [1, 0]]
    assert (g.kv - expected).abs().le(error_bound(expected, "int8") * (1 + 1e-6)).all()
    assert not torch.equal(g.kv, expected)
    arena.check_invariants()
    with pytest.raises(ValueError, match="storage='float16'; allowed: float32, bfloat16, float8_e4m3fn, int8"):
        PagedArena(env_num=1, num_simulations=1, window=1, num_layers=1, num_heads=1, head_dim=2, storage="float16")


# ------------------------------------------------------------------------ the model
def build(**overrides) -> WorldModel:
    cfg = dict(observation_shape=(5,), action_space_size=3, embed_dim=32, num_heads=4, num_layers=2,
               context_length=4, max_tokens=12, env_num=3, num_simulations=8, support_size=10)
    cfg.update(overrides)
    torch.manual_seed(0)
    return WorldModel(WorldModelConfig(**cfg)).eval()


def search_outputs(wm: WorldModel, seed: int = 0) -> tuple[np.ndarray, list[torch.Tensor]]:
    """Visit counts of 3 searches (episodes continuing) and every recurrent call's policy logits."""
    logits, visits, last = [], [], None
    rng = np.random.default_rng(seed)
    real = wm.recurrent_inference

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        logits.append(out.policy_logits)
        return out

    wm.recurrent_inference = recording
    for _ in range(3):
        out = plan(wm, rng.random((3, 5), dtype=np.float32), config=SearchConfig(num_simulations=8), rng=rng,
                   last_actions=last)
        last = out.action
        visits.append(out.visit_counts)
    return np.stack(visits), logits


def test_float32_storage_is_the_default_and_bit_exact():
    base_visits, base = search_outputs(build())
    for storage in ("float32", None):
        visits, logits = search_outputs(build(kv_storage_dtype=storage))
        assert (visits == base_visits).all() and all(torch.equal(a, b) for a, b in zip(logits, base, strict=True))
    bf16 = build(dtype="bfloat16")
    assert bf16.kv_cache_manager.storage == "bfloat16"  # a bfloat16 model stores in its own dtype
    explicit = build(dtype="bfloat16", kv_storage_dtype="bfloat16")
    assert all(torch.equal(a, b) for a, b in zip(search_outputs(bf16)[1], search_outputs(explicit)[1], strict=True))


def path_outputs(wm: WorldModel) -> list[torch.Tensor]:
    """Policy logits along fixed paths: two real steps (the second extends the stored root), then
    each env's chain of 6 expansions (the window slides), every node's past read from the store."""
    rng = np.random.default_rng(1)
    first = wm.initial_inference(rng.random((3, 5), dtype=np.float32))
    out = wm.initial_inference(rng.random((3, 5), dtype=np.float32), last_actions=[0, 1, 2])
    logits, latent = [first.policy_logits, out.policy_logits], out.latent_state
    for depth in range(6):
        out = wm.recurrent_inference(latent, [depth % 3] * 3, parent_ids=[depth] * 3, child_ids=[depth + 1] * 3)
        logits.append(out.policy_logits)
        latent = out.latent_state
    return logits


@pytest.mark.parametrize("storage", LOSSY)
def test_lossy_storage_stays_close_to_float32_on_the_same_nodes(storage):
    base = path_outputs(build())
    wm = build(kv_storage_dtype=storage)
    assert wm.config.kv_storage_is_lossy
    logits = path_outputs(wm)
    diff = [(a - b).abs().max().item() for a, b in zip(logits, base, strict=True)]
    assert diff[0] == 0  # nothing stored was read yet
    assert 0 < max(diff) < {"bfloat16": 0.01, "float8_e4m3fn": 0.1, "int8": 0.02}[storage], diff
    assert wm.arena(5).kv_cache_manager.storage == storage  # a reanalysis arena stores alike
    assert wm.cache_stats().fallbacks == 0


def test_config_refuses_what_a_storage_dtype_cannot_do():
    with pytest.raises(ValueError, match="kv_storage_dtype='float16'; allowed: float32, bfloat16"):
        WorldModelConfig(kv_storage_dtype="float16")
    with pytest.raises(ValueError, match="only cache_backend='paged' stores keys and values in a dtype other"):
        WorldModelConfig(kv_storage_dtype="int8", cache_backend="manager")
    with pytest.raises(ValueError, match="cache_validation_mode=True with kv_storage_dtype='int8'.*lossy"):
        WorldModelConfig(kv_storage_dtype="int8", cache_validation_mode=True)
    # Storing exactly what is computed is allowed everywhere (and validates as exact).
    assert not WorldModelConfig(kv_storage_dtype="float32", cache_backend="legacy").kv_storage_is_lossy
    assert WorldModelConfig(dtype="bfloat16", kv_storage_dtype="bfloat16", cache_backend="none").kv_storage == "bfloat16"
    assert not WorldModelConfig(dtype="bfloat16", kv_storage_dtype="float32").kv_storage_is_lossy
    assert WorldModelConfig(kv_storage_dtype="float32", cache_validation_mode=True).cache_validation_mode
