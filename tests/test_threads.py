"""A world model belongs to one thread at a time; separate models (or arenas) in separate threads are exact."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from kvutil import one_thread  # noqa: F401  (fixture)
from test_world_model import build

from zerokv import WorldModel, WorldModelConfig
from zerokv.search import SearchConfig, plan

pytestmark = pytest.mark.usefixtures("one_thread")
SEARCH = SearchConfig(num_simulations=6)


def in_thread(fn, name: str = "worker"):
    """Run ``fn()`` in a new thread; returns its result or re-raises its exception."""
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # handed back to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def searches(wm, seed: int, n: int = 3) -> list[np.ndarray]:
    """``n`` searches on one env with histories (last_actions) and fresh roots; their visit counts."""
    rng, obs_rng, last, out = np.random.default_rng(seed), np.random.default_rng(seed + 100), None, []
    for _ in range(n):
        res = plan(wm, obs_rng.random((1, 5), dtype=np.float32), config=SEARCH, rng=rng, env_ids=[0],
                   last_actions=last)
        out.append(res.visit_counts)
        last = res.action
    return out


@pytest.mark.parametrize("backend", ["manager", "paged"])
def test_a_call_from_a_second_thread_is_refused_with_both_threads_named(backend):
    wm = build(backend)
    wm.initial_inference(np.zeros((3, 5), np.float32))  # binds the model to this (main) thread
    me = threading.current_thread().name
    with pytest.raises(RuntimeError, match=rf"thread 'intruder'.*belongs to thread '{me}'.*arena.*copy_with"):
        in_thread(lambda: wm.initial_inference(np.zeros((3, 5), np.float32)), "intruder")
    with pytest.raises(RuntimeError, match="thread 'intruder'"):
        in_thread(lambda: wm.clear_caches(), "intruder")
    # The refused calls changed nothing: the main thread's search goes on.
    assert plan(wm, np.zeros((3, 5), np.float32), config=SEARCH, rng=np.random.default_rng(0)).visit_counts.sum() == 18


def test_a_model_is_handed_over_explicitly():
    wm = build("paged")
    searches(wm, 0, 1)
    with pytest.raises(RuntimeError, match="release_thread.*from thread 'other'.*belongs to thread"):
        in_thread(wm.release_thread, "other")
    wm.release_thread()
    bound, done = threading.Event(), threading.Event()

    def take() -> None:
        searches(wm, 0, 1)  # the first call binds it to "taker"
        bound.set()
        done.wait(30)

    taker = threading.Thread(target=take, name="taker")
    taker.start()
    try:
        assert bound.wait(30)
        with pytest.raises(RuntimeError, match="belongs to thread 'taker'"):
            searches(wm, 0, 1)
    finally:
        done.set()
        taker.join()
    # A finished owner no longer holds it: its next user takes it without a hand-over.
    assert len(searches(wm, 0, 1)) == 1


def test_building_and_copying_a_model_does_not_bind_it():
    wm = build("paged")
    copy = wm.copy_with()  # load_weights_from clears the copy's caches: that must not bind it
    view = wm.arena(1)
    in_thread(lambda: (searches(copy, 0, 1), searches(view, 0, 1)))


@pytest.mark.parametrize("backend", ["none", "manager", "paged"])
def test_one_arena_per_thread_is_exact(backend):
    wm = build(backend)
    arenas = [wm.arena(1), wm.arena(1)]
    sequential = [searches(wm.arena(1), seed) for seed in (0, 1)]
    results: list = [None, None]
    barrier = threading.Barrier(2)

    def work(i: int) -> None:
        barrier.wait()  # both threads search at the same time
        results[i] = searches(arenas[i], i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, expected in zip(results, sequential, strict=True):
        np.testing.assert_array_equal(np.stack(got), np.stack(expected))


def test_a_deep_copy_or_pickle_of_a_model_is_a_new_unbound_model():
    import copy
    import pickle

    model = WorldModel(WorldModelConfig(env_num=2, num_simulations=4)).eval()
    obs = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    first = model.initial_inference(obs)  # binds the model to this thread
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        out = []
        worker = threading.Thread(target=lambda c=clone, o=out: o.append(c.initial_inference(obs)))
        worker.start()
        worker.join()
        assert len(out) == 1  # another thread may use the copy: it is not bound to this one
        torch.testing.assert_close(out[0].value, first.value, rtol=0, atol=0)
