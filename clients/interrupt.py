"""Ctrl-C between units of work, so a command stopped mid-run can say exactly what it did.

A loop over files (`prov sign`) runs inside `StopBetweenFiles`: the first SIGINT only
asks it to stop, and `check`, called before each file, then raises KeyboardInterrupt,
so no file is left half counted (signed and logged but not yet in the summary). A
second SIGINT raises KeyboardInterrupt at once, wherever the loop is.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

#: Exit status of a command stopped by SIGTERM: 128 + 15, as a shell reports a process
#: that SIGTERM ended.
EXIT_TERMINATED = 143
#: Exit status of a command stopped by Ctrl-C: 128 + 2 (SIGINT).
EXIT_INTERRUPTED = 130


class StopBetweenFiles:
    """Context manager deferring the first SIGINT to the next `check` (see the module
    docstring). Off the main thread, where Python delivers no signals, it changes nothing
    and `check` never raises. ``notice``: the line written to stderr on the first SIGINT."""

    def __init__(self, notice: str) -> None:
        self._notice = notice.encode() + b"\n"
        self.requested = False
        self._old: Any = None
        self._installed = False

    def __enter__(self) -> StopBetweenFiles:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._old)
            self._installed = False

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        os.write(2, self._notice)  # one write: safe between any two bytecodes

    def check(self) -> None:
        """Raise KeyboardInterrupt when a SIGINT came since `__enter__`."""
        if self.requested:
            raise KeyboardInterrupt


@contextmanager
def terminate_as_interrupt(got: list[int]) -> Iterator[None]:
    """Inside the block, SIGTERM (``kill``, systemd's stop, a scheduler's or ``timeout``'s
    end of the job) stops the command as Ctrl-C does: this process raises SIGINT at
    itself, so the command's own handling of it applies (`clients.scan.engines`: not while
    a worker starts), or KeyboardInterrupt when SIGINT is ignored (a command started in
    the background); ``got`` then holds the signal, so that the command can say
    "terminated (SIGTERM)" and exit `EXIT_TERMINATED`. Before, SIGTERM ended `prov scan`
    and `prov log export-tiles --follow` where they stood, with no word of what was kept.
    Outside the main thread the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, _frame: FrameType | None) -> None:
        got.append(signum)
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            raise KeyboardInterrupt
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def how_stopped(got: list[int]) -> tuple[str, int]:
    """How a command stopped inside `terminate_as_interrupt` (whose ``got`` this is) says
    so, and its exit status: "terminated (SIGTERM)" and 143 after a SIGTERM, else
    "interrupted" and 130 (Ctrl-C)."""
    if got:
        return "terminated (SIGTERM)", EXIT_TERMINATED
    return "interrupted", EXIT_INTERRUPTED
