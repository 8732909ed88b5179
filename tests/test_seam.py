"""The cache seam: what a context backend provides, and how the seeds' names reach it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from zerokv import WorldModelConfig
from zerokv.model.backends import (
    ContentKeys,
    ContextBackend,
    NodeIdKeys,
    PairedKeys,
    make_backend,
)
from zerokv.model.context import CacheWork, default_key_hash
from zerokv.model.transformer import Transformer

SEEDS = Path(__file__).resolve().parent.parent / "zerokv" / "model" / "seeds.py"
METHODS = {"lookup_roots", "lookup_nodes", "generate", "sizes", "assemble", "store_roots", "store_nodes", "clear"}


def test_the_backend_protocol_is_eight_methods_and_three_attributes():
    methods = {n for n, v in vars(ContextBackend).items() if callable(v) and not n.startswith("_")}
    assert methods == METHODS
    assert set(ContextBackend.__annotations__) == {"name", "store", "keys"}


@pytest.mark.parametrize(("backend", "validate", "keys"), [
    ("none", False, ContentKeys), ("legacy", False, ContentKeys), ("manager", False, ContentKeys),
    ("paged", False, NodeIdKeys), ("paged", True, PairedKeys), ("manager", True, PairedKeys),
])
def test_every_backend_implements_the_protocol_with_its_key_strategy(backend, validate, keys):
    cfg = WorldModelConfig(observation_shape=(4,), action_space_size=2, embed_dim=16, num_heads=2, num_layers=1,
                           context_length=4, max_tokens=8, env_num=2, num_simulations=3, support_size=3,
                           cache_backend=backend, cache_validation_mode=validate)
    b = make_backend(cfg, Transformer(cfg), CacheWork(), default_key_hash)
    assert isinstance(b, ContextBackend) and isinstance(b.keys, keys)
    # None is a row without a past, for every backend: an empty batch row, zero tokens.
    with torch.no_grad():  # as at inference
        batch = b.assemble([None, None], 1)
        assert batch.forward(torch.zeros(2, 1, 16)).shape == (2, 1, 16)


def test_the_seeds_names_use_only_the_cache_layers_public_methods():
    """No backend or store reached directly, no attribute probed with getattr; the only private
    names are the model's own search state (thread owner, node ids) and the adapter's helper."""
    tree = ast.parse(SEEDS.read_text())
    private = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("_")}
    assert private <= {"_owner", "_nodes", "_node_range"}, private
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not attrs & {"backend", "_backend", "_cache"}
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "getattr" not in calls
