"""`prov serve` on damaged files beside its database, as a hostile operator environment
leaves them: a log key gone from beside a log that registered one, and a crop secret
(`DB.detector-secret`) that is short, open to others, a folder or a FIFO. Each is one
clear sentence naming the file and exit 1, with nothing new left beside the database; never
a server that runs on a new key, nor one that silently drops its detector, nor a start
that hangs. Real `prov serve` children, real files."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from clients.api import ProvenanceClient
from provenance.log.checkpoint import generate_log_key
from tests.conftest import ADMIN_TOKEN, ROOT, enroll_key, signed_claim, start_server


def _serve(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`prov serve --db prov.db --listen 127.0.0.1:0 ARGS` in ``folder`` until it exits
    (each case here must fail; the timeout is a hang guard)."""
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", "serve", "--db", "prov.db"]
        + ["--listen", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=folder,
        env={**os.environ, "PROV_ADMIN_TOKEN": ADMIN_TOKEN, "PYTHONPATH": str(ROOT)},
    )


def test_a_missing_log_key_of_an_existing_empty_log_is_refused_and_none_is_made(
    tmp_path: Path,
) -> None:
    """Before: a log with no leaves yet but a registered key got a new key file at start,
    then was refused as 'not the key this database was created with', the new key left
    behind (in place of the one the operator should restore)."""
    srv = start_server(tmp_path / "prov.db", "--fast-start")
    srv.stop()
    key = tmp_path / "prov.db.logkey.pem"
    key.unlink()
    run = _serve(tmp_path, "--no-detector")
    assert run.returncode == 1, run.stderr
    assert f"log key {key.name} is missing" in run.stderr, run.stderr
    assert "restore" in run.stderr, run.stderr
    assert not key.exists()


def _short(path: Path) -> None:
    path.write_bytes(b"0123456789")
    path.chmod(0o600)


def _open_to_others(path: Path) -> None:
    path.write_bytes(bytes(32))
    path.chmod(0o644)


def _folder(path: Path) -> None:
    path.mkdir()


def _fifo(path: Path) -> None:
    os.mkfifo(path, 0o600)


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (_short, "holds 10 bytes, not 32"),
        (_open_to_others, "readable or writable by others"),
        (_folder, "is not a regular file"),
        (_fifo, "is not a regular file"),
    ],
    ids=["short", "open-to-others", "folder", "fifo"],
)
def test_a_damaged_crop_secret_ends_the_start_naming_it(
    tmp_path: Path, damage: Callable[[Path], None], said: str
) -> None:
    """Before: the server started (exit 0 once stopped) with its detector off and only a
    yellow note, so a script saw a healthy server whose reports all said 'detector not
    loaded'; a FIFO at the path held the start for good (the read waited for a writer)."""
    pytest.importorskip("torch")
    secret = tmp_path / "prov.db.detector-secret"
    damage(secret)
    run = _serve(tmp_path, "--fast-start")
    assert run.returncode == 1, run.stderr
    assert "detector secret" in run.stderr and said in run.stderr, run.stderr
    assert "prov.db.detector-secret" in run.stderr, run.stderr
    assert "listening on" not in run.stdout
    # the database and log key this start made are removed, the secret is left as found
    # (the lock file stays, as after any failed start: tests/test_serve_start.py)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "prov.db.detector-secret",
        "prov.db.lock",
    ]


