"""What a public caller is told when the log database fails, and what the server's own
log says. A store's error names its database for the operator (a PostgreSQL URL: user,
host, port, database name; a SQLite file's path) and carries the driver's own words;
before, gRPC callers got all of it as the status details ("the database
postgresql://postgres@127.0.0.1:5432/prov_test_3 cannot be used now: ..."), and the web
page's JSON errors with them. Now a caller is told what happened and what to do ("the
log database did not answer in 2 s; ... try again"), and the server's log (stderr) keeps
the database's name and the driver's words."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from clients.api import ProvenanceClient, Query
from provenance.core.errors import TransportError
from provenance.server.store_reads import PUBLIC_NOT_ANSWERING
from tests.conftest import (
    ADMIN_TOKEN,
    ServerProc,
    enroll_key,
    signed_claim,
    start_server,
    start_web,
)
from tests.pgserver import PgServer


def _told_without(
    srv: ServerProc, web: ServerProc, device: Any, said: str, secrets: list[str]
) -> None:
    """A read of the log's entries and of a device, and the web page's device, each
    refused UNAVAILABLE (503), saying ``said`` and "try again", naming none of
    ``secrets``; or, once the server's probe knows the database does not answer, refused
    untried (`PUBLIC_NOT_ANSWERING`). (The log's checkpoint is answered from the server's
    memory meanwhile.)"""
    for call in ("GetEntries", "GetDevice"):
        with (
            ProvenanceClient(srv.address, timeout=40) as c,
            pytest.raises(TransportError) as got,
        ):
            c.entries(0, 1) if call == "GetEntries" else c.get_device(device.key_id)
        err = got.value
        assert err.code == "UNAVAILABLE", (call, err)
        assert said in str(err) or PUBLIC_NOT_ANSWERING in str(err), (call, err)
        assert "try again" in str(err), (call, err)
        for secret in secrets:
            assert secret not in str(err), (call, secret, err)
    page = httpx.get(f"{web.address}/api/v1/devices/{device.key_id.hex()}", timeout=60)
    assert page.status_code == 503, page.text
    told = page.json()["error"]["message"]
    assert said in told or PUBLIC_NOT_ANSWERING in told, page.text
    for secret in secrets:
        assert secret not in page.text, (secret, page.text)


def _unusable_without(err: TransportError, secrets: list[str]) -> None:
    """``err`` is UNAVAILABLE "the log database cannot be used now", naming none of
    ``secrets``."""
    assert err.code == "UNAVAILABLE", err
    assert "the log database cannot be used now" in str(err), err
    for secret in secrets:
        assert secret not in str(err), (secret, err)


def test_a_postgresql_store_error_names_no_database_to_callers(pg_url: str) -> None:
    """A ``LOCK TABLE`` of the log's tables (as ``VACUUM FULL`` takes): reads are answered
    UNAVAILABLE, the gRPC details and the web page's 503 JSON say the log database did not
    answer, without the database's user, host, port or name; the server's log names it
    and the cause (the lock)."""
    url = urlsplit(pg_url)
    assert url.hostname and url.port and url.username
    secrets = [
        "postgresql://",
        f"{url.username}@",
        url.hostname,
        str(url.port),
        url.path.strip("/"),
        "lock_timeout",
        "canceling statement",  # PostgreSQL's own words
    ]
    srv = start_server(pg_url, "--db-answer-wait", "2")
    web = start_web(srv.address, "--service-timeout", "40")
    holder = psycopg.connect(pg_url)
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            device = enroll_key(c)
        holder.execute("LOCK TABLE leaves, checkpoints, nodes, devices IN ACCESS EXCLUSIVE MODE")
        _told_without(srv, web, device, "the log database did not answer in 2 s", secrets)
        holder.rollback()
    finally:
        holder.close()
        web.stop()
        assert srv.stop() == 0
    log = srv.stderr()
    assert f"{url.hostname}:{url.port}{url.path}" in log, log[-3000:]
    assert "a lock it needs is held by another session" in log, log[-3000:]


def test_a_sqlite_store_error_names_no_file_to_callers(tmp_path: Path) -> None:
    """The database file's tables renamed under the running server (an operator's tool):
    reads are answered UNAVAILABLE "the log database cannot be used now", without the
    file's path or SQLite's words ("no such table"), to gRPC callers and in the web
    page's 503 JSON; the server's log has both."""
    db = tmp_path / "prov.db"
    srv = start_server(db)
    web = start_web(srv.address, "--service-timeout", "40")
    secrets = [str(tmp_path), "prov.db", "no such table"]
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            device = enroll_key(c)
        with sqlite3.connect(db) as other:
            other.execute("ALTER TABLE devices RENAME TO devices_away")
            other.execute("ALTER TABLE checkpoints RENAME TO checkpoints_away")
        _told_without(srv, web, device, "the log database cannot be used now", secrets)
    finally:
        web.stop()
        assert srv.stop() == 0
    log = srv.stderr()
    assert str(db) in log and "no such table" in log, log[-3000:]


def test_a_postgresql_outage_names_no_database_to_callers(tmp_path: Path) -> None:
    """PostgreSQL shut down under the running server: a read is answered UNAVAILABLE "the
    log database cannot be used now" without the database's address or psycopg's words
    ("connection ... failed", "couldn't get a connection"); the server's log has them.
    GetCheckpoint gives the checkpoint the server signed (before: UNAVAILABLE too)."""
    pg = PgServer.start()
    try:
        url = pg.new_database()
        srv = start_server(url, "--log-key", str(tmp_path / "log.key"), "--db-connect-wait", "1")
        web = start_web(srv.address, "--service-timeout", "40")
        try:
            with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
                device = enroll_key(c)
                signed = c.checkpoint()
            pg.halt()
            secrets = [
                "postgresql://",
                "postgres@",
                "127.0.0.1",
                str(pg.port),
                url.rsplit("/", 1)[-1],
                "connection",
            ]
            _told_without(srv, web, device, "the log database cannot be used now", secrets)
            with ProvenanceClient(srv.address, timeout=40) as c:
                assert c.checkpoint() == signed  # the newest it signed, from memory
            pg.resume()  # `stop` stops a running cluster
        finally:
            web.stop()
            assert srv.stop() == 0
    finally:
        pg.stop()
    log = srv.stderr()
    assert f"127.0.0.1:{pg.port}/{url.rsplit('/', 1)[-1]} cannot be used now" in log, log[-3000:]


def _logged_then_damaged(srv: ServerProc, damage: str) -> bytes:
    """Log a capture of a new device through ``srv`` (a SQLite server), then run the SQL
    ``damage`` on its database behind its back (``{sha}``: that SHA-256 in hex); the
    capture's file SHA-256."""
    sha = os.urandom(32)
    with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
        c.submit(signed_claim(enroll_key(c), 1, sha))
    with sqlite3.connect(srv.db) as other:
        other.execute(damage.format(sha=sha.hex()))
    return sha


