"""``python -m tests.forkserver_held ARGS``: ``prov ARGS`` (a `prov scan`) whose first pool
worker's start hangs for good, so that a test's signal lands while it is in flight.

A worker's start (`multiprocessing.popen_forkserver.Popen._launch`, inside the pool's
``submit``, inside `clients.scan.engines._interrupt_after`) sends the fork server its
request, then reads the new worker's pid; here the fork server is stopped (SIGSTOP) just
before the first such start, which prints ``starting a worker`` on stdout and then waits
for a pid that never comes, as behind a fork server stuck in its imports or out of memory.
Nothing else of multiprocessing, the CLI or Python is changed. The test lets the fork
server go on (SIGCONT) once the scan has ended."""

from __future__ import annotations

import multiprocessing.forkserver
import multiprocessing.popen_forkserver
import os
import runpy
import signal
import sys
from typing import Any

_launch = getattr(multiprocessing.popen_forkserver.Popen, "_launch")  # noqa: B009
_held: list[bool] = []


def _launch_held(self: Any, process_obj: Any) -> None:
    """`Popen._launch`, but see the module docstring."""
    if not _held:
        _held.append(True)
        server = multiprocessing.forkserver._forkserver  # noqa: SLF001
        server.ensure_running()
        os.kill(getattr(server, "_forkserver_pid"), signal.SIGSTOP)  # noqa: B009
        print("starting a worker", flush=True)
    _launch(self, process_obj)


if __name__ == "__main__":
    setattr(multiprocessing.popen_forkserver.Popen, "_launch", _launch_held)  # noqa: B010
    sys.argv[0] = "prov"
    runpy.run_module("clients.cli", run_name="__main__")
