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
from types import FrameType, TracebackType
from typing import Any


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
