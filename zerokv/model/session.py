"""A world model's search state, and the thread it belongs to.

A search is the roots of one ``initial_inference`` (or ``initial_inference_from_history``) call
and the nodes its ``recurrent_inference`` calls create. That state — which envs were rooted,
which node ids exist, the caches' search epoch and the batch in flight — is one per model, so a
model belongs to **one thread at a time**: a per-call lock would not stop two threads' searches
from interleaving and mixing. :class:`ThreadOwner` binds a model to the thread of its first
entry-point call; a call from any other thread raises. To search from several threads, give
each its own model — ``model.arena(n)`` shares the weights with caches of its own,
``model.copy_with()`` copies them — or hand one over explicitly with ``release_thread()``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from zerokv.model import inputs


class ThreadOwner:
    """The thread a model belongs to: bound by the first entry-point call, released explicitly.

    A thread that has finished releases it too (nothing of it can be running any more).
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # makes claiming an unbound model atomic

    def __getstate__(self) -> dict:
        """A copy (``copy.deepcopy(model)``, pickling) is unbound, with a lock of its own: it is
        a new model, free for whichever thread uses it first."""
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def claim(self, entry: str) -> None:
        """Bind to the calling thread if unbound (or its owner has finished); else it must be the owner."""
        current = threading.current_thread()
        if self._thread is current:  # the hot path: one comparison
            return
        with self._lock:
            owner = self._thread
            if owner is None or owner is current or not owner.is_alive():
                self._thread = current
                return
        raise RuntimeError(_refusal(entry, current, owner))

    def check(self, entry: str) -> None:
        """Raise unless the caller may use the model now (it owns it, or no live thread does); binds nothing."""
        current, owner = threading.current_thread(), self._thread
        if owner is not None and owner is not current and owner.is_alive():
            raise RuntimeError(_refusal(entry, current, owner))

    def release(self) -> None:
        """Unbind (from the owning thread, or when unbound): the next entry-point call from any thread binds it."""
        self.check("release_thread")
        self._thread = None


def _refusal(entry: str, current: threading.Thread, owner: threading.Thread) -> str:
    return (
        f"WorldModel.{entry} called from thread {current.name!r} (ident {current.ident}), but this model "
        f"belongs to thread {owner.name!r} (ident {owner.ident}): its search state (roots, node ids, "
        "search epoch, the batch in flight) is one per model, so two threads' searches would mix. Give "
        "each thread its own model: model.arena(n) shares the weights with caches of its own, "
        "model.copy_with() copies them; or hand this one over with model.release_thread() in its thread"
    )


class SearchNodes:
    """The node ids of the current search, per env: what :func:`inputs.node_ids` checks against.

    ``created (env_num, num_simulations + 1)`` bool, node 0 the root. A root call starts a new
    search: every env's nodes are forgotten, then the rooted envs get node 0. Nodes are recorded
    only after the call that creates them has succeeded.
    """

    def __init__(self, env_num: int, num_simulations: int) -> None:
        self.created = np.zeros((env_num, num_simulations + 1), bool)
        self.root_envs: list[int] = []  # envs of the last root call: recurrent rows' default

    def start(self, env_ids: Sequence[int]) -> None:
        self.created[:] = False
        self.created[list(env_ids), 0] = True
        self.root_envs = list(env_ids)

    def check(self, parent_ids, child_ids, env_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | None:
        return inputs.node_ids(parent_ids, child_ids, env_ids, self.created, self.root_envs)

    def add(self, env_ids: Sequence[int], children: np.ndarray) -> None:
        self.created[list(env_ids), children] = True
