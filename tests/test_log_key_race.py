"""Servers starting at once on a new shared PostgreSQL log with a log key file that does
not exist yet: one of them creates the key, the other loads that very key (before: the
one that lost the race to create the file refused to start, "already exists", or read it
half written). Real `prov serve` processes on one real PostgreSQL database."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psycopg

from clients.api import ProvenanceClient
from provenance.log.checkpoint import generate_log_key, load_log_signer
from provenance.store import open_store
from tests.conftest import PG_LOG_KEYS, ServerProc, start_server

#: servers started at once
SERVERS = 2


def test_servers_starting_at_once_share_the_key_one_of_them_creates(pg_url: str) -> None:
    """Both servers are held (a lock on the leaves table) right after each found the key
    file missing, then let go together: both try to create it."""
    key_file: Path = PG_LOG_KEYS[pg_url]
    open_store(pg_url).close()  # the schema, made once
    started: list[ServerProc] = []
    failed: list[Exception] = []
    threads = [_starter(pg_url, started, failed) for _ in range(SERVERS)]
    with psycopg.connect(pg_url) as hold:
        hold.execute("LOCK TABLE leaves IN ACCESS EXCLUSIVE MODE")
        for t in threads:
            t.start()
        _wait_for_waiters(pg_url, "leaves", SERVERS)  # each asked the log's size
        assert not key_file.exists()
        hold.rollback()
    for t in threads:
        t.join()
    try:
        assert not failed, failed
        keys = set()
        for s in started:
            with ProvenanceClient(s.address) as c:
                keys.add(c.log_key())
        assert len(keys) == 1, keys  # one log key, served by both
        assert key_file.stat().st_mode & 0o777 == 0o600
        # no temporary file is left beside it
        assert [p.name for p in key_file.parent.iterdir() if "logkey" in p.name] == [key_file.name]
    finally:
        for s in started:
            s.stop()


def test_a_server_reading_the_origin_before_the_key_is_registered_starts(pg_url: str) -> None:
    """A server that reads the new log's origin after the other server starting with it
    registered it, but before that one registered the key (two commits), registers the
    key too (the same: the first one's file), and both start. The test holds a row of the
    key's name uncommitted: the first server waits there, its origin committed; the second
    is started then, and waits there too; then the row is let go. Before, the second
    exited 1, "log key ... is not the key this database was created with", every time;
    unheld, about 1 start in 20 of two servers together on a loaded machine."""
    key_file: Path = PG_LOG_KEYS[pg_url]
    open_store(pg_url).close()  # the schema, made once
    started: list[ServerProc] = []
    failed: list[Exception] = []
    first, second = (_starter(pg_url, started, failed) for _ in range(SERVERS))
    try:
        with psycopg.connect(pg_url) as hold:
            hold.execute("INSERT INTO meta(key, value) VALUES ('log_verifier_key', 'held')")
            first.start()
            _wait_for_waiters(pg_url, None, 1, failed)
            store = open_store(pg_url)
            try:
                assert store.get_meta("origin") is not None  # registered, its key not yet
                assert store.get_meta("log_verifier_key") is None
            finally:
                store.close()
            second.start()
            _wait_for_waiters(pg_url, None, 2, failed)
            hold.rollback()
        first.join()
        second.join()
        assert not failed, failed
        store = open_store(pg_url)
        try:
            registered, origin = store.get_meta("log_verifier_key"), store.get_meta("origin")
        finally:
            store.close()
        assert origin is not None
        assert registered == load_log_signer(key_file, origin).verifier_key()  # the file's
        for s in started:  # and both serve it
            with ProvenanceClient(s.address) as c:
                assert c.log_key() == (registered, origin)
    finally:
        for t in (first, second):
            if t.ident is not None:  # started
                t.join()
        for s in started:
            s.stop()


def _starter(url: str, started: list[ServerProc], failed: list[Exception]) -> threading.Thread:
    """A thread (not started) that starts a server on ``url`` and adds it to ``started``,
    or the error it exited with (its stderr) to ``failed``."""

    def start() -> None:
        try:
            started.append(start_server(url))
        except RuntimeError as e:
            failed.append(e)

    return threading.Thread(target=start)


def _wait_for_waiters(
    url: str, table: str | None, n: int, failed: list[Exception] | None = None
) -> None:
    """Wait until ``n`` sessions of the database wait for a lock on ``table`` (None: for
    another transaction, as a row it wrote and holds uncommitted); fail at once with
    ``failed``'s errors when one comes (a server that exited instead)."""
    deadline = time.monotonic() + 60  # a hang guard, not a timing
    with psycopg.connect(url, autocommit=True) as c:
        while True:
            row = c.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE NOT l.granted AND a.datname = current_database() AND"
                " (l.relation = %s::regclass OR %s::regclass IS NULL"
                " AND l.locktype = 'transactionid')",
                (table, table),
            ).fetchone()
            if row is not None and row[0] >= n:
                return
            assert not failed, failed
            assert time.monotonic() < deadline, f"no {n} sessions waited for {table}"
            time.sleep(0.05)


def test_a_server_waits_for_a_key_file_still_being_written(pg_url: str, tmp_path: Path) -> None:
    """A new key file that holds no key yet (another process writing it in place, as a
    copy does) is waited for, a few seconds at most (before: the server refused to start,
    "holds no readable private key"). The server is held (a lock on the meta table) until
    it is about to read the key, and the key is finished a second later."""
    key_file: Path = PG_LOG_KEYS[pg_url]
    made = generate_log_key(tmp_path / "made-elsewhere.pem", "example.org/log")
    public = made.verifier_key().rpartition("+")[2]  # the key (the name is the server's)
    written = (tmp_path / "made-elsewhere.pem").read_bytes()
    open_store(pg_url).close()  # the schema, made once
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, written[:20])  # the first bytes only, for now
    started: list[ServerProc] = []
    failed: list[Exception] = []
    t = _starter(pg_url, started, failed)
    with psycopg.connect(pg_url) as hold:
        hold.execute("LOCK TABLE meta IN ACCESS EXCLUSIVE MODE")
        t.start()
        _wait_for_waiters(pg_url, "meta", 1)
        # still being written as the server reads it: a file untouched for LOG_KEY_WAIT_S
        # is not waited for, and a loaded machine can take that long to start the server
        os.write(fd, written[20:40])
        hold.rollback()
    time.sleep(1.0)
    os.write(fd, written[40:])
    os.close(fd)
    t.join()
    assert not failed, failed
    try:
        with ProvenanceClient(started[0].address) as c:
            assert c.log_key()[0].rpartition("+")[2] == public
    finally:
        started[0].stop()