def test_a_damaged_crop_secret_is_refused_before_torch_loads(tmp_path: Path) -> None:
    """Before: `prov serve` imported torch (seconds) before it read the secret, so every
    refused start waited for it. ``-X importtime`` lists each module the process loaded."""
    pytest.importorskip("torch")
    _short(tmp_path / "prov.db.detector-secret")
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "clients.cli", "serve", "--db", "prov.db"]
        + ["--listen", "127.0.0.1:0", "--fast-start"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
        env={**os.environ, "PROV_ADMIN_TOKEN": ADMIN_TOKEN, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 1, run.stderr
    assert "holds 10 bytes, not 32" in run.stderr
    loaded = [line.rpartition("|")[2].strip() for line in run.stderr.splitlines()]
    assert [m for m in loaded if m == "torch" or m.startswith("torch.")] == []
    assert "detector.secret" in loaded  # the listing was there to read


def _stale_wal_beside_a_newer_file(tmp_path: Path, stale_write: str) -> tuple[Path, bytes, str]:
    """A -wal of an earlier run put back beside the newer database file that a later run
    wrote; returns (db, the file's bytes, the newer checkpoint). What the stale WAL holds
    is made on purpose, not left to the timing of a server's checkpoints (before, the
    test copied a SIGKILLed server's -wal, and whether its WAL had started over after a
    checkpoint decided which of the two cases below it met): after a first run of 5
    captures, this test's own connection writes ``stale_write`` into the WAL (copied
    then), and a second run adds 5 captures and stops cleanly (the file holds them all,
    no -wal left)."""
    db = tmp_path / "prov.db"
    srv = start_server(db, "--fast-start")
    with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
        key = enroll_key(c)
        for seq in range(1, 6):
            c.submit(signed_claim(key, seq))
    srv.stop()
    stale = tmp_path / "stale-wal"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_autocheckpoint=0")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        conn.execute(stale_write.format(version=version))
        shutil.copyfile(f"{db}-wal", stale)
    finally:
        conn.close()  # the last connection: copies the WAL into the file, removes it
    srv = start_server(db, "--fast-start")
    with ProvenanceClient(srv.address) as c:
        for seq in range(6, 11):
            c.submit(signed_claim(key, seq))
        newest = c.checkpoint()
    srv.stop()
    assert not Path(f"{db}-wal").exists()
    kept = db.read_bytes()
    shutil.copyfile(stale, f"{db}-wal")  # the hostile part
    return db, kept, newest


def _recovers(db: Path, stale: bytes, kept: bytes, newest: str) -> None:
    """The refused start left the file and the -wal as found; with the stray -wal (and
    -shm) moved away the newer log starts, whole (`--full-check`)."""
    assert db.read_bytes() == kept
    assert Path(f"{db}-wal").read_bytes() == stale
    Path(f"{db}-wal").unlink()
    Path(f"{db}-shm").unlink(missing_ok=True)
    srv = start_server(db, "--full-check")
    try:
        with ProvenanceClient(srv.address) as c:
            assert c.checkpoint().split("\n")[:3] == newest.split("\n")[:3]
    finally:
        srv.stop()


def test_a_start_refused_on_a_stale_wal_leaves_the_newer_file_to_recover(tmp_path: Path) -> None:
    """A -wal of an earlier run (copied back with a restored folder) beside the newer
    database file, holding every page of the older log (a VACUUM's WAL): SQLite reads it
    as the file's own, the log looks rolled back, and the start is refused (exit 3).
    Before, the refused start itself copied the stale WAL into the file as it closed: the
    newer log was gone for good (and the file failed SQLite's integrity check). Now the file and the -wal are left as
    found, and removing the stray -wal brings the newer log back."""
    db, kept, newest = _stale_wal_beside_a_newer_file(tmp_path, "VACUUM")
    stale = Path(f"{db}-wal").read_bytes()
    run = _serve(tmp_path, "--no-detector", "--fast-start")
    assert run.returncode == 3, run.stderr
    assert "LOG INTEGRITY FAILURE" in run.stderr and "rolled back" in run.stderr, run.stderr
    _recovers(db, stale, kept, newest)


def test_a_stale_wal_that_makes_the_file_malformed_is_refused_and_left_as_found(
    tmp_path: Path,
) -> None:
    """A stale -wal holding only some of an earlier run's pages (here its first page alone,
    with the older page count): SQLite calls the mix "database disk image is malformed"
    at the first read. Before (met by the test above when the server it killed had started
    its WAL over after a checkpoint: on a busy machine), the start ended with exit 1 and
    SQLite's words alone, and the connection it dropped copied the stale pages into the
    file as it closed: the newer log was lost and the -wal gone. Now: exit 3 naming the file and the -wal, and what to do; both left as
    found."""
    db, kept, newest = _stale_wal_beside_a_newer_file(tmp_path, "PRAGMA user_version = {version}")
    stale = Path(f"{db}-wal").read_bytes()
    run = _serve(tmp_path, "--no-detector", "--fast-start")
    assert run.returncode == 3, run.stderr
    assert "LOG INTEGRITY FAILURE" in run.stderr and "malformed" in run.stderr, run.stderr
    assert "prov.db-wal" in run.stderr and "move" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    _recovers(db, stale, kept, newest)


def test_a_log_with_entries_and_no_registered_key_registers_no_key_file(
    tmp_path: Path,
) -> None:
    """A log with entries whose registered key is gone (a damaged meta table) started with
    another key file is refused as not registered, and the database is left as found.
    Before: the start registered that key (setdefault, for servers starting together on a
    new log), then failed on the latest checkpoint (exit 3), and the database named the
    wrong key for good: the log's own key was refused next as 'not the key this database
    was created with'."""
    db = tmp_path / "prov.db"
    srv = start_server(db, "--fast-start")
    with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
        c.submit(signed_claim(enroll_key(c), 1))
    srv.stop()
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'log_verifier_key'")
    conn.close()
    key = tmp_path / "prov.db.logkey.pem"
    key.rename(tmp_path / "kept.pem")
    generate_log_key(key, "media-provenance.local/log")
    run = _serve(tmp_path, "--no-detector")
    assert run.returncode == 1, run.stderr
    assert "has entries but no registered log key" in run.stderr, run.stderr
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT value FROM meta WHERE key = 'log_verifier_key'").fetchall()
    conn.close()
    assert rows == []
