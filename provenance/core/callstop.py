"""When the call a piece of work is done for ends: its deadline, or its caller going away.

A gRPC server's handler coroutine is cancelled when its call's deadline passes or its
client cancels it, but the work it handed to a thread (a VerifyFile's decode) runs on
unless told. `CallStop` is what that thread is told by: the call's deadline
(CLOCK_MONOTONIC seconds) and an event set when the call ends early, which long steps
(`provenance.media.video.decode.sample_frames`) check as they wait.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from provenance.core.errors import DeadlineError

#: How often work waiting for a call (a decode, a wait for a decode slot) looks whether
#: the call has ended, s: it stops at most this long after.
CALL_POLL_S = 0.05


@dataclass(frozen=True)
class CallStop:
    """The end of one call: ``deadline`` (time.monotonic seconds; None: the call has
    none) and ``ended``, set (`end`) when the call ended before its work did (cancelled
    by its client, or its deadline passed while it waited)."""

    deadline: float | None = None
    ended: threading.Event = field(default_factory=threading.Event, compare=False)

    @classmethod
    def within(cls, seconds: float | None) -> CallStop:
        """The stop of a call with ``seconds`` left from now (None: no deadline)."""
        return cls(None if seconds is None else time.monotonic() + seconds)

    def end(self) -> None:
        """Say the call has ended: work for it should stop. Safe from any thread."""
        self.ended.set()

    def left(self) -> float | None:
        """Seconds left before the deadline (negative once past; None: no deadline)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def over(self) -> bool:
        """Whether the call has ended (`end`) or its deadline has passed."""
        return self.ended.is_set() or (
            self.deadline is not None and self.deadline <= time.monotonic()
        )


def call_ended(when: str, then: str = "") -> DeadlineError:
    """The error of work given up because its call ended ``when`` (its caller cancelled
    it or its deadline passed), ``then`` saying what was stopped (empty: nothing)."""
    done = f"; {then}" if then else ""
    return DeadlineError(
        f"the call ended {when} (its caller cancelled it or its deadline passed){done}"
    )
