"""``python -m tests.close_held ARGS``: ``prov ARGS`` with the first close of a SQLite
store on the main thread held open, so that a test's second signal lands in a command's
clean-up every time (a `prov log export-tiles --follow` stopped by a first one closes its
store last; a close of a PostgreSQL store waits on the network so).

The close prints ``closing`` on stdout, then waits there in one-second sleeps (a signal's
handler runs during one) until a signal's handler raises or ends the process. Nothing else
of the CLI or Python is changed."""

from __future__ import annotations

import runpy
import sys
import threading
import time

from provenance.store.sqlite import SqliteStore

_real_close = SqliteStore.close
_held: list[bool] = []


def _close(self: SqliteStore) -> None:
    """`SqliteStore.close`, but see the module docstring."""
    if not _held and threading.current_thread() is threading.main_thread():
        _held.append(True)
        print("closing", flush=True)
        while True:
            time.sleep(1)
    _real_close(self)


if __name__ == "__main__":
    SqliteStore.close = _close  # type: ignore[method-assign]
    sys.argv[0] = "prov"
    runpy.run_module("clients.cli", run_name="__main__")
