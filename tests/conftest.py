"""Settings shared by every test."""

from __future__ import annotations

import torch

# One intra-op torch thread for the whole suite: the tests' tensors are tiny, and a second thread
# only adds synchronisation (its spin-waits cost CPU on a shared machine for no speed-up). A test
# that is about threads sets its own count (see ``kvutil.one_thread``).
torch.set_num_threads(1)
