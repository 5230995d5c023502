"""A real `prov serve` child process with one enrolled device, for benches that verify.

`enrolled_server` starts the server on a free port (no detector), creates and enrolls a
device in ``work``/dev, and points PROV_SERVER at it; the caller signs with `prov sign`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clients.api import ProvenanceClient
from clients.cli import main as prov

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def enrolled_server(work: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Yield (the server process, its HOST:PORT); terminate it on exit."""
    os.environ.update(
        PROV_ADMIN_TOKEN="bench-token", PROV_HOME=str(work / "dev"), PROV_PASSPHRASE="bench"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "serve", "--db", str(work / "bench.db")]
        + ["--listen", "127.0.0.1:0", "--no-detector"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    try:
        address = proc.stdout.readline().split()[-1]
        os.environ["PROV_SERVER"] = address
        assert prov(["device", "init"]) == 0
        with ProvenanceClient(address, admin_token="bench-token") as c:
            token, _ = c.create_enrollment_token()
        assert prov(["device", "enroll", "--token", token]) == 0
        yield proc, address
    finally:
        proc.terminate()
        proc.wait(timeout=30)
