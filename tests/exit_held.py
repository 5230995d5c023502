"""``python -m tests.exit_held [--launch] ARGS``: ``prov ARGS`` (run as ``python -m
clients.cli`` runs it, or with ``--launch`` as the ``prov`` console script does,
`clients.launch.main`) with the interpreter's teardown held open after the command
returned, so that a test's late signal (one that comes after the command said how it
stopped) lands there every time.

An exit handler (`atexit`, run after ``sys.exit``, before the process ends) prints
``exiting`` on stdout, then waits in one-second sleeps (a signal's handler runs during
one) until a handler raises or ends the process. It is registered after the CLI's own
last exit handler (`clients.launch.guard_the_teardown`, which `prov` registers before
anything else), as a command's exit handlers are, so it runs before that one. Nothing else
of the CLI or Python is changed."""

from __future__ import annotations

import atexit
import runpy
import sys
import time


def _hold() -> None:
    """See the module docstring."""
    print("exiting", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    from clients.launch import guard_the_teardown

    guard_the_teardown()
    atexit.register(_hold)
    launch = sys.argv[1:2] == ["--launch"]
    sys.argv[: 2 if launch else 1] = ["prov"]
    if launch:
        from clients.launch import main

        sys.exit(main())
    runpy.run_module("clients.cli", run_name="__main__")
