"""Text arguments that are not UTF-8 (a byte the terminal's encoding could not decode
reaches Python as a lone surrogate): `prov admin revoke --reason` and `prov admin
enroll-token --label` are sent to the server and stored (SQLite or PostgreSQL TEXT), so
such a value is a usage error naming the option, not a UnicodeEncodeError traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ADMIN_TOKEN, ROOT, ServerProc


def _prov(*args: bytes | str, server: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PROV_ADMIN_TOKEN": ADMIN_TOKEN, "PROV_SERVER": server}
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def test_undecodable_reason_and_label_are_usage_errors(server: ServerProc) -> None:
    device_id = "ab" * 32
    done = _prov("admin", "revoke", device_id, "--reason", b"lost \xff", server=server.address)
    said = " ".join(done.stderr.decode(errors="replace").replace("│", " ").split())
    assert done.returncode == 2 and "Traceback" not in said, said
    assert "--reason" in said and "not valid UTF-8" in said, said
    done = _prov("admin", "enroll-token", "--label", b"cam\xe9ra", server=server.address)
    said = " ".join(done.stderr.decode(errors="replace").replace("│", " ").split())
    assert done.returncode == 2 and "Traceback" not in said, said
    assert "--label" in said and "not valid UTF-8" in said, said
    done = _prov("admin", "enroll-token", "--label", "caméra", server=server.address)
    assert done.returncode == 0, done.stderr  # the same label in UTF-8 is taken
