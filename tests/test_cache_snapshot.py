"""Cache snapshots: an exact round trip, and refusal of stale, foreign or damaged snapshots."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kvutil import one_thread  # noqa: F401  (fixture)

from zerokv import SearchConfig, SnapshotError, WorldModel, WorldModelConfig, plan

pytestmark = pytest.mark.usefixtures("one_thread")
OUTPUTS = ("value", "policy_logits", "latent_state", "value_logits")


def build(seed: int = 0, **overrides) -> WorldModel:
    cfg = dict(observation_shape=(5,), action_space_size=3, embed_dim=32, num_heads=4, num_layers=2,
               context_length=4, max_tokens=12, env_num=3, num_simulations=8, support_size=10)
    cfg.update(overrides)
    torch.manual_seed(seed)
    return WorldModel(WorldModelConfig(**cfg)).eval()


def play(wm: WorldModel, steps: int, rng: np.random.Generator, last=None, env_ids=None):
    """``steps`` searches continuing the episodes; returns the last actions."""
    n = 3 if env_ids is None else len(env_ids)
    for _ in range(steps):
        out = plan(wm, rng.random((n, 5), dtype=np.float32), config=SearchConfig(num_simulations=8), rng=rng,
                   env_ids=env_ids, last_actions=last)
        last = out.action
    return last


def same(a, b) -> bool:
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in OUTPUTS)


@pytest.mark.parametrize("storage", [None, "int8", "float8_e4m3fn"])
def test_a_loaded_model_continues_exactly_like_the_uninterrupted_one(tmp_path, storage):
    a = build(kv_storage_dtype=storage)
    last = play(a, 3, np.random.default_rng(0))
    path = tmp_path / "roots.safetensors"
    a.save_caches(path)
    b, cold = a.copy_with(), a.copy_with()
    b.load_caches(path)
    obs = np.random.default_rng(1).random((3, 5), dtype=np.float32)
    out_a = a.initial_inference(obs, last_actions=last)
    out_b = b.initial_inference(obs, last_actions=last)
    assert same(out_a, out_b)
    assert not same(out_a, cold.initial_inference(obs, last_actions=last))  # the snapshot carried the context
    assert b.cache_stats().hits == 3 and cold.cache_stats().hits == 0 and b.cache_stats().fallbacks == 0
    # The searches and episodes after it are the same too.
    rng_a, rng_b = np.random.default_rng(2), np.random.default_rng(2)
    assert (play(a, 2, rng_a, last) == play(b, 2, rng_b, last)).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roots.safetensors"]  # no temp file left


def test_only_the_envs_with_a_context_and_their_keys_are_restored():
    a = build()
    play(a, 2, np.random.default_rng(0), env_ids=[0, 2])  # env 1 never rooted
    b = a.copy_with()
    b.load_caches_from_bytes(a.caches_to_bytes())
    obs = np.random.default_rng(1).random((3, 5), dtype=np.float32)
    assert same(a.initial_inference(obs, last_actions=[1, None, 0]), b.initial_inference(obs, last_actions=[1, None, 0]))
    # A cleared model's snapshot keeps the keys without contexts: the next root is a counted fallback.
    a.clear_caches()
    b.load_caches_from_bytes(a.caches_to_bytes())
    a.reset_cache_stats()
    out_a, out_b = a.initial_inference(obs, last_actions=[1, 2, 0]), b.initial_inference(obs, last_actions=[1, 2, 0])
    assert same(out_a, out_b) and a.cache_stats().fallbacks == b.cache_stats().fallbacks == 3
    with pytest.raises(ValueError, match="before any root"):  # a load opens no search
        b.load_caches_from_bytes(a.caches_to_bytes())
        b.recurrent_inference(out_b.latent_state, [0, 0, 0], parent_ids=[0, 0, 0], child_ids=[1, 1, 1])


def test_a_snapshot_from_other_weights_or_another_config_is_refused():
    a = build()
    last = play(a, 2, np.random.default_rng(0))
    data = a.caches_to_bytes()
    cases = [
        (build(seed=1), "weights differ"),
        (build(env_num=4), r"env_num=3.*this model has env_num=4"),
        (build(kv_storage_dtype="int8"), r"kv_storage='float32'.*kv_storage='int8'"),
        (build(cache_backend="manager"), r"cache_backend='paged'.*cache_backend='manager'"),
        (build(dtype="bfloat16"), r"dtype='float32'.*dtype='bfloat16'"),
        (build(embed_dim=64), "embed_dim=32"),
    ]
    for model, message in cases:
        with pytest.raises(SnapshotError, match=message):
            model.load_caches_from_bytes(data)
    # The same weights stored as float32 explicitly, and another num_simulations, load fine.
    build(kv_storage_dtype="float32", num_simulations=5).load_caches_from_bytes(data)
    # Weights changed after the snapshot (a training step, in place): stale, refused, caches untouched.
    with torch.no_grad():
        a.head_policy[0].weight[0, 0] += 1e-3
    obs = np.random.default_rng(1).random((3, 5), dtype=np.float32)
    reference = a.copy_with()
    reference.load_caches_from_bytes(reference.caches_to_bytes())  # its own (empty) snapshot: fine
    with pytest.raises(SnapshotError, match="weights differ"):
        a.load_caches_from_bytes(data)
    assert a.cache_stats().fallbacks == 0
    a.initial_inference(obs, last_actions=last)
    assert a.cache_stats().fallbacks == 0  # its own contexts are still there


def test_damaged_snapshots_are_refused(tmp_path):
    a = build()
    play(a, 1, np.random.default_rng(0))
    data = a.caches_to_bytes()
    b = a.copy_with()
    flipped = bytearray(data)
    flipped[-5] ^= 0x01  # a byte of the last tensor's data
    header_end = 8 + int.from_bytes(data[:8], "little")
    edited = data[:header_end].replace(b'\\"epoch\\": 1', b'\\"epoch\\": 9')
    assert edited != data[:header_end]
    for bad, message in [(bytes(flipped), "does not match its content hash"),
                         (edited + data[header_end:], "does not match its content hash"),
                         (data[:-100], "truncated or damaged"), (b"not a snapshot", "truncated or damaged"),
                         (b"", "truncated or damaged")]:
        with pytest.raises(SnapshotError, match=message):
            b.load_caches_from_bytes(bad)
    path = tmp_path / "roots.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SnapshotError, match="truncated"):
        b.load_caches(path)
    a.save_caches(path)  # replaces the damaged file
    b.load_caches(path)


def test_backends_without_snapshots_refuse_clearly():
    for overrides in (dict(cache_backend="none"), dict(cache_backend="legacy"), dict(cache_validation_mode=True)):
        wm = build(**overrides)
        with pytest.raises(ValueError, match="only cache_backend='paged' .* can copy its root contexts"):
            wm.caches_to_bytes()
    paged = build()
    with pytest.raises(ValueError, match="cannot load cache snapshots with cache_backend='paged\\+validation'"):
        build(cache_validation_mode=True).context_cache.import_state(paged.context_cache.export_state())
