"""`prov log audit --db` never writes to the database it audits: the file is opened
read-only (SQLite ``mode=ro``; PostgreSQL read-only transactions), and a database of an
older schema is not migrated: the log is audited, and the audit says which checks need
the migration and how (exit 1). A real service's SQLite file, taken back to schema 1
(`provenance.store.sqlite._MIGRATIONS`), and the real CLI in-process.

Before: auditing a schema-1 file migrated it to schema 4 (its bytes changed)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from provenance.core.errors import LogError, StorageError
from provenance.store import open_store
from provenance.store.sql import SqlStore
from provenance.store.sqlite import SCHEMA_VERSION, SqliteStore
from tests.inproc import InProc


def _logged(inproc: InProc) -> str:
    """Three claims of one device logged and the service closed; the log's verifier key."""
    dev = inproc.enroll()
    for _ in range(3):
        inproc.submit(dev.next_claim())
    vkey = inproc.service.signer.verifier_key()
    inproc.service.close()
    return vkey


def _to_schema_1(db: Path) -> None:
    """Undo migrations 4, 3 and 2 on ``db`` (the file then has the first schema's tables,
    the rows it shares with it kept)."""
    with sqlite3.connect(db) as c:
        c.executescript(
            """
            ALTER TABLE leaves ADD COLUMN receipt BLOB NOT NULL DEFAULT x'';
            DROP TABLE index_packs;
            DROP TABLE key_events;
            ALTER TABLE devices DROP COLUMN certificate_pem;
            PRAGMA user_version = 1;
            """
        )
    c.close()


def _digest(db: Path) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


def _beside(db: Path) -> list[str]:
    """The database's file and its SQLite companions (-wal, -shm, -journal)."""
    return sorted(p.name for p in db.parent.glob(f"{db.name}*") if p.suffix != ".lock")


