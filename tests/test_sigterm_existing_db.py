"""SIGTERM while `prov serve` starts on a database that was there BEFORE this start (a
migration pending: its schema one version old) removes nothing: the database and its log
key stay, byte for byte the key, and the next start opens the same log. Only a start that
made the database itself removes it (tests/test_sigterm_at_start.py). The signal goes once
the start has begun migrating the file ("migrating schema", logged while its lock is held),
and once it is loading the log's index ("near-duplicate index", after the migration)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from provenance.store.sqlite import SCHEMA_VERSION
from tests.conftest import start_server
from tests.test_sigterm_at_start import EXIT_TERMINATED, _terminated_at


@pytest.mark.parametrize("marker", ["migrating schema", "near-duplicate index"])
def test_sigterm_while_serve_starts_on_an_existing_database_keeps_it(
    tmp_path: Path, marker: str
) -> None:
    db = tmp_path / "provenance.db"
    key = tmp_path / "provenance.db.logkey.pem"
    first = start_server(db)  # the database and its log key, made by an earlier start
    assert first.stop() == 0, first.stderr
    key_bytes = key.read_bytes()
    with sqlite3.connect(db) as c:  # a migration pending (the newest one: it only repacks)
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
        (verifier,) = c.execute("SELECT value FROM meta WHERE key = 'log_verifier_key'").fetchone()
    c.close()
    args = ["serve", "--db", str(db), "--listen", "127.0.0.1:0", "--no-detector"]
    rc, out, err = _terminated_at(args, tmp_path, marker)
    assert "Traceback" not in err, err
    if not (rc == 0 and "listening on" in out):  # (else the start won the race: stopped)
        assert rc == EXIT_TERMINATED, (rc, err)
    assert db.exists() and key.exists(), err
    assert key.read_bytes() == key_bytes
    again = start_server(db)  # the same log opens (and migrates)
    assert again.stop() == 0, again.stderr
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT value FROM meta WHERE key = 'log_verifier_key'").fetchone() == (
            verifier,
        )
        assert c.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    c.close()