def test_a_store_failure_while_proving_a_match_names_no_file_to_callers(tmp_path: Path) -> None:
    """The Merkle nodes' table renamed under the running server after a capture was
    logged: a Lookup that finds the capture cannot build its inclusion proof. Before, the
    store's error (the file's path, SQLite's "no such table") was wrapped into "the log
    database is damaged (...)" and sent whole, as DATA_LOSS; now the caller is told the
    store's public words, UNAVAILABLE (an outage fails the whole call, per-query errors
    or not); the log has both."""
    db = tmp_path / "prov.db"
    srv = start_server(db)
    secrets = [str(tmp_path), "prov.db", "no such table"]
    try:
        sha = _logged_then_damaged(srv, "ALTER TABLE nodes RENAME TO nodes_away")
        errors = []
        with ProvenanceClient(srv.address, timeout=40) as c:
            for ask in (c.lookup, c.lookup_each):
                with pytest.raises(TransportError) as got:
                    ask([Query(ref="mine", sha256=sha)])
                errors.append(got.value)
        for err in errors:
            _unusable_without(err, secrets)
    finally:
        assert srv.stop() == 0
    log = srv.stderr()
    assert str(db) in log and "no such table" in log, log[-3000:]


def test_distinct_store_failures_are_each_logged_though_told_alike(tmp_path: Path) -> None:
    """Two different store failures that callers are told in the same words ("the log
    database cannot be used now"): the devices' table gone, then the checkpoints' table.
    The once-a-minute gate on the server's log lines was keyed by what the caller was
    told, so the second cause, within the minute, was never logged and the operator saw
    only the first; now each distinct cause gets its line (numbers aside)."""
    db = tmp_path / "prov.db"
    srv = start_server(db)
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            device = enroll_key(c)
        with sqlite3.connect(db) as other:
            other.execute("ALTER TABLE devices RENAME TO devices_away")
        with ProvenanceClient(srv.address, timeout=40) as c:
            with pytest.raises(TransportError, match="cannot be used now"):
                c.get_device(device.key_id)
            with sqlite3.connect(db) as other:
                other.execute("ALTER TABLE checkpoints RENAME TO checkpoints_away")
            with pytest.raises(TransportError, match="cannot be used now"):
                c.entries(0, 1)
    finally:
        assert srv.stop() == 0
    log = srv.stderr()
    assert "GetDevice: " in log and "no such table: devices" in log, log[-3000:]
    assert "GetEntries: " in log and "no such table: checkpoints" in log, log[-3000:]


