"""The device SDK depends on the wire contract and the core only: importing
`clients.api` loads neither SQLite, the store, the service nor the gRPC server."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_clients_api_does_not_load_the_server_side() -> None:
    code = "import json, sys, clients.api; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert "clients.api" in loaded
    assert "sqlite3" not in loaded
    server_side = ("provenance.server", "provenance.store", "provenance.index")
    assert not [
        m for m in loaded if m in server_side or m.startswith(tuple(f"{s}." for s in server_side))
    ]
