"""A log database damaged behind the log's back, read by `prov log audit --db`, `prov log
export-tiles` and a server's start-up (`prov serve`): a row holding a value of a type or
length no writer stores, and a file that is an SQLite database cut short. Each says in
its own words what is wrong with which row or file, exit 3 (LOG INTEGRITY FAILURE), never
Python's words ("string argument without an encoding", "can't concat str to bytes") and
never a number taken for that many zero bytes; a read-only command leaves no -wal or
-shm file beside a database that had none; and an audit beside a live server still reads
the entries only its WAL holds. A real service's SQLite file, edited with sqlite3, and
the real CLI in-process."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from clients.cli import main as prov_main
from provenance.core.errors import LogIntegrityError
from tests.test_node_audit import _log, _service

#: Leaves of the log each test makes (an enrollment and 9 claims); node (3, 0) covers
#: leaves 0-7 and is read for the root of the tree of 10 by all three readers.
LEAVES = 10
ROOT_NODE = "UPDATE nodes SET hash=? WHERE level=3 AND idx=0"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(folder holding prov.db and its log key, the log's verifier key): `LEAVES` leaves,
    the service closed. Each test works on a copy (`logged`)."""
    folder = tmp_path_factory.mktemp("log")
    return folder, _log(folder / "prov.db", folder, LEAVES - 1)


