"""The SQLite store: schema versions and migration, and refusal of unknown files."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from provenance.core.errors import ConfigError, LogError
from provenance.store.sqlite import _MIGRATIONS, SCHEMA_VERSION, SqliteStore


def test_migrates_a_version_1_database(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    con = sqlite3.connect(db)
    con.executescript(_MIGRATIONS[1] + "; PRAGMA user_version = 1;")
    con.execute(
        "INSERT INTO devices(device_id, public_key, enrolled_at) VALUES (?, ?, ?)",
        (b"\x01" * 32, b"\x02" * 32, 1_700_000_000_000_000),
    )
    con.commit()
    con.close()
    store = SqliteStore(db)
    assert store._writer.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    cols = [r[1] for r in store._writer.execute("PRAGMA table_info(leaves)")]
    assert "receipt" not in cols and "entry" in cols  # receipts are rebuilt, not stored
    tables = {r[0] for r in store._writer.execute("SELECT name FROM sqlite_master")}
    assert "key_events" in tables  # migration 3: the key-history index
    dev = store.get_device(b"\x01" * 32)
    assert dev.enrolled_at == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert store.device_certificate(b"\x01" * 32) == ""
    assert store._writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_refuses_newer_schema_and_foreign_files(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(LogError, match="schema version 99"):
        SqliteStore(db)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LogError, match="not a provenance database|cannot open"):
        SqliteStore(junk)


def test_a_server_store_in_a_missing_folder_is_a_clear_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open the database lock file .*missing"):
        SqliteStore(tmp_path / "missing" / "prov.db", exclusive=True)
