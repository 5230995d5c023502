"""A `prov` child process of a test, stopped by a signal or ended by itself, never left running.

Many tests start a real `prov` (`tests.conftest.cli_process`, `tests.conftest.prov_script`,
a bare `subprocess.Popen`), send it SIGINT or SIGTERM at some moment, wait for its end
with a deadline and check its exit status and stderr. A failed assertion, a deadline
that ran out or a line that never came must not leave the child running (it would hold
its files, ports and CPU for the rest of the run): `owned` kills and reaps it on the way
out of its block, whatever ended the block, and `stop_by` sends the signal and waits.
`ended` waits for a child expected to end by itself (a refused start), killing it if not.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import AnyStr

from tests.drain import finish

#: Seconds `stop_by` waits for the child's end after the signal, unless told otherwise.
STOP_WAIT_S = 120


@contextmanager
def owned(proc: subprocess.Popen[AnyStr]) -> Iterator[subprocess.Popen[AnyStr]]:
    """``proc`` for the ``with`` block; on the way out of it (its end, an exception, a
    failed assertion, `subprocess.TimeoutExpired`) ``proc`` is killed (SIGKILL) and
    waited for if it still runs, so that no child outlives the test. What the block
    raised goes on up unchanged."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop_by(
    proc: subprocess.Popen[str], sig: int, timeout: float = STOP_WAIT_S
) -> tuple[int, str, str]:
    """Send signal ``sig`` to ``proc`` and wait up to ``timeout`` seconds for its end
    (`tests.drain.finish`: its streams drained or piped): (its exit status, its stdout
    not taken yet, its stderr). Raises `subprocess.TimeoutExpired` past ``timeout``, the
    child left running (for `owned` to kill, or for the caller to ask it for its stacks)."""
    proc.send_signal(sig)
    out, err = finish(proc, timeout=timeout)
    return proc.returncode, out, err


def ended(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, str]:
    """Wait up to ``timeout`` seconds for ``proc`` to end by itself (`tests.drain.finish`):
    (its exit status, its stdout not taken yet, its stderr). Raises
    `subprocess.TimeoutExpired` past ``timeout``, ``proc`` killed and waited for first
    (`owned`)."""
    with owned(proc):
        out, err = finish(proc, timeout=timeout)
    return proc.returncode, out, err