def _audit(
    db: Path, tmp_path: Path, vkey: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    rc = prov_main(
        [
            "log",
            "audit",
            "--db",
            str(db),
            "--state",
            str(tmp_path / "audit.json"),
            "--log-key",
            vkey,
        ]
    )
    got = capsys.readouterr()
    return rc, got.out + got.err


@pytest.fixture
def old_db(inproc: InProc) -> tuple[Path, str]:
    """(a schema-1 database holding a log of 3 entries, its log key)."""
    vkey = _logged(inproc)
    _to_schema_1(inproc.db)
    return inproc.db, vkey


def test_auditing_an_old_schema_leaves_the_file_as_it_was(
    old_db: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, vkey = old_db
    before = _digest(db)
    rc, text = _audit(db, tmp_path, vkey, capsys)
    assert _digest(db) == before
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone() == (1,)
    c.close()
    assert rc == 1, text
    assert "log OK: has 4 entries; 4 entries re-hashed" in text  # the log itself was audited
    flat = " ".join(text.split())
    assert f"has schema version 1, older than this program's {SCHEMA_VERSION}" in flat
    assert "was opened read-only, so not migrated; `prov serve --db" in flat
    assert "key history, claims and near-duplicate index: not checked" in flat


def test_auditing_a_current_schema_writes_nothing(
    inproc: InProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vkey = _logged(inproc)
    before = _digest(inproc.db)
    assert _beside(inproc.db) == ["prov.db"]
    rc, text = _audit(inproc.db, tmp_path, vkey, capsys)
    assert rc == 0, text
    assert "key history OK" in text and "near-duplicate index OK" in text
    assert _digest(inproc.db) == before
    assert _beside(inproc.db) == ["prov.db"]  # before: empty prov.db-wal and -shm beside it


def test_a_read_only_store_refuses_writes(old_db: tuple[Path, str]) -> None:
    db, _ = old_db
    store = open_store(db, read_only=True)
    try:
        assert isinstance(store, SqliteStore) and "schema version 1" in store.outdated
        with pytest.raises(StorageError, match="readonly database"):
            store.set_meta("x", "y")
    finally:
        store.close()


def test_a_file_that_is_no_log_is_refused_read_only(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(LogError, match="it is no provenance database"):
        open_store(empty, read_only=True)
    assert empty.read_bytes() == b""


def test_a_read_only_postgresql_store_neither_migrates_nor_writes(pg_url: str) -> None:
    import psycopg

    open_store(pg_url).close()  # a current schema
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("DELETE FROM schema_version WHERE version > 1")
    store = open_store(pg_url, read_only=True)
    try:
        assert isinstance(store, SqlStore)
        assert "has schema version 1, older than this program's" in store.outdated
        with pytest.raises(StorageError, match="read-only transaction"):
            store.set_meta("x", "y")
    finally:
        store.close()
    with psycopg.connect(pg_url, autocommit=True) as c:
        versions = c.execute("SELECT version FROM schema_version").fetchall()
        assert versions == [(1,)]
        assert c.execute("SELECT COUNT(*) FROM meta").fetchone() == (0,)


def _export(db: Path, tiles: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = prov_main(["log", "export-tiles", str(tiles), "--db", str(db)])
    got = capsys.readouterr()
    return rc, got.out + got.err


def test_exporting_tiles_leaves_the_file_as_it_was(
    old_db: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov log export-tiles --db` opens the database as the audit does (before: it
    migrated a schema-1 file to the current schema, changing its bytes)."""
    db, _ = old_db
    before = _digest(db)
    rc, text = _export(db, tmp_path / "tiles", capsys)
    assert _digest(db) == before
    assert _beside(db) == ["prov.db"]
    assert rc == 0, text
    assert "exported 4 entries" in text
    assert (tmp_path / "tiles" / "checkpoint").is_file()


def test_a_reader_closing_leaves_the_wal_of_a_writer_that_opened_meanwhile(
    inproc: InProc,
) -> None:
    """A read-only store removes the -wal and -shm it caused only when nobody else uses
    them: a writer (a server) that opened the file while the reader was open keeps its
    WAL, and what it then appends is kept."""
    _logged(inproc)
    reader = open_store(inproc.db, read_only=True)
    n = reader.tree_size()
    writer = SqliteStore(inproc.db)
    try:
        writer.set_meta("written", "while a reader was open")
        reader.close()
        assert _beside(inproc.db) == ["prov.db", "prov.db-shm", "prov.db-wal"]
        writer.set_meta("written", "after the reader closed")
    finally:
        writer.close()
    assert _beside(inproc.db) == ["prov.db"]  # the writer, last to close, removed them
    again = open_store(inproc.db, read_only=True)
    try:
        assert again.tree_size() == n and again.get_meta("written") == "after the reader closed"
    finally:
        again.close()
    assert _beside(inproc.db) == ["prov.db"]


def test_a_database_on_read_only_media_is_audited(inproc: InProc, tmp_path: Path) -> None:
    """A log on a read-only mount (a backup, a read-only bind of a stopped server's
    folder): SQLite cannot create the -shm a ``mode=ro`` open of a WAL database needs, so
    the store opens it immutable instead of calling it "not a provenance database"."""
    import subprocess

    _logged(inproc)
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(
        ["mount", "--bind", "-o", "ro", str(inproc.db.parent), str(ro)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot make a read-only bind mount (needs root): {mounted.stderr!r}")
    try:
        store = SqliteStore(ro / inproc.db.name, read_only=True)
        try:
            assert store.tree_size() == 4  # the enrollment and the three claims
        finally:
            store.close()
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=True)  # lazy: even if a file stays open


def test_a_backup_with_a_wal_but_no_shm_on_read_only_media_is_refused_clearly(
    inproc: InProc, tmp_path: Path
) -> None:
    """A backup that kept prov.db-wal but left the transient -shm out, on a read-only
    mount: SQLite can read the -wal's transactions only through a -shm it cannot create
    there, and opening the file immutable would silently drop them. The store says what
    is wrong and what to do, and the advice works: the two files copied together to a
    writable folder are audited whole, the -wal's transactions included."""
    import shutil
    import subprocess

    _logged(inproc)
    backup = tmp_path / "backup"
    backup.mkdir()
    writer = SqliteStore(inproc.db)
    try:
        writer.set_meta("written", "only in the WAL")
        shutil.copyfile(inproc.db, backup / "prov.db")  # as a live backup copies them
        shutil.copyfile(f"{inproc.db}-wal", backup / "prov.db-wal")
    finally:
        writer.close()
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(
        ["mount", "--bind", "-o", "ro", str(backup), str(ro)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot make a read-only bind mount (needs root): {mounted.stderr!r}")
    try:
        with pytest.raises(LogError) as refused:
            SqliteStore(ro / "prov.db", read_only=True)
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=True)
    text = str(refused.value)
    assert "has a prov.db-wal file" in text and "no prov.db-shm" in text
    assert "copy prov.db and prov.db-wal together to a writable folder" in text
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("prov.db", "prov.db-wal"):
        shutil.copyfile(backup / name, copy / name)
    store = SqliteStore(copy / "prov.db", read_only=True)
    try:
        assert store.tree_size() == 4  # the enrollment and the three claims
        assert store.get_meta("written") == "only in the WAL"
    finally:
        store.close()


def test_auditing_a_schema_5_file_checks_everything(
    inproc: InProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Migration 6 only leaves room in index pages (no table or column changes): a
    schema-5 file, audited read-only before its server is upgraded, gets every check, not
    "not checked: older schema" and exit 1."""
    vkey = _logged(inproc)
    with sqlite3.connect(inproc.db) as c:
        c.execute("PRAGMA user_version = 5")
    c.close()
    before = _digest(inproc.db)
    rc, text = _audit(inproc.db, tmp_path, vkey, capsys)
    assert _digest(inproc.db) == before
    assert rc == 0, text
    assert "key history OK" in text and "near-duplicate index OK" in text
    store = SqliteStore(inproc.db, read_only=True)
    try:
        assert store.outdated == ""
    finally:
        store.close()


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE devices SET revoked_at = 'soon'",
        # NOT NULL taken off, as by a table copied without its constraints
        "CREATE TABLE d2 AS SELECT * FROM devices; DROP TABLE devices;"
        " ALTER TABLE d2 RENAME TO devices; UPDATE devices SET enrolled_at = NULL",
    ],
    ids=["text time", "null time"],
)
def test_a_registry_row_of_the_wrong_type_is_a_damaged_database_in_words(
    inproc: InProc, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str
) -> None:
    """A device row edited to values no writer stores (text where a time is, a NULL) is
    a damaged log database: LOG INTEGRITY FAILURE naming the row, exit 3, as a leaf row
    of the wrong type already was. Before: `prov log audit --db` died in the registry
    check with a traceback ("ValueError: invalid literal for int() with base 10:
    'soon'"; "TypeError: int() argument must be ..., not 'NoneType'"), exit 1."""
    vkey = _logged(inproc)
    with sqlite3.connect(inproc.db) as c:
        c.executescript(edit)
    c.close()
    rc, out = _audit(inproc.db, tmp_path, vkey, capsys)
    assert "Traceback" not in out and "Error:" not in out, out
    assert rc == 3 and "LOG INTEGRITY FAILURE: the log database is damaged" in out, out
    assert "devices row" in out, out


def test_an_entry_edited_into_no_log_entry_is_a_log_integrity_failure(
    inproc: InProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A leaf row whose entry was overwritten with bytes that are no log entry at all
    (here 40 zero bytes) was an edit behind the log's back like any other: its hash is
    not the leaf's. Before, the near-duplicate index check decoded it first and stopped
    the audit with 'error: malformed log entry ...', exit 1, as if the database could
    not be read; now the audit goes on and finds the entries do not hash to the signed
    root: LOG INTEGRITY FAILURE, exit 3."""
    vkey = _logged(inproc)
    with sqlite3.connect(inproc.db) as c:
        c.execute("UPDATE leaves SET entry = zeroblob(40) WHERE idx = 2")
    c.close()
    rc, out = _audit(inproc.db, tmp_path, vkey, capsys)
    assert rc == 3 and "LOG INTEGRITY FAILURE" in out, out
    assert "do not hash to its signed root" in out, out


def test_a_state_folder_that_cannot_be_written_is_refused_before_the_audit(
    inproc: InProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov log audit --state` in a folder that cannot be written (a read-only mount):
    before, the whole audit ran, then saving its state failed (exit 1, "Read-only file
    system") and the audit's result was never printed; now a usage error naming --state
    and the folder before anything is read (found by h-newuser52)."""
    import subprocess

    vkey = _logged(inproc)
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)], capture_output=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot make a read-only bind mount (needs root): {mounted.stderr!r}")
    try:
        rc = prov_main(
            ["log", "audit", "--db", str(inproc.db), "--state", str(ro / "audit.json"),
             "--log-key", vkey]
        )  # fmt: skip
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=True)
    got = capsys.readouterr()
    said = got.out + got.err
    assert rc == 2, said
    assert "--state" in said and f"cannot write to the folder {ro}" in said, said
    assert "log OK" not in said and "re-hashed" not in said, said
    assert not (ro / "audit.json").exists()
