"""A polite stop for long runs: SIGTERM or SIGINT asks the training loop to checkpoint and exit.

The first signal only sets a flag; the loop finishes its iteration (checkpoints are taken only
between iterations, where resuming is exact), saves, and exits with ``128 + signal``. A second
SIGINT interrupts at once (the default handler is back by then), losing at most the time since
the last checkpoint, as a SIGKILL would.
"""

from __future__ import annotations

import signal
import threading
import types
from pathlib import Path

__all__ = ["StopSignals"]

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Context manager: while entered (in the main thread), SIGTERM/SIGINT set :attr:`signum`
    instead of killing the process. Elsewhere (another thread) it does nothing."""

    def __init__(self) -> None:
        self.signum: int | None = None
        """The first stop signal received, None until then."""
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        self.signum = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))  # a second one acts at once
        print(f"\n{signal.Signals(signum).name}: checkpointing after this iteration, then exiting", flush=True)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def exit_status(self, env_steps: int, out: Path) -> int:
        """Says how to continue a run stopped at ``env_steps``; returns its exit status, 128 + the signal."""
        name = signal.Signals(self.signum).name if self.signum is not None else "a signal"
        print(f"stopped by {name} at {env_steps} env steps; checkpoint saved in {out / 'checkpoints'}; "
              f"continue with: zerokv train --out {out} --resume", flush=True)
        return 128 + (self.signum or 0)
