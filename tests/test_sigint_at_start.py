"""A test run started with SIGINT ignored or blocked still starts its children with
Ctrl-C working. A run launched as a background job of a non-interactive shell
(``make test &`` in a script, a harness that does the same) begins with SIGINT ignored,
and every child inherits an ignored or blocked SIGINT through fork and exec: in CI of 5
December every test that stops a child with Ctrl-C failed in both xdist workers (a CLI
that ran to its 20 s connect timeout, the demo and its server to exit 0, a scan worker
whose SIGINT handler was never given back, the fork-server test), while the conftest
guard `_sigint_as_started`, which compares with the state the run began in, named no
test. Real processes: an inner pytest run of this file, started so."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

_CHILD = (
    "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler,"
    " signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))"
)


def test_a_child_starts_with_python_s_sigint_handler() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["True", "False"], done.stdout + done.stderr


@pytest.mark.parametrize("how", ["ignored", "blocked"])
def test_a_run_started_without_ctrl_c_gives_its_children_ctrl_c(how: str) -> None:
    """The inner run's test above passes in a run started with SIGINT ``how``."""
    if how == "ignored":
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
    try:  # a child inherits both through fork and exec (set here: no preexec_fn)
        inner = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            + [
                f"{Path(__file__).relative_to(ROOT)}::test_a_child_starts_with_python_s_sigint_handler"
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
    finally:
        if how == "ignored":
            signal.signal(signal.SIGINT, previous)
        else:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    out, _ = inner.communicate(timeout=300)
    assert inner.returncode == 0, out[-3000:]
