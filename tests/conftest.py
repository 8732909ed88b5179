"""Settings shared by every test."""

from __future__ import annotations

import pytest
import torch

# One intra-op torch thread for the whole suite: the tests' tensors are tiny, and a second thread
# only adds synchronisation (its spin-waits cost CPU on a shared machine for no speed-up). The
# tests' training configs ask for one thread too (a Trainer sets its own ``threads``).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Back to one thread around every test: code under test may set another count and keep it."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)
