"""Argument checks shared by every config and entry point: one message style, one place.

Each check returns the value (normalised where it says so) or raises ``ValueError`` naming the
argument, the value given and what is allowed, e.g. ``"env_num=0; must be an int >= 1"``.
``owner`` prefixes the message with the class or function that rejected it.

``bool`` is an ``int`` subclass in Python, but ``True`` given as a pool size or a step count is a
typo, not a number: every integer check refuses it. numpy integers are accepted and returned as
plain ``int``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["check_bool", "check_choice", "check_device", "check_float", "check_int", "check_positive_int"]


def _where(owner: str | None, name: str, value: object) -> str:
    return f"{owner + ': ' if owner else ''}{name}={value!r}"


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = None,
              owner: str | None = None, note: str = "") -> int:
    """``value`` as an ``int`` in ``[low, high]`` (either bound may be None: unbounded)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        ok = False
    else:
        value = int(value)
        ok = (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        if low is not None and high is not None:
            allowed = f"an int in [{low}, {high}]"
        elif low is not None:
            allowed = f"an int >= {low}"
        elif high is not None:
            allowed = f"an int <= {high}"
        else:
            allowed = "an int"
        raise ValueError(f"{_where(owner, name, value)}; must be {allowed}{note}")
    return int(value)


def check_positive_int(name: str, value: object, *, owner: str | None = None, note: str = "") -> int:
    """``value`` as an ``int >= 1``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{_where(owner, name, value)}; must be a positive int{note}")
    return int(value)


def check_float(name: str, value: object, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, allow_inf: bool = False,
                owner: str | None = None, note: str = "") -> float:
    """``value`` as a ``float`` within the bounds (open where asked); NaN never passes, and
    ±inf only with ``allow_inf``."""
    bad = isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating))
    number = math.nan if bad else float(value)
    if not bad:
        bad = math.isnan(number) or (math.isinf(number) and not allow_inf)
        bad = bad or (low is not None and (number <= low if low_open else number < low))
        bad = bad or (high is not None and (number >= high if high_open else number > high))
    if bad:
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            parts.append(f"{'<' if high_open else '<='} {high:g}")
        kind = "a number" if allow_inf else "a finite number"
        allowed = kind + (" " + " and ".join(parts) if parts else "")
        raise ValueError(f"{_where(owner, name, value)}; must be {allowed}{note}")
    return number


def check_bool(name: str, value: object, *, owner: str | None = None) -> bool:
    """``value`` if it is a real ``bool`` (``"yes"``, 1 or None are refused, not guessed)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{_where(owner, name, value)}; must be True or False")
    return bool(value)


def check_choice(name: str, value: object, allowed: Iterable[str], *, owner: str | None = None) -> str:
    """``value`` if it is one of ``allowed``."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{_where(owner, name, value)}; allowed: {', '.join(allowed)}")
    return value


DEVICE_TYPES = ("cpu", "cuda", "mps")
"""Torch device types zerokv runs on (``cuda`` and ``mps`` only where this machine has them)."""


def check_device(name: str, value: object, *, owner: str | None = None) -> str:
    """``value`` if it names a torch device of :data:`DEVICE_TYPES` that this machine has:
    ``"cpu"``, ``"cuda"``/``"cuda:N"`` with CUDA available (and N below the device count), or
    ``"mps"`` with MPS available. Checked once, up front, instead of an assertion deep in torch
    at the first tensor moved there."""
    import torch  # here, not at import: the other checks need no torch

    if not isinstance(value, str):
        raise ValueError(f"{_where(owner, name, value)}; must be a device name such as cpu or cuda:0")
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ValueError(f"{_where(owner, name, value)}; allowed: cpu, cuda, cuda:N, mps")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{_where(owner, name, value)}; this machine has no CUDA device "
                             f"(torch {torch.__version__}); use cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{_where(owner, name, value)}; this machine has {count} CUDA device(s): "
                             f"cuda:0 … cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{_where(owner, name, value)}; MPS is not available on this machine; use cpu")
    return value


def install_hint(extra: str) -> str:
    """How to install zerokv's optional ``extra``, in ways that work: zerokv installs from a clone
    or from a wheel built from one (``python -m build``), not from a package index."""
    from zerokv.version import __version__

    return (f'pip install -e ".[{extra}]" in a zerokv clone, or pip install '
            f'"zerokv-{__version__}-py3-none-any.whl[{extra}]" from a built wheel')
