"""Tiny caches with a recognisable content, shared by the cache tests."""

from __future__ import annotations

import pytest
import torch

from zerokv.cache import KeysValues


def make_kv(value: float, tokens: int = 1, max_tokens: int = 4) -> KeysValues:
    """A tiny cache whose keys are all ``value`` and values all ``-value``."""
    kv = KeysValues(1, 2, max_tokens, 8, 2)
    for layer in kv:
        layer.update(torch.full((1, 2, tokens, 4), value), torch.full((1, 2, tokens, 4), -value))
    return kv


def value_of(kv: KeysValues | None) -> float | None:
    """The ``value`` a cache from :func:`make_kv` was made with (None for a miss)."""
    if kv is None:
        return None
    k, v = kv[1].get()
    assert k.eq(k.flatten()[0]).all() and v.eq(-k).all()
    return k.flatten()[0].item()


@pytest.fixture
def one_thread():
    """One intra-op torch thread for the test: on tiny tensors a second thread only adds
    synchronisation, which on a busy machine made such tests ~100× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
