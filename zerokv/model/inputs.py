"""Checks of everything the world model's entry points accept, run once at each entry point.

Every check runs before the call changes any state: a refused call stores nothing, so a bad row
can neither corrupt a cache nor poison an env's later searches. Errors name the argument, the row
(and its env) and what is allowed: ``TypeError`` for a wrong kind of value, ``ValueError`` for a
wrong value.

* Observations: real numbers. float32 is used as given; integer (e.g. uint8 frames, *not*
  rescaled), bool and float64 inputs are cast to float32 (float64 rounds to float32's precision),
  then to the model's dtype. Complex, string and object inputs are refused, as is any NaN or ±inf.
* Actions, env ids and node ids: integers — Python ints, numpy integers, integer arrays or
  integer tensors. Floats are refused even when integral (0.7 used to become 0, silently).
* Node ids (``parent_ids``/``child_ids``): within the search's range, a parent that the search
  has already created for that env, a child id new to the search; see :func:`node_ids`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

NO_ACTION = -1  # last_actions entry of an env whose episode just started
_REAL_KINDS = "biuf"  # numpy kinds cast to float32: bool, signed/unsigned int, float


# --------------------------------------------------------------------------- integers
def integers(values, name: str, *, allow_none: bool = False) -> np.ndarray:
    """``values`` (a sequence, array or tensor of integers) as a flat int64 array.

    ``allow_none``: a ``None`` entry (or ``values`` None) stands for :data:`NO_ACTION`.
    """
    if torch.is_tensor(values):
        if values.dtype.is_floating_point or values.dtype.is_complex or values.dtype == torch.bool:
            raise TypeError(f"{name} must be integers; got a tensor of dtype {values.dtype}")
        return values.detach().cpu().reshape(-1).numpy().astype(np.int64)
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return _int64(values.reshape(-1), name)
    if isinstance(values, np.ndarray) and values.dtype.kind != "O":
        raise TypeError(f"{name} must be integers; got an array of dtype {values.dtype}")
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of integers; got {values!r}")
    if not isinstance(values, np.ndarray):
        arr = np.asarray(values) if not allow_none else None  # the fast path: a list of ints
        if arr is not None and arr.dtype.kind in "iu":
            return _int64(arr.reshape(-1), name)
    out = []
    for v in _flat(values):
        if v is None and allow_none:
            out.append(NO_ACTION)
        elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
            if not _INT64_MIN <= int(v) <= _INT64_MAX:
                raise ValueError(f"{name} entry {int(v)} is out of range; ids and actions fit in int64 "
                                 "(and their own bounds, checked next)")
            out.append(int(v))
        else:
            raise TypeError(f"{name} must be integers; got {v!r}")
    return np.asarray(out, np.int64)


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _int64(arr: np.ndarray, name: str) -> np.ndarray:
    """An integer array as int64, refusing unsigned values that int64 cannot hold (they would wrap)."""
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > _INT64_MAX:
        raise ValueError(f"{name} entry {int(arr.max())} is out of range; ids and actions fit in int64")
    return arr.astype(np.int64)


def _flat(values):
    """The entries of a nested sequence (lists, tuples, arrays, tensors), integral tensors as ints."""
    for v in values:
        if torch.is_tensor(v):
            if v.dtype.is_floating_point or v.dtype.is_complex or v.dtype == torch.bool:
                yield v  # refused by the caller, named as given
            else:
                yield from np.asarray(v.detach().cpu()).reshape(-1).tolist()
        elif isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim > 0):
            yield from _flat(v)
        else:
            yield v


def env_ids(ids, batch: int | None, env_num: int, *, unique: bool) -> list[int]:
    """Env ids of ``batch`` rows (None: ``0 … batch-1``), each in ``[0, env_num)``; ``unique``: no
    repeats. ``batch`` None: any number of rows (the caller checks it)."""
    out = list(range(batch)) if ids is None else integers(ids, "env_ids").tolist()
    if batch is not None and len(out) != batch:
        raise ValueError(f"{len(out)} env_ids for a batch of {batch}")
    bad = [e for e in out if not 0 <= e < env_num]
    if bad:
        raise ValueError(f"env_id {bad[0]} outside [0, {env_num}) (env_num={env_num})")
    if unique and len(set(out)) != len(out):
        raise ValueError(f"env_ids {out} repeat an env; one row per env")
    return out


def actions(values, batch: int, action_space: int, *, name: str, allow_no_action: bool) -> list[int]:
    """``batch`` actions in ``[0, action_space)``; ``allow_no_action``: None (all, or an entry) and
    :data:`NO_ACTION` mean "the episode starts here"."""
    if values is None and allow_no_action:
        return [NO_ACTION] * batch
    if values is None:
        raise TypeError(f"{name} must be integers; got None")
    acts = integers(values, name, allow_none=allow_no_action).tolist()
    if len(acts) != batch:
        raise ValueError(f"{len(acts)} actions for a batch of {batch}")
    for a in acts:
        if not (0 <= a < action_space or (allow_no_action and a == NO_ACTION)):
            raise ValueError(f"action {a} outside [0, {action_space})")
    return acts


def action_vectors(values, batch: int, dim: int, *, name: str, allow_no_action: bool) -> tuple[np.ndarray, list[bool]]:
    """``batch`` continuous actions of ``dim`` entries in [-1, 1] → ``(float32 [batch, dim], present [batch])``.

    Accepted: an array or tensor ``[batch, dim]`` (``[batch]`` when dim is 1), or a sequence of
    ``batch`` vectors. ``allow_no_action``: None (all, or an entry) and :data:`NO_ACTION` mean "the
    episode starts here" (a zero row, ``present`` False). NaN, ±inf and values outside [-1, 1] are
    refused, naming the row.
    """
    out = np.zeros((batch, dim), np.float32)
    present = [True] * batch
    if values is None:
        if not allow_no_action:
            raise TypeError(f"{name} must be {dim}-entry action vectors; got None")
        return out, [False] * batch
    if torch.is_tensor(values):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray) and values.dtype.kind != "O":
        rows = list(values.reshape(batch, -1)) if values.size == batch * dim else None
        if rows is None:
            raise ValueError(f"{name} of shape {values.shape}; expected ({batch}, {dim}) continuous actions")
    else:
        rows = list(values)
    if len(rows) != batch:
        raise ValueError(f"{len(rows)} actions for a batch of {batch}")
    for i, row in enumerate(rows):
        if allow_no_action and (row is None or (isinstance(row, (int, np.integer)) and row == NO_ACTION)):
            present[i] = False
            continue
        vec = np.asarray(row.detach().cpu() if torch.is_tensor(row) else row)
        if vec.dtype.kind not in "fiu" or vec.size != dim:
            raise ValueError(f"{name}[{i}] = {row!r}; expected a real vector of {dim} entries in [-1, 1]")
        vec = vec.reshape(dim).astype(np.float32)
        if not np.isfinite(vec).all():
            raise ValueError(f"{name}[{i}] = {vec.tolist()} holds NaN or inf; continuous actions must be "
                             "finite, in [-1, 1]; nothing was stored")
        if np.abs(vec).max(initial=0.0) > 1.0:
            raise ValueError(f"{name}[{i}] = {vec.tolist()} outside [-1, 1]: continuous actions are the env's "
                             "bounded Box rescaled to [-1, 1]")
        out[i] = vec
    return out, present


# ---------------------------------------------------------------------- real tensors
def observations(obs, shape: tuple[int, ...], *, steps: bool, name: str) -> torch.Tensor:
    """``obs`` as a float32 tensor ``(B, *shape)`` (``(B, T, *shape)`` with ``steps``, T ≥ 1)."""
    obs = _real(obs, name)
    lead = 2 if steps else 1
    if obs.dim() != len(shape) + lead or tuple(obs.shape[lead:]) != shape or (steps and obs.shape[1] < 1):
        expected = ("B, T" if steps else "B") + "".join(f", {d}" for d in shape)
        raise ValueError(f"{name} of shape {tuple(obs.shape)}; expected ({expected})")
    if obs.shape[0] < 1:
        raise ValueError(f"{name} of shape {tuple(obs.shape)} is an empty batch; give at least one env's observation")
    return obs


def latent(latent_state, env_ids: Sequence[int], embed_dim: int) -> torch.Tensor:
    """``latent_state`` as a finite floating-point tensor ``(len(env_ids), embed_dim)``."""
    x = latent_state
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not torch.is_tensor(x) or not x.dtype.is_floating_point:
        kind = f"dtype {x.dtype}" if hasattr(x, "dtype") else f"type {type(x).__name__}"
        raise TypeError(f"latent_state of {kind}; expected a floating-point tensor (B, E)")
    if x.shape != (len(env_ids), embed_dim):
        raise ValueError(f"latent_state of shape {tuple(x.shape)}; expected ({len(env_ids)}, {embed_dim})")
    if not env_ids:
        raise ValueError("latent_state is an empty batch; give at least one row")
    finite(x, env_ids, "latent_state")
    return x


def finite(x: torch.Tensor, env_ids: Sequence[int], name: str, used: torch.Tensor | None = None) -> None:
    """Raise naming the first row of ``x (B, …)`` (and its env) holding a NaN or ±inf.

    ``used (B, T)``: with ``x (B, T, …)``, only entries ``x[i, t]`` where ``used[i, t]`` count.
    """
    ok = torch.isfinite(x)
    if bool(ok.all()):
        return
    bad = ~ok.flatten(used.dim() if used is not None else 1)
    if used is not None:
        bad = bad & used.unsqueeze(-1)
    bad = bad.reshape(x.shape[0], -1)  # (B, n)
    rows = torch.nonzero(bad.any(1)).flatten().tolist()
    if not rows:
        return  # only ignored entries are not finite
    row = rows[0]
    values = x[row].reshape(-1)[bad[row]]
    parts = [f"{n} {label}" for n, label in ((int(values.isnan().sum()), "NaN"),
                                             (int(values.isposinf().sum()), "inf"),
                                             (int(values.isneginf().sum()), "-inf")) if n]
    index = tuple(np.unravel_index(int(torch.nonzero(bad[row])[0]), x.shape[1:]))
    raise ValueError(f"{name} row {row} (env {env_ids[row]}) holds {', '.join(parts)} (first at index "
                     f"{tuple(int(i) for i in index)}); inputs must be finite, nothing was stored")


def _real(x, name: str) -> torch.Tensor:
    """``x`` as a float32 tensor (integer, bool and float64 inputs cast); other dtypes refused."""
    if torch.is_tensor(x):
        if x.dtype.is_complex:
            raise TypeError(f"{name} of dtype {x.dtype}; expected real numbers (float32; integer, bool "
                            "and float64 inputs are cast to float32)")
        return x.detach().to(torch.float32)
    arr = np.asarray(x)
    if arr.dtype.kind not in _REAL_KINDS:
        raise TypeError(f"{name} of dtype {arr.dtype}; expected real numbers (float32; integer, bool "
                        "and float64 inputs are cast to float32)")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def history_lengths(lengths, batch: int, steps: int) -> np.ndarray:
    """``lengths [B]`` in ``[1, steps]`` (None: all ``steps``)."""
    if lengths is None:
        return np.full(batch, steps, np.int64)
    out = integers(lengths, "lengths")
    if out.size != batch:
        raise ValueError(f"{out.size} lengths for a batch of {batch}")
    if out.size and (out.min() < 1 or out.max() > steps):
        bad = int(out[(out < 1) | (out > steps)][0])
        raise ValueError(f"history length {bad} outside [1, {steps}] (T={steps} observations given)")
    return out


def right_aligned(histories: Sequence, actions: Sequence, shape: tuple[int, ...], action_dim: int = 0):
    """Histories of different lengths in one batch: ``histories[i] [T_i, *shape]`` and
    ``actions[i] [T_i - 1]`` → ``(obs [B, T, *shape] float32, acts [B, T-1] int64, lengths [B])``
    with T the longest, each row right-aligned (zeros before it). ``action_dim`` D > 0: continuous
    actions, ``actions[i] [T_i - 1, D]`` and ``acts [B, T-1, D]`` float32."""
    lengths = [len(o) for o in histories]
    t = max(lengths)
    obs = np.zeros((len(histories), t, *shape), np.float32)
    acts = np.zeros((len(histories), t - 1, action_dim), np.float32) if action_dim else np.zeros((len(histories), t - 1), np.int64)
    for i, (o, a) in enumerate(zip(histories, actions, strict=True)):
        if len(a) != len(o) - 1:
            raise ValueError(f"history {i}: {len(o)} observations need {len(o) - 1} actions, got {len(a)}")
        obs[i, t - len(o):] = observations(o, shape, steps=False, name=f"observations[{i}]")
        if action_dim:
            acts[i, t - len(o):] = np.asarray(a, np.float32).reshape(len(a), action_dim)
        else:
            acts[i, t - len(o):] = integers(a, f"actions[{i}]")
    return obs, acts, lengths


# -------------------------------------------------------------------------- node ids
def node_ids(parent_ids, child_ids, env_ids: Sequence[int], created: np.ndarray,
             root_envs: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """The search's node ids of one recurrent call, checked against the nodes it has created.

    ``created (env_num, S + 1)`` bool: node n of env e exists in the current search (node 0 is the
    root; S = num_simulations). Returns ``(parents [B], children [B])`` int64, or None when both
    are None (content-keyed backends may go without). Refused: one without the other; a length
    other than B; a parent outside ``[0, S]`` or not yet created for its env (an env without a
    root in this search names ``root_envs``); a child outside ``[1, S]`` — a search larger than
    the model was built for — or already created, or given twice in the call.
    """
    if parent_ids is None and child_ids is None:
        return None
    if parent_ids is None or child_ids is None:
        raise ValueError("parent_ids and child_ids go together: give both (the search's node ids) or "
                         "neither (content-keyed backends only)")
    b, sims = len(env_ids), created.shape[1] - 1
    parents, children = integers(parent_ids, "parent_ids"), integers(child_ids, "child_ids")
    for ids, label in ((parents, "parent_ids"), (children, "child_ids")):
        if ids.size != b:
            raise ValueError(f"{ids.size} {label} for a batch of {b}")
    envs = np.asarray(env_ids, np.int64)
    if ((parents >= 0) & (parents <= sims) & (children >= 1) & (children <= sims)).all() \
            and created[envs, parents].all() and not created[envs, children].any() \
            and len(set((envs * (sims + 1) + children).tolist())) == b:
        return parents, children  # the common case, in one pass; below, which rule failed
    for row in np.flatnonzero((parents < 0) | (parents > sims)).tolist()[:1]:
        raise ValueError(f"parent id {parents[row]} of env {envs[row]} (row {row}) outside [0, {sims}]: "
                         f"a search's node ids run from 0 (the root) to num_simulations={sims}")
    for row in np.flatnonzero((children < 1) | (children > sims)).tolist()[:1]:
        raise ValueError(
            f"child id {children[row]} of env {envs[row]} (row {row}) outside [1, {sims}]: the search makes "
            f"more expansions than num_simulations={sims}, what this model was built for "
            "(WorldModelConfig.num_simulations sizes its caches); build it with num_simulations >= "
            "SearchConfig.num_simulations"
        )
    for row in np.flatnonzero(~created[envs, 0]).tolist()[:1]:
        raise ValueError(f"env {envs[row]} has no root in this search (the last roots were of envs "
                         f"{list(root_envs)}); call initial_inference for it first")
    for row in np.flatnonzero(~created[envs, parents]).tolist()[:1]:
        raise ValueError(f"parent id {parents[row]} of env {envs[row]} (row {row}) is not a node of this "
                         "search: a node is expanded only after the call that created it")
    for row in np.flatnonzero(created[envs, children]).tolist()[:1]:
        raise ValueError(f"child id {children[row]} of env {envs[row]} (row {row}) already exists in this "
                         "search: node ids are never reused within a search")
    _, first, counts = np.unique(envs * (sims + 1) + children, return_index=True, return_counts=True)
    row = int(first[counts > 1][0])
    raise ValueError(f"child id {children[row]} of env {envs[row]} appears twice in this call")
