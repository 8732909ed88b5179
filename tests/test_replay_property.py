"""Random add / sample / reanalyse / snapshot sequences against a plain-Python model of the buffer.

The model is a list of whole segments with FIFO eviction by total steps. After every operation
the buffer's invariant holds (`check_invariants`) and its contents, oldest first, equal the
model's; every sampled row equals the per-row reference on the model's segments; a snapshot
round trip gives a buffer that holds the same and continues the same sample stream.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from replayutil import assert_rows_match, reference_batch

from zerokv.rl import GameSegment, ReplayBuffer
from zerokv.rl.snapshot import read_snapshot, write_snapshot

ACTIONS = 3
UNROLL, TD, DISCOUNT = 2, 2, 0.5
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 7), st.booleans()),
        st.tuples(st.just("sample"), st.integers(1, 6)),
        st.tuples(st.just("reanalyse"), st.integers(1, 5)),
        st.tuples(st.just("snapshot")),
    ),
    max_size=25,
)


def make_segment(seg_id: int, length: int, terminated: bool) -> GameSegment:
    """obs = [seg_id, t] as uint8: a sampled row names its segment and step."""
    rng = np.random.default_rng(seg_id)
    seg = GameSegment((2,), ACTIONS, np.uint8)
    for t in range(length):
        seg.append(np.array([seg_id, t], np.uint8), int(rng.integers(ACTIONS)), float(rng.integers(-2, 3)),
                   float(rng.normal()), rng.dirichlet(np.ones(ACTIONS)).astype(np.float32))
    seg.close(terminated=terminated, bootstrap_value=float(rng.normal()))
    return seg


class ModelBuffer:
    """The buffer's contract, as plainly as possible: whole segments, oldest first."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.segments = capacity, {}  # seg_id -> GameSegment (dicts keep order)

    def add(self, seg_id: int, seg: GameSegment) -> None:
        self.segments[seg_id] = seg
        while sum(len(s) for s in self.segments.values()) > self.capacity:
            del self.segments[next(iter(self.segments))]

    def flat(self, name: str, empty: np.ndarray) -> np.ndarray:
        return np.concatenate([empty, *(getattr(s, name) for s in self.segments.values())])


def check_contents(buffer: ReplayBuffer, model: ModelBuffer) -> None:
    buffer.check_invariants()
    contents = buffer.contents()
    table = contents.segments
    assert table.lengths.tolist() == [len(s) for s in model.segments.values()]
    assert table.terminated.tolist() == [s.terminated for s in model.segments.values()]
    assert table.bootstrap_values.tolist() == [np.float32(s.bootstrap_value) for s in model.segments.values()]
    for name, views in contents.fields.items():
        stored = np.concatenate(views)
        np.testing.assert_array_equal(stored, model.flat(name, stored[:0]), err_msg=name)


def run_ops(capacity: int, ops: list[tuple], tmp: Path) -> None:
    buffer = ReplayBuffer(capacity, (2,), ACTIONS, observation_dtype=np.uint8, unroll_steps=UNROLL,
                          td_steps=TD, discount=DISCOUNT, seed=0)
    model, next_id, snapshots = ModelBuffer(capacity), 0, 0
    for op in ops:
        if op[0] == "add":
            if op[1] > capacity:
                continue  # refused, tested elsewhere
            seg = make_segment(next_id, op[1], op[2])
            buffer.add(seg)
            model.add(next_id, seg)
            next_id += 1
        elif op[0] == "sample" and buffer.num_steps:
            batch = buffer.sample(op[1])
            starts = [(int(o[0]), int(o[1])) for o in batch.obs[:, 0]]
            assert_rows_match(batch, reference_batch(model.segments, starts, UNROLL, TD, DISCOUNT, ACTIONS), ACTIONS)
        elif op[0] == "reanalyse" and buffer.num_steps:
            positions = buffer.sample_positions(op[1])
            history = buffer.histories(positions, 2)
            ids, steps = history.obs[:, -1, 0].astype(int), history.obs[:, -1, 1].astype(int)
            assert steps.tolist() == positions.steps.tolist()
            assert len(set(zip(ids.tolist(), steps.tolist(), strict=True))) == len(ids)  # distinct
            for row, (i, t) in enumerate(zip(ids.tolist(), steps.tolist(), strict=True)):
                seg, k = model.segments[i], min(2, t)
                assert history.lengths[row] == k + 1
                np.testing.assert_array_equal(history.obs[row, 2 - k:], seg.obs[t - k:t + 1])
                np.testing.assert_array_equal(history.obs[row, :2 - k], 0)
                np.testing.assert_array_equal(history.actions[row, 2 - k:], seg.actions[t - k:t])
                np.testing.assert_array_equal(history.actions[row, :2 - k], 0)
            new_values = np.arange(len(ids), dtype=np.float32) + 100
            new_policies = np.tile(np.eye(ACTIONS, dtype=np.float32)[0], (len(ids), 1))
            buffer.update_targets(positions, new_policies, new_values)
            for i, t, v in zip(ids.tolist(), steps.tolist(), new_values.tolist(), strict=True):
                model.segments[i].root_values[t], model.segments[i].policies[t] = v, new_policies[0]
        elif op[0] == "snapshot":
            path = tmp / f"replay_{snapshots:09d}"
            ref = write_snapshot(path, buffer, run_id="r", env_steps=snapshots)
            restored = ReplayBuffer(capacity, (2,), ACTIONS, observation_dtype=np.uint8, unroll_steps=UNROLL,
                                    td_steps=TD, discount=DISCOUNT, seed=99)
            read_snapshot(path, restored, run_id="r", env_steps=snapshots, meta_sha256=ref.meta_sha256)
            restored.set_rng_state(buffer.rng_state())
            if buffer.num_steps:  # the same stream from here on
                a, b = buffer.sample(4), restored.sample(4)
                for name in a.__slots__:
                    np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
            buffer, snapshots = restored, snapshots + 1
        check_contents(buffer, model)


@pytest.mark.slow  # 80 generated programs, each with snapshot round trips on disk
@settings(max_examples=80, deadline=None)
@given(capacity=st.integers(1, 16), ops=OPS)
def test_replay_matches_model(capacity, ops):
    with tempfile.TemporaryDirectory() as tmp:
        run_ops(capacity, ops, Path(tmp))
