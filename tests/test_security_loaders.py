"""Every loader checks structure and bounds before it allocates: a config that asks for more
than its weights can hold, a device without storage, a float where an int belongs, a missing or
mistyped key, NaN weights: each is refused by name, in one line from the CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from secutil import (
    TINY_MODEL,
    policy_payload,
    rewrite_config_json,
    tiny_model,
    write_checkpoint,
    write_export,
)

from zerokv import WorldModel, WorldModelConfig
from zerokv.cli import main
from zerokv.model.pretrained import PretrainedError


@pytest.fixture
def exported(tmp_path):
    return write_export(tmp_path / "model", policy_payload())


@pytest.mark.parametrize(("field", "value", "message"), [
    ("num_layers", 100_000, "num_layers=100000 needs at least"),
    ("embed_dim", 1 << 16, "embed_dim=65536 needs at least"),
    ("support_size", 10**9, "support_size=1000000000 needs at least"),
    ("action_space_size", 10**9, "action_space_size=1000000000 needs at least"),
    ("observation_shape", [10**9], "observation_shape[0]=1000000000 needs at least"),
    ("num_simulations", 10**7, "num_simulations=10000000; allowed from a file: at most"),
    ("env_num", 10**6, "env_num=1000000; allowed from a file: at most"),
    ("device", "meta", "device='meta'; allowed: cpu"),
    ("observation_shape", [4.7], "observation_shape[i]=4.7; must be a positive int"),
    ("num_layers", 2**70, "num_layers=1180591620717411303424 needs at least"),
    ("num_layers", "2", "num_layers='2'; must be a positive int"),
])
def test_a_config_json_asking_too_much_is_refused_before_any_allocation(exported, field, value, message):
    rewrite_config_json(exported, **{field: value})
    with pytest.raises(PretrainedError) as e:
        WorldModel.from_pretrained(exported)
    assert message in str(e.value)
    assert "config.json" in str(e.value)


def test_a_caller_may_ask_for_more_cache_than_a_file_may(exported):
    model = WorldModel.from_pretrained(exported, env_num=2, num_simulations=3)
    assert (model.config.env_num, model.config.num_simulations) == (2, 3)


def test_a_safetensors_header_not_matching_its_config_is_named(exported, tmp_path):
    other = WorldModel(WorldModelConfig(**{**TINY_MODEL, "support_size": 6}))
    other.save_pretrained(tmp_path / "other")
    (exported / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(PretrainedError, match="'head_value.2.weight' has shape"):
        WorldModel.from_pretrained(exported)
    (exported / "model.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(PretrainedError, match="not a readable safetensors file"):
        WorldModel.from_pretrained(exported)


def test_nan_weights_are_named_at_load(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.head_value[2].weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(PretrainedError, match="'head_value.2.weight' holds NaN"):
        WorldModel.from_pretrained(tmp_path / "m")


def _without(payload: dict, *keys: str) -> dict:
    payload = dict(payload)
    if len(keys) == 1:
        del payload[keys[0]]
    else:
        payload[keys[0]] = {k: v for k, v in payload[keys[0]].items() if k != keys[1]}
    return payload


def _bad_payloads():
    good = policy_payload()
    nan = policy_payload()
    nan["learner"]["model"] = {k: v.clone() for k, v in nan["learner"]["model"].items()}
    nan["learner"]["model"]["action_embedding.weight"][0, 0] = float("nan")
    other = policy_payload(model=WorldModel(WorldModelConfig(**{**TINY_MODEL, "num_layers": 2})))
    other["model_config"] = good["model_config"]
    huge = policy_payload()
    huge["model_config"] = {**huge["model_config"], "num_layers": 100_000}
    return [
        ("missing learner", _without(good, "learner"), "has no learner/model"),
        ("missing model", _without(good, "learner", "model"), "has no learner/model"),
        ("config a list", {**good, "config": [1, 2]}, "config is a list; expected a mapping"),
        ("wrong type", {**good, "config": {**good["config"], "num_simulations": "many"}},
         "num_simulations='many'"),
        ("other architecture", other, "tensor 'transformer.blocks.1"),
        ("nan weights", nan, "'action_embedding.weight' holds NaN"),
        ("huge", huge, "num_layers=100000 needs at least"),
        ("unknown field", {**good, "model_config": {**good["model_config"], "evil": 1}}, "unknown WorldModelConfig"),
    ]


_CASES = [(command, *case) for command in ("eval", "export") for case in _bad_payloads()
          if not (command == "export" and case[0] == "wrong type")]  # export copies the training config as is


@pytest.mark.parametrize(("command", "name", "payload", "message"), _CASES, ids=[f"{c[0]}-{c[1]}" for c in _CASES])
def test_a_hash_valid_checkpoint_with_bad_fields_is_one_line(command, name, payload, message, tmp_path, capsys):
    path = write_checkpoint(tmp_path / "best.pt", payload)
    argv = {"eval": ["eval", "--checkpoint", str(path)],
            "export": ["export", "--checkpoint", str(path), "--out", str(tmp_path / "e")]}[command]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    # progress lines ("loading X ...") may come first; the error is one line, and no traceback
    last = err.rstrip("\n").split("\n")[-1]
    assert last.startswith(f"zerokv {command}: error: ") and "Traceback" not in err, err
    assert message in last


@pytest.mark.parametrize(("text", "message"), [
    ("{", "is not valid JSON"),
    ('{"format": "zerokv-world-model", "format_version": 1, "train_config": {}}', "world_model_config must be a mapping"),
    ('[1, 2]', "not a zerokv model config"),
])
def test_a_bad_config_json_is_one_line(exported, text, message, capsys):
    (exported / "config.json").write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--checkpoint", str(exported)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_a_yaml_config_nested_5000_deep_is_one_line(tmp_path, capsys):
    (tmp_path / "deep.yaml").write_text("env: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", str(tmp_path / "deep.yaml"), "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert "nests too deeply" in capsys.readouterr().err


def test_an_exported_pair_still_loads_exactly(exported):
    model = WorldModel.from_pretrained(exported)
    reference = tiny_model()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)
    assert json.loads((exported / "config.json").read_text())["world_model_config"]["num_layers"] == 1
    assert dataclasses.asdict(model.config)["embed_dim"] == 16


@pytest.mark.parametrize("backend", ["none", "legacy", "manager", "paged"])
def test_a_huge_finite_observation_never_enters_a_cache(backend):
    import numpy as np

    model = WorldModel(WorldModelConfig(**{**TINY_MODEL, "env_num": 2, "cache_backend": backend})).eval()
    clean = np.ones((2, 4), np.float32)
    model.initial_inference(clean, env_ids=[0, 1])
    reference = model.initial_inference(clean, env_ids=[0, 1], last_actions=[1, 0])
    twin = WorldModel(WorldModelConfig(**{**TINY_MODEL, "env_num": 2, "cache_backend": backend})).eval()
    twin.load_state_dict(model.state_dict())
    twin.initial_inference(clean, env_ids=[0, 1])
    before = twin.caches_to_bytes() if backend == "paged" else None
    huge = clean.copy()
    huge[1] = 3e38
    with pytest.raises(ValueError, match=r"env 1\).*nothing was stored"):
        twin.initial_inference(huge, env_ids=[0, 1], last_actions=[1, 0])
    if before is not None:
        from test_security_snapshots import same_content

        assert same_content(twin.caches_to_bytes(), before)
    again = twin.initial_inference(clean, env_ids=[0, 1], last_actions=[1, 0])
    assert torch.equal(again.value, reference.value) and torch.equal(again.policy_logits, reference.policy_logits)
    assert torch.isfinite(again.value).all()