@pytest.fixture
def logged(made: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    """A copy of the module's log in ``tmp_path``: (its prov.db, the verifier key)."""
    folder, vkey = made
    for name in ("prov.db", "log.key", "log.key.checkpoint"):
        shutil.copy(folder / name, tmp_path / name)  # its mode too (the key: 0600)
    return tmp_path / "prov.db", vkey


def _edit(db: Path, statement: str, *args: Any) -> None:
    """One statement run on ``db`` behind the log's back (committed, the file closed)."""
    c = sqlite3.connect(db)
    try:
        with c:
            c.execute(statement, args)
    finally:
        c.close()


def _run(command: str, db: Path, vkey: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`prov log audit --db` or `prov log export-tiles` on ``db``: (exit code, output)."""
    if command == "audit":
        args = ["--db", str(db), "--state", str(db.parent / "s.json"), "--log-key", vkey]
    else:
        args = ["--db", str(db), str(db.parent / "tiles")]
    rc = prov_main(["log", command, *args])
    got = capsys.readouterr()
    text = " ".join((got.out + got.err).split())  # the console's wrapping undone
    assert "Traceback" not in text and "without an encoding" not in text, text
    assert "concat" not in text, text
    return rc, text


def _start(db: Path) -> str:
    """The LogIntegrityError's words that refuse a server's start on ``db`` (which had
    no -wal or -shm beside it, and has none after)."""
    with pytest.raises(LogIntegrityError) as info:
        _service(db, db.parent).service.close()
    assert _beside(db) == ["prov.db"]  # before: the empty -wal and -shm SQLite made
    return str(info.value)


def _beside(db: Path) -> list[str]:
    """The database's file and its SQLite companions (-wal, -shm, -journal)."""
    return sorted(p.name for p in db.parent.glob(f"{db.name}*") if p.suffix != ".lock")


#: A node row's hash edited to a value no writer stores: the value, and how it is named.
NODE_VALUES = {
    "text": ("abc", "stored as text, not 32 bytes"),
    "a number": (32, "stored as the number 32, not 32 bytes"),  # before: 32 zero bytes
    "31 bytes": (b"\x01" * 31, "stored as 31 bytes, not 32 bytes"),
}


@pytest.mark.parametrize("kind", NODE_VALUES)
def test_a_node_row_of_the_wrong_type_or_length_is_named_by_the_export_and_the_server(
    logged: tuple[Path, str], capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """Before: the export said "the log database is damaged: string argument without an
    encoding" for text, that the root did not match for a number (read as 32 zero bytes),
    and exit 1 "stored node (3, 0) is 31 bytes, want 32" for a short one; a server's
    start died on text with a traceback (exit 1)."""
    db, vkey = logged
    value, named = NODE_VALUES[kind]
    _edit(db, ROOT_NODE, value)
    rc, text = _run("export-tiles", db, vkey, capsys)
    assert rc == 3 and f"the Merkle node (level 3, index 0) is {named}" in text, text
    assert not (db.parent / "tiles" / "checkpoint").exists()
    assert f"the Merkle node (level 3, index 0) is {named}" in _start(db)
    rc, text = _run("audit", db, vkey, capsys)  # the audit lists it among the others
    assert rc == 3 and "Merkle node at level 3, index 0 (leaves [0, 8))" in text, text


def test_a_level_0_node_of_text_is_named_with_the_tile_the_export_reads(
    logged: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The reviewer's case: a leaf's node row (not on the root's path) turned into text."""
    db, vkey = logged
    _edit(db, "UPDATE nodes SET hash='abc' WHERE level=0 AND idx=2")
    rc, text = _run("export-tiles", db, vkey, capsys)
    assert rc == 3 and "tile/0/000.p/10" in text, text
    assert "the Merkle node (level 0, index 2) is stored as text, not 32 bytes" in text, text


@pytest.mark.parametrize(("value", "named"), [("abc", "text"), (5, "the number 5")])
def test_an_entry_of_the_wrong_type_is_named_by_all_three(
    logged: tuple[Path, str], capsys: pytest.CaptureFixture[str], value: object, named: str
) -> None:
    """Before: the export said "string argument without an encoding" for text (a number
    was read as 5 zero bytes: "entries 0..9 do not hash to its Merkle leaves"), a
    server's start "can't concat str to bytes", and the audit "(the database holds
    str)"."""
    db, vkey = logged
    _edit(db, "UPDATE leaves SET entry=? WHERE idx=2", value)
    rc, text = _run("export-tiles", db, vkey, capsys)
    assert rc == 3 and f"the entry column of log entry 2 is stored as {named}, not bytes" in text
    assert f"log entry 2 is stored as {named}, not bytes" in _start(db)
    rc, text = _run("audit", db, vkey, capsys)
    assert rc == 3 and f"log entry 2 is stored as {named}, not bytes" in text, text


def test_text_that_is_not_utf8_in_a_blob_column_is_damage_not_an_outage(
    logged: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite keeps any bytes cast to text; Python cannot read them as text. Before:
    exit 1, "the database ... cannot be used now: Could not decode to UTF-8 column
    'hash'", from all three, as if the disk were failing."""
    db, vkey = logged
    _edit(db, "UPDATE nodes SET hash=CAST(x'ff00ff' AS TEXT) WHERE level=3 AND idx=0")
    words = "is damaged: a row's hash column holds text that is not UTF-8"
    for command in ("audit", "export-tiles"):
        rc, text = _run(command, db, vkey, capsys)
        assert rc == 3 and words in text, (command, text)
    assert words in _start(db)


def _cut(db: Path, size: int = 8192) -> bytes:
    """``db`` cut to its first ``size`` bytes (as a copy stopped midway leaves it)."""
    data = db.read_bytes()[:size]
    db.write_bytes(data)
    return data


@pytest.mark.parametrize("command", ["audit", "export-tiles"])
def test_a_database_cut_short_is_damage_and_leaves_nothing_beside_it(
    logged: tuple[Path, str], capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """A file that starts as an SQLite database but is cut short is a damaged log, exit
    3, as a server's start says; a file that is no SQLite database at all stays "not a
    provenance database", exit 1 (tests/test_audit_db_not_sqlite.py). Before: exit 1,
    "not a provenance database: database disk image is malformed", and the read-only
    open left an empty prov.db-wal and prov.db-shm beside it."""
    db, vkey = logged
    data = _cut(db)
    rc, text = _run(command, db, vkey, capsys)
    assert rc == 3, text
    assert f"LOG INTEGRITY FAILURE: the database {db} is damaged: SQLite cannot read it" in text
    assert "not a provenance database" not in text, text
    assert _beside(db) == ["prov.db"] and db.read_bytes() == data


def test_a_server_start_on_a_database_cut_short_blames_no_wal_it_made_itself(
    logged: tuple[Path, str],
) -> None:
    """The start's own connection makes an empty prov.db-wal; before, the refusal then
    said "SQLite cannot read the database ... with the prov.db-wal beside it ... If
    prov.db-wal is a stray one ..., move prov.db-wal and prov.db-shm away"."""
    db, _ = logged
    _cut(db)
    said = _start(db)
    assert said.startswith(f"the database {db} is damaged: SQLite cannot read it"), said
    assert "-wal" not in said, said


def test_a_database_whose_header_alone_is_sqlite_is_damage(
    logged: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The 100-byte header kept, every page after it overwritten: SQLite's header, so a
    damaged database (exit 3) for the three, not "not a provenance database"."""
    db, vkey = logged
    data = db.read_bytes()
    db.write_bytes(data[:100] + hashlib.shake_256(b"x").digest(len(data) - 100))
    for command in ("audit", "export-tiles"):
        rc, text = _run(command, db, vkey, capsys)
        assert rc == 3 and f"the database {db} is damaged" in text, (command, text)
    assert f"the database {db} is damaged" in _start(db)


def test_an_audit_beside_a_live_server_reads_the_entries_only_its_wal_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The audit opens the file read-only (``mode=ro``, never ``immutable``, which would
    read the main file alone): a live server's newest entries, committed to the WAL and
    not yet copied into the file, are audited too, and the server's -wal and -shm stay."""
    db = tmp_path / "prov.db"
    h = _service(db, tmp_path)
    try:
        dev = h.enroll()
        h.submit(dev.next_claim())
        # a reader's snapshot holds back every checkpoint past it: what follows stays in
        # the WAL only, as it does between two of the server's checkpoints
        pin = sqlite3.connect(db)
        assert pin.execute("PRAGMA wal_checkpoint(FULL)").fetchone()[0] == 0  # all copied
        pin.execute("BEGIN")
        assert pin.execute("SELECT COUNT(*) FROM leaves").fetchone() == (2,)
        for _ in range(3):
            h.submit(dev.next_claim())
        main_file = sqlite3.connect(f"{db.as_uri()}?immutable=1", uri=True)
        assert main_file.execute("SELECT COUNT(*) FROM leaves").fetchone() == (2,)
        main_file.close()
        vkey = h.service.signer.verifier_key()
        rc, text = _run("audit", db, vkey, capsys)
        assert rc == 0 and "log OK: has 5 entries" in text, text
        assert (tmp_path / "prov.db-wal").stat().st_size > 0  # the server's, kept
        pin.rollback()
        pin.close()
    finally:
        h.service.close()


def test_a_null_where_the_schema_forbids_one_is_named(
    logged: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The NOT NULL constraint edited out of the table's schema (``writable_schema``),
    then the root's node row set to NULL. Before: the export said "the log database is
    damaged: cannot convert 'NoneType' object to bytes", a server's start died on it."""
    db, vkey = logged
    c = sqlite3.connect(db)
    try:
        c.execute("PRAGMA writable_schema=ON")
        (sql,) = c.execute("SELECT sql FROM sqlite_schema WHERE name='nodes'").fetchone()
        loose = sql.replace("hash BLOB NOT NULL", "hash BLOB")
        c.execute("UPDATE sqlite_schema SET sql=? WHERE name='nodes'", (loose,))
        c.commit()
    finally:
        c.close()
    _edit(db, ROOT_NODE, None)
    rc, text = _run("export-tiles", db, vkey, capsys)
    named = "the Merkle node (level 3, index 0) is stored as NULL, not 32 bytes"
    assert rc == 3 and named in text, text
    said = _start(db)
    assert said.startswith(f"the log database is damaged: {named}"), said
