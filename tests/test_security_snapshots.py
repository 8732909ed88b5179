"""Forged cache snapshots: the content hash is recomputed by the forger, so every field is
checked on its own (positions, unique envs, finite payload, integer epoch) and a refused load
changes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kvutil import one_thread  # noqa: F401  (fixture)
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from test_cache_snapshot import build, play

from zerokv import SnapshotError
from zerokv.model import snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


def forge(data: bytes, tensors=None, header=None) -> bytes:
    """``data`` with tensors and header fields replaced, and its content hash recomputed."""
    t = st_load(data)
    size = int.from_bytes(data[:8], "little")
    h = json.loads(json.loads(data[8:8 + size])["__metadata__"]["zerokv"])
    t.update(tensors or {})
    h.update(header or {})
    text = json.dumps(h, sort_keys=True)
    return st_save(t, metadata={"zerokv": text, "content_blake3": snapshot._content_hash(text, t)})


def content(data: bytes) -> tuple[dict, dict]:
    """A snapshot's tensors and header (its bytes may order the metadata differently)."""
    size = int.from_bytes(data[:8], "little")
    return st_load(data), json.loads(json.loads(data[8:8 + size])["__metadata__"]["zerokv"])


def same_content(x: bytes, y: bytes) -> bool:
    (tx, hx), (ty, hy) = content(x), content(y)
    return hx == hy and tx.keys() == ty.keys() and all(torch.equal(tx[k], ty[k]) for k in tx)


@pytest.fixture(scope="module")
def taken():
    a = build()
    play(a, 2, np.random.default_rng(0))
    return a, a.caches_to_bytes()


def _cases(data: bytes):
    t = st_load(data)
    last, envs, payload = t["last"].clone(), t["envs"].clone(), t["payload"].clone()
    negative = last.clone()
    negative[0] = -5
    duplicated = envs.clone()
    duplicated[1] = duplicated[0]
    nan = payload.clone()
    nan.view(-1)[3] = float("nan")
    huge = payload.float().clone()
    huge.view(-1)[3] = 1.5e38  # finite, but attention over it overflows into NaN
    return [
        ({"last": negative}, {}, "before position 0"),
        ({"envs": duplicated}, {}, "repeat an env"),
        ({"payload": nan}, {}, "payload holds NaN"),
        ({"payload": huge.to(payload.dtype)}, {}, "reach 1.5e"),
        ({"lengths": t["lengths"].double()}, {}, "expected a vector of int64"),
        ({}, {"epoch": 1.5}, "epoch 1.5"),
        ({}, {"epoch": 2**70}, "epoch"),
        ({"key_epochs": t["key_epochs"] + 10**6}, {}, "key epochs"),
    ]


def test_forged_snapshots_with_a_valid_hash_are_refused_and_change_nothing(taken):
    a, data = taken
    b = a.copy_with()
    b.load_caches_from_bytes(data)
    before = b.caches_to_bytes()
    for tensors, header, message in _cases(data):
        with pytest.raises(SnapshotError, match=message):
            b.load_caches_from_bytes(forge(data, tensors, header))
        assert same_content(b.caches_to_bytes(), before)
    b.load_caches_from_bytes(forge(data))  # the unforged content re-hashed still loads
    assert same_content(b.caches_to_bytes(), before)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_snapshot_bytes_are_refused_or_load_exactly(taken, data):
    """Any byte flipped: without a new hash always a SnapshotError; with a recomputed hash a
    SnapshotError or a model whose answers stay finite."""
    a, raw = taken
    t = st_load(raw)
    name = data.draw(st.sampled_from(sorted(t)))
    flat = t[name].contiguous().view(torch.uint8).reshape(-1).clone()
    if flat.numel() == 0:
        return
    i = data.draw(st.integers(0, flat.numel() - 1))
    flat[i] ^= data.draw(st.integers(1, 255))
    mutated = flat.view(t[name].dtype).reshape(t[name].shape)
    rehash = data.draw(st.booleans())
    blob = forge(raw, {name: mutated}) if rehash else raw[:-7] + bytes([raw[-7] ^ 1]) + raw[-6:]
    b = a.copy_with()
    try:
        b.load_caches_from_bytes(blob)
    except SnapshotError:
        return
    # Accepted: only a forgery with a recomputed hash that is structurally valid (e.g. two envs'
    # windows swapped, a shorter window) gets here; it cannot be told from a real snapshot, but its
    # answers are finite and the model keeps working.
    assert rehash
    obs = np.random.default_rng(1).random((3, 5), dtype=np.float32)
    got = b.initial_inference(obs, last_actions=[0, 1, 2])
    assert torch.isfinite(got.value).all() and torch.isfinite(got.policy_logits).all()
