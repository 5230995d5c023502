"""``python -m tests.teardown_held [--launch] ARGS``: ``prov ARGS`` (run as ``python -m
clients.cli`` runs it, or with ``--launch`` as the ``prov`` console script does,
`clients.launch.main`) with the interpreter's teardown held open past its exit handlers:
while Python frees its modules, after it has given up its own signal handlers, so that a
test's late signal lands there every time (tests/exit_held.py holds the exit handlers
instead).

An object of this module, freed with it, prints ``finalizing`` on stdout and then sleeps
`HELD_S` seconds, unless a signal ends the process first. Nothing else of the CLI or
Python is changed."""

from __future__ import annotations

import os
import runpy
import sys
import time

#: How long, in seconds, the teardown is held open.
HELD_S = 3.0


class _Held:
    """Held in this module's namespace, freed as the interpreter frees its modules."""

    def __init__(self) -> None:
        self._write, self._sleep = os.write, time.sleep  # modules may be gone by then

    def __del__(self) -> None:
        self._write(1, b"finalizing\n")
        self._sleep(HELD_S)


if __name__ == "__main__":
    held = _Held()
    launch = sys.argv[1:2] == ["--launch"]
    sys.argv[: 2 if launch else 1] = ["prov"]
    if launch:
        from clients.launch import main

        sys.exit(main())
    runpy.run_module("clients.cli", run_name="__main__")
