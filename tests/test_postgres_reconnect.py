"""PostgreSQL connections dropped under the store (a database restart, a failover, an
administrator's pg_terminate_backend): the next calls get fresh connections instead of
failing once per dead connection in the pool."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from urllib.parse import quote

import psycopg
import pytest

from provenance.core.errors import StorageError
from provenance.store.postgres import RECONNECT_DELAY_MAX_S, PostgresStore
from tests.pgserver import PgServer
from tests.pgserver import missing_reason as pg_missing_reason


def _fill_pool(store: PostgresStore, connections: int) -> None:
    """Make the pool open `connections` connections (held together, then returned)."""
    held = threading.Barrier(connections)

    def hold() -> None:
        with store._pool.connection():
            held.wait(timeout=30)

    threads = [threading.Thread(target=hold) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


_OTHERS = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"


def _drop_connections(url: str) -> int:
    """Terminate every other connection to the database and wait until they are gone;
    returns how many there were."""
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(f"SELECT count(pg_terminate_backend(pid)) {_OTHERS}").fetchone()
        assert row is not None
        for _ in range(200):
            left = c.execute(f"SELECT count(*) {_OTHERS}").fetchone()
            if left is not None and left[0] == 0:
                break
            time.sleep(0.05)
    return int(row[0])


def test_dropped_connections_are_replaced_not_failed(pg_url: str) -> None:
    store = PostgresStore(pg_url, max_connections=6)
    try:
        store.set_meta("before", "1")
        _fill_pool(store, 6)
        assert _drop_connections(pg_url) == 6
        # every call after the drop succeeds: before, each of the 6 dead pooled
        # connections failed one call with "terminating connection due to administrator
        # command" (StorageError, UNAVAILABLE to the client)
        for i in range(8):
            assert store.tree_size() == 0
            store.set_meta(f"after{i}", str(i))  # a write transaction
        assert [store.get_meta(f"after{i}") for i in range(8)] == [str(i) for i in range(8)]
        assert store.get_meta("before") == "1"
    finally:
        store.close()


def test_a_frozen_append_lock_holder_does_not_stall_other_servers(pg_url: str) -> None:
    """A server that froze (SIGSTOP, a paused VM, a network cut) inside its group-commit
    transaction held the append lock of every server of the database until PostgreSQL
    noticed the dead connection (TCP keepalive: hours). Its session is now ended after
    ``idle_in_transaction_s`` without a statement, its transaction rolled back."""
    frozen = PostgresStore(pg_url, max_connections=2, idle_in_transaction_s=1.0)
    other = PostgresStore(pg_url, max_connections=2, idle_in_transaction_s=1.0)
    inside = threading.Event()
    resume = threading.Event()
    failed: list[BaseException] = []

    def freeze() -> None:
        try:
            with frozen.append() as txn:
                txn.put_checkpoint(7, "half-written", datetime.now(UTC))
                inside.set()
                resume.wait(timeout=60)  # sends nothing meanwhile, as a stopped process
        except BaseException as e:
            failed.append(e)

    try:
        holder = threading.Thread(target=freeze)
        holder.start()
        assert inside.wait(timeout=30)
        done = threading.Event()

        def append() -> None:
            with other.append() as txn:
                assert txn.tree_size() == 0
            done.set()

        t = threading.Thread(target=append, daemon=True)
        t.start()
        assert done.wait(timeout=30), "the other server waited on the frozen one's lock"
        resume.set()
        holder.join(timeout=30)
        # the frozen transaction was rolled back and says so when it resumes
        assert len(failed) == 1 and isinstance(failed[0], StorageError), failed
        assert other.latest_checkpoint() is None
    finally:
        resume.set()
        frozen.close()
        other.close()


def test_the_urls_own_session_options_are_kept(pg_url: str) -> None:
    """A log kept in its own schema (``?options=-c search_path=prov``) is opened there, with
    the store's idle-in-transaction timeout added: the store's options used to replace
    the URL's, so the server made a new empty log in ``public``."""
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("CREATE SCHEMA prov")
    options = quote("-c search_path=prov -c statement_timeout=12345")
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}options={options}"
    store = PostgresStore(url, max_connections=2)
    try:
        store.set_meta("where", "prov")
        with store._read() as c:
            shown = [
                c.execute(f"SHOW {name}").fetchone()
                for name in (
                    "search_path",
                    "statement_timeout",
                    "idle_in_transaction_session_timeout",
                )
            ]
    finally:
        store.close()
    assert shown == [("prov",), ("12345ms",), ("1min",)], shown  # was "$user", public; 0
    with psycopg.connect(pg_url, autocommit=True) as c:
        found = c.execute(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'leaves'"
        ).fetchall()
    assert found == [("prov",)], found  # was [("public",)]: a second, empty log
    reader = PostgresStore(url, max_connections=2, read_only=True)
    try:
        assert reader.get_meta("where") == "prov"
        with reader._read() as c:
            assert c.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
    finally:
        reader.close()


#: Failed tries to reconnect after which the database comes back (`test_calls_succeed_soon_...`).
FAILED_TRIES = 8


def test_calls_succeed_soon_after_the_database_comes_back() -> None:
    """After a database outage the pool reconnected on its own exponential backoff (1, 2,
    4, 8, 16 s ... up to 5 minutes between tries), so calls kept failing or waiting long
    after PostgreSQL was back: here, back 18 s into the outage, the next try was about 31
    s in. The tries are now at most `RECONNECT_DELAY_MAX_S` apart. The database comes back
    once the pool has failed `FAILED_TRIES` tries to reconnect (its own count; what the 18
    s stood for), in about 8 s (each lost connection has its own chain of tries); with
    the backoff uncapped that took 15 s or more (over 60 s, for one chain: the test fails
    there) and the next try was as far away again."""
    reason = pg_missing_reason()
    if reason is not None:
        pytest.fail(reason)
    pg = PgServer.start()
    try:
        url = pg.new_database()
        store = PostgresStore(url, max_connections=2)
        try:
            store.set_meta("before", "1")
            pg.halt("fast")
            # a call finds the pooled connection dropped; the pool retries meanwhile,
            # failing (the call waits for a connection, in the background)
            threading.Thread(target=store.tree_size, daemon=True).start()
            give_up = time.monotonic() + 60
            while (store._pool._outage or (0.0, 0))[1] < FAILED_TRIES:
                assert time.monotonic() < give_up, "the pool's tries to reconnect grew apart"
                time.sleep(0.05)
            pg.resume()
            back = time.monotonic()
            assert store.get_meta("before") == "1"
            waited = time.monotonic() - back
        finally:
            store.close()
    finally:
        pg.stop()
    # the store's calls wait for a connection up to 30 s: before, this one waited for the
    # pool's next try, 12-13 s after the database was back
    assert waited < RECONNECT_DELAY_MAX_S + 3, f"{waited:.1f} s"
