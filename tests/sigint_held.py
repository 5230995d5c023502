"""``python -m tests.sigint_held ARGS``: ``prov ARGS`` with the moment that hung a `prov
verify` stopped by Ctrl-C held open, so that a test's SIGINT lands in it every time.

CPython runs a signal's handler between two bytecodes, also inside
``threading.Condition.__enter__`` (Python code) once ``self._lock.__enter__()`` has
returned: the KeyboardInterrupt then leaves ``__enter__`` with the lock taken and no
``with`` block to release it. gRPC's ``_channel`` guards each call's state with such a
Condition (an RLock), and its channel thread takes it for every event of the call: it
waits for good, and so does the channel's ``close`` for it (a bare ``prov verify``: on
its way out of ``with ProvenanceClient(...)``). Seen in CI and in-process loops, where
the signal came in those few instructions; here the first time the main thread enters
the Condition of a gRPC call from that call's ``result`` (`clients.api._AnswerWatch`'s
wait for the answer), it takes the lock, prints ``holding`` on stdout and waits for a
signal there, and ``raised`` once its KeyboardInterrupt is raised. Nothing else of gRPC, the CLI or Python is changed."""

from __future__ import annotations

import runpy
import sys
import threading
import time
from typing import Any

import grpc._channel

_MAIN = threading.get_ident()  # threading.current_thread() in a thread not yet started
_RESULT = grpc._channel._MultiThreadedRendezvous.result.__code__  # noqa: SLF001
_held: list[bool] = []


def _enter(self: Any) -> bool:
    """`threading.Condition.__enter__`, but see the module docstring."""
    taken: bool = self._lock.__enter__()
    if not _held and threading.get_ident() == _MAIN and sys._getframe(1).f_code is _RESULT:
        _held.append(True)
        try:
            # "holding" inside the ``try``: the SIGINT the test sends on reading it can be
            # handled as soon as ``print`` returns, before any wait here begins (then it
            # raised out of ``print``, "raised" never came, and the test waited on until
            # the deadline ended the command: 2 of 5 runs of the second-Ctrl-C test);
            # a sleep, not ``signal.pause()``, which waits for good for a signal that came
            # between that check and its start (the sleep is cut short by one during it)
            print("holding", flush=True)
            while True:
                time.sleep(1)  # the SIGINT's handler raises here, the lock taken
        except KeyboardInterrupt:
            print("raised", flush=True)  # handled: a test's next SIGINT is a second one
            raise
    return taken


if __name__ == "__main__":
    threading.Condition.__enter__ = _enter  # type: ignore[method-assign]
    sys.argv[0] = "prov"
    runpy.run_module("clients.cli", run_name="__main__")