@pytest.mark.parametrize("gone", ["folder moved", "file deleted"])
def test_a_sqlite_file_that_a_reading_thread_cannot_open_is_unavailable(
    tmp_path: Path, gone: str
) -> None:
    """The database's folder moved away under the running server (a volume unmounted, an
    operator's mistake), or its file deleted (the folder still there): a thread that has
    not read yet (a Lookup's, the first) cannot open its reading connection. Before, that
    was LogError, OUT_OF_RANGE (what a caller reads as "you asked past the log's end"),
    and a deleted file was made again, a new empty log (the connection was opened
    read-write-create); now UNAVAILABLE "the log database cannot be used now", naming no
    path, no file made, and the server's log names the file and SQLite's words."""
    folder = tmp_path / "log"
    folder.mkdir()
    db = folder / "prov.db"
    srv = start_server(db)
    secrets = [str(tmp_path), "prov.db", "unable to open"]
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            enroll_key(c)
        if gone == "folder moved":
            folder.rename(tmp_path / "moved")
        else:
            for f in (db, folder / "prov.db-wal", folder / "prov.db-shm"):
                f.unlink(missing_ok=True)
        with (
            ProvenanceClient(srv.address, timeout=40) as c,
            pytest.raises(TransportError) as got,
        ):
            c.lookup([Query(ref="a", sha256=os.urandom(32))])
        _unusable_without(got.value, secrets)
        assert not db.exists(), "a reading connection made a new database at the path"
    finally:
        assert srv.stop() == 0
    log = srv.stderr()
    assert str(db) in log and "unable to open database file" in log, log[-3000:]


def test_a_damaged_log_entry_s_decode_words_reach_no_caller(tmp_path: Path) -> None:
    """A log entry's bytes overwritten behind the log's back: a Lookup that finds it is
    told, per query (gRPC) and in the web page's JSON, that the log database is damaged
    and that the operator's log says why; the decoder's own words (before: sent whole,
    "log entry 1 or its receipt does not verify with the log key: the log database is
    damaged (<protobuf's or the decoder's words>)") go to the server's log only."""
    db = tmp_path / "prov.db"
    srv = start_server(db)
    web = start_web(srv.address, "--service-timeout", "40")
    try:
        sha = _logged_then_damaged(
            srv, "UPDATE leaves SET entry = x'006a756e6b' WHERE file_sha256 = x'{sha}'"
        )
        with ProvenanceClient(srv.address, timeout=40) as c:
            ((_, err),) = c.lookup_each([Query(ref="mine", sha256=sha)])
        assert isinstance(err, TransportError) and err.code == "DATA_LOSS", err
        page = httpx.post(
            f"{web.address}/api/v1/lookup",
            json={"queries": [{"sha256": sha.hex()}]},
            timeout=60,
        )
        told = [str(err), page.text]
    finally:
        web.stop()
        assert srv.stop() == 0
    log = srv.stderr()
    for text in told:
        assert "log entry 1" in text and "the log database is damaged" in text, text
        assert "operator can read why in its log" in text, text
        assert "(" not in text.split("log entry 1", 1)[1], text  # no decoder's words
    assert "log entry 1 or its receipt does not verify" in log, log[-3000:]


def test_a_capture_is_never_logged_into_a_deleted_sqlite_file(tmp_path: Path) -> None:
    """The database file deleted under the running server: a capture is refused
    UNAVAILABLE, naming no path, and the server's log says the file is gone. Before, the
    writer's open connection logged it into the deleted file and answered a receipt for
    a capture that was gone with the file (a restart finds no log there)."""
    db = tmp_path / "prov.db"
    srv = start_server(db)
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            device = enroll_key(c)
        for f in (db, tmp_path / "prov.db-wal", tmp_path / "prov.db-shm"):
            f.unlink(missing_ok=True)
        with (  # the writer holds it as in an outage: until the caller's deadline
            ProvenanceClient(srv.address, timeout=5) as c,
            pytest.raises(TransportError) as got,
        ):
            c.submit(signed_claim(device, 1))
        assert got.value.code == "UNAVAILABLE", got.value
        for secret in (str(tmp_path), "prov.db"):
            assert secret not in str(got.value), got.value
    finally:
        assert srv.stop() == 0
    log = srv.stderr()
    assert f"the database file {db} is gone" in log, log[-3000:]
