"""``python -m tests.opens_watched NAME ARGS``: ``prov ARGS`` with every open of a file
named NAME said on stderr, as ``opened NAME on the event loop`` or ``opened NAME off the
event loop`` (an asyncio loop running in the opening thread, or not), through a Python
audit hook (the ``open`` event: ``open``, ``os.open``), so that a test can tell where a
server reads a file. Nothing of the CLI or Python is changed."""

from __future__ import annotations

import asyncio
import os
import runpy
import sys


def _watch(name: str) -> None:
    """Say each open of a file named ``name`` (see the module docstring)."""

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event != "open" or not args or not isinstance(args[0], str | bytes):
            return
        if os.path.basename(os.fsdecode(args[0])) != name:
            return
        where = "on" if asyncio.events._get_running_loop() is not None else "off"
        os.write(2, f"opened {name} {where} the event loop\n".encode())

    sys.addaudithook(hook)


if __name__ == "__main__":
    _watch(sys.argv.pop(1))
    sys.argv[0] = "prov"
    runpy.run_module("clients.cli", run_name="__main__")
