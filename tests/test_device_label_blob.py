"""A device label or revocation reason stored as a blob in the registry (a database
edited by hand, or by another tool; SQLite keeps whatever type is written) is shown as
text, its bytes that are not UTF-8 escaped as ``\\xff`` as the CLI shows any untrusted
text: before, `prov verify` printed Python's ``b'\\xff'``. The real CLI against a real
`prov serve` on the edited database."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import Cli, ServerProc, sign_sample, start_server


def test_a_blob_label_is_shown_as_escaped_text(
    enrolled: Cli, server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo, device_id = sign_sample(enrolled, tmp_path)
    server.stop()
    with sqlite3.connect(tmp_path / "prov.db") as db:
        db.execute(
            "UPDATE devices SET label=?, revoked_at=?, revocation_reason=? WHERE device_id=?",
            (b"cam\xff", int(time.time() * 1e6), b"lost\xfe", bytes.fromhex(device_id)),
        )
    db.close()
    again = start_server(tmp_path / "prov.db")
    try:
        monkeypatch.setenv("PROV_SERVER", again.address)
        rc, out, err = enrolled("verify", str(photo), "--no-detect")
        assert rc == 0, err
        assert f"{device_id[:16]}… (cam\\xff)" in out, out
        assert ": lost\\xfe" in out, out
        assert "b'" not in out, out
        rc, out, err = enrolled("verify", str(photo), "--no-detect", "--json")
        assert rc == 0, err
        assert '"label": "cam\\\\xff"' in out, out
        assert '"revocation_reason": "lost\\\\xfe"' in out, out
        assert "b'" not in out, out
    finally:
        again.stop()
