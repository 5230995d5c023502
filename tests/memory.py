"""Memory bounds measured with tracemalloc in a child process of their own.

tracemalloc counts the allocations of every thread of the process, and a pytest worker
holds threads left by earlier tests (servers, gRPC clients and their pollers) that may
allocate while a test measures: in CI a worker's peak read 9.3 MB for a tile audit that
takes 1.6 MB alone (089d65a3). So a test that bounds memory runs the measured code in a
fresh interpreter, `traced_in_child`, where the only threads are the ones that code
starts; `prov_in_child` does so for a `prov` command."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tests.conftest import run_python

#: Run before a child's code: ``traced(call)`` is ``(value, now, peak)``: what ``call()``
#: returned (or the Exception it raised), and the bytes traced after it and at the peak,
#: tracemalloc started just before it and stopped after; ``tell(*found)`` prints its
#: arguments as one JSON line, the child's answer (its last line of stdout).
_PRELUDE = r"""
import json as _json, sys, tracemalloc as _tracemalloc
def traced(call):
    _tracemalloc.start()
    try:
        try:
            value = call()
        except Exception as e:
            value = e
        now, peak = _tracemalloc.get_traced_memory()
        return value, now, peak
    finally:
        _tracemalloc.stop()
def tell(*found):
    sys.stdout.write("\n" + _json.dumps(found) + "\n")
"""


def traced_in_child(
    code: str, args: Iterable[str], cwd: Path, timeout: float = 300
) -> tuple[list[Any], str]:
    """``python -c CODE ARGS`` in ``cwd`` (`tests.conftest.run_python`), ``CODE`` preceded
    by `_PRELUDE`'s ``traced`` and ``tell``: the JSON list its last call of ``tell``
    printed (its last line of stdout), and its stderr. Fails the test (AssertionError,
    showing its stderr) unless it exits 0 with such a line; raises
    `subprocess.TimeoutExpired` past ``timeout`` seconds."""
    done = run_python(["-c", _PRELUDE + code, *args], cwd, timeout)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines, f"the child told nothing: {done.stderr}"
    found = json.loads(lines[-1])
    assert isinstance(found, list), lines[-1]
    return found, done.stderr


#: `clients.cli.main` of the arguments in the JSON list argv[1], then, traced, of the
#: rest: tells the second's exit status and the peak of bytes traced.
_PROV = """
from clients.cli import main
main(_json.loads(sys.argv[1]))
rc, _, peak = traced(lambda: main(sys.argv[2:]))
if isinstance(rc, Exception):
    raise rc
tell(rc, peak)
"""


def prov_in_child(
    args: Sequence[str], cwd: Path, warm: Sequence[str] | None = None, timeout: float = 300
) -> tuple[int, int, str]:
    """``prov ARGS`` (`clients.cli.main`, in-process in a child, with this process's
    environment) traced by `traced_in_child`, after ``prov WARM`` (``ARGS`` unless
    given) untraced: the traced run's exit status and peak of bytes traced, and both
    runs' stderr. The first run imports what the command imports on its way and fills
    caches, which tracemalloc would count (30.3 MB at the first `prov verify` of a
    refused claim, 3.5 MB at the second; 24 MB at the first `prov log audit --tiles` of
    an endless checkpoint), as earlier tests did in a test worker; so ``ARGS`` alone
    only for a command that may run twice, as one refused may."""
    first = json.dumps(list(args if warm is None else warm))
    (rc, peak), err = traced_in_child(_PROV, [first, *args], cwd, timeout)
    return int(rc), int(peak), err
