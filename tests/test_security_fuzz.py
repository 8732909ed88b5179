"""Property tests over the files zerokv reads: mutate an export's config.json fields, a
checkpoint's bytes or its fields (hash recomputed); each load raises a clear error (a ValueError
subclass naming the problem) or yields a model whose weights are the reference's."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from secutil import policy_payload, tiny_model, write_checkpoint, write_export

from zerokv import WorldModel, WorldModelConfig
from zerokv.model.pretrained import PretrainedError
from zerokv.rl.checkpoint import CheckpointError, load_checkpoint
from zerokv.rl.export import ExportArgs, export

FIELDS = [f.name for f in dataclasses.fields(WorldModelConfig)]
VALUES = st.one_of(
    st.integers(-3, 3), st.integers(2**31, 2**80), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.none(), st.booleans(), st.lists(st.integers(-2, 2**40), max_size=3),
    st.sampled_from(["meta", "cuda", "paged", "bfloat16", "float32", "cpu"]),
)
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _matches_reference(model: WorldModel) -> bool:
    reference = tiny_model().state_dict()
    mine = model.state_dict()  # a mutated dtype (bfloat16) casts: compare in the model's dtype
    return all(torch.equal(mine[k], v.to(mine[k].dtype)) for k, v in reference.items())


@pytest.mark.slow
@SETTINGS
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_a_mutated_config_json_is_refused_or_loads_the_reference(tmp_path_factory, field, value):
    directory = write_export(tmp_path_factory.mktemp("export") / "model", policy_payload())
    path = directory / "config.json"
    document = json.loads(path.read_text())
    document["world_model_config"][field] = value
    path.write_text(json.dumps(document))
    try:
        model = WorldModel.from_pretrained(directory)
    except PretrainedError as e:
        assert "\n" not in str(e) and str(e)
        return
    assert _matches_reference(model)


@pytest.mark.slow
@SETTINGS
@given(position=st.integers(0, 10**6), flip=st.integers(1, 255))
def test_a_mutated_checkpoint_byte_is_refused(tmp_path_factory, position, flip):
    path = write_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", policy_payload())
    data = bytearray(path.read_bytes())
    data[position % len(data)] ^= flip
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.mark.slow
@SETTINGS
@given(section=st.sampled_from(["model_config", "config"]), value=VALUES, data=st.data())
def test_a_checkpoint_with_a_mutated_field_and_a_recomputed_hash_is_refused_or_exports_the_reference(
        tmp_path_factory, section, value, data):
    payload = policy_payload()
    field = data.draw(st.sampled_from(sorted(payload[section])))
    payload[section] = {**payload[section], field: value}
    tmp = tmp_path_factory.mktemp("ckpt")
    path = write_checkpoint(tmp / "best.pt", payload)
    try:
        directory = export(ExportArgs(checkpoint=str(path), out=str(tmp / "e")))
        model = WorldModel.from_pretrained(directory)
    except ValueError as e:  # CheckpointError and PretrainedError are ValueErrors
        assert "\n" not in str(e) and str(e)
        return
    assert _matches_reference(model)


def test_a_replay_snapshot_with_an_unparsable_npy_header_is_refused(tmp_path):
    """numpy parses an .npy header with ``ast``: a damaged one raises SyntaxError or TokenError,
    which the loader names like any other damage."""
    import numpy as np
    from test_snapshot import FRAME, atari_buffer

    from zerokv.errors import ReplaySnapshotError
    from zerokv.rl.replay import ReplayBuffer
    from zerokv.rl.snapshot import read_snapshot, write_snapshot

    ref = write_snapshot(tmp_path / "replay_000000060", atari_buffer(60), run_id="r", env_steps=60)
    for damage in (b"{'descr': (", b"{'descr': '<u1', 'fortran_order': Fal se"):
        file = next(p for p in (tmp_path / ref.name).iterdir() if p.suffix == ".npy")
        raw = bytearray(file.read_bytes())
        raw[10:10 + len(damage)] = damage
        file.write_bytes(bytes(raw))
        target = ReplayBuffer(200, FRAME, 6, observation_dtype=np.uint8)
        with pytest.raises(ReplaySnapshotError, match="not a valid .npy file|SHA-256"):
            read_snapshot(tmp_path / ref.name, target, run_id="r", env_steps=60, meta_sha256=ref.meta_sha256)
        assert target.num_steps == 0


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_replay_snapshot_is_refused_and_leaves_replay_whole(tmp_path_factory, data):
    import numpy as np
    from test_snapshot import FRAME, assert_same_contents, atari_buffer

    from zerokv.errors import ReplaySnapshotError as SnapshotError
    from zerokv.rl.replay import ReplayBuffer
    from zerokv.rl.snapshot import read_snapshot, write_snapshot

    tmp = tmp_path_factory.mktemp("replay")
    ref = write_snapshot(tmp / "replay_000000060", atari_buffer(60), run_id="r", env_steps=60)
    path = tmp / ref.name
    file = data.draw(st.sampled_from(sorted(p.name for p in path.iterdir())))
    raw = bytearray((path / file).read_bytes())
    if data.draw(st.booleans()):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    else:
        del raw[data.draw(st.integers(0, len(raw) - 1)):]  # cut
    (path / file).write_bytes(bytes(raw))
    target = ReplayBuffer(200, FRAME, 6, observation_dtype=np.uint8)
    try:
        read_snapshot(path, target, run_id="r", env_steps=60, meta_sha256=ref.meta_sha256)
    except SnapshotError as e:
        assert "\n" not in str(e)
        assert target.num_steps == 0
        target.check_invariants()
        return
    assert_same_contents(atari_buffer(60), target)
