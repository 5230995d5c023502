"""The key history of a database from before key history is logged once, however many
servers start on it together: real `prov serve` processes over one real PostgreSQL
database, and the writer's own rule over a real SQLite store. Before (h-backfill61), of
two servers starting together the later backfill commit broke the leaves' unique claim
hash and its server exited 3, "LOG INTEGRITY FAILURE: the log database is damaged"."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from clients.cli import main as prov_main
from provenance.core.claims import Device
from provenance.core.keyhistory import KeyEventKind, SignedKeyEvent
from provenance.core.keys import DeviceKey
from provenance.log.checkpoint import DEFAULT_ORIGIN, generate_log_key
from provenance.server.service import ProvenanceService, ServiceConfig
from provenance.server.writer import PendingKeyEvent
from provenance.store import KEY_HISTORY_META, open_store
from provenance.store.postgres import APPEND_LOCK, PostgresStore
from provenance.wire import convert as wire
from tests.conftest import PG_LOG_KEYS, ServerProc, start_server
from tests.inproc import T0, Clock

#: Devices of the upgraded database (the first one revoked): enough that each server's
#: backfill is still being queued when the other's commits.
DEVICES = 40


def _pre_key_history(db: Path | str, n: int) -> list[DeviceKey]:
    """Registry rows written without log entries (as the code before key history did):
    ``n`` devices, the first revoked. Returns their keys."""
    keys = [DeviceKey.generate() for _ in range(n)]
    store = open_store(db)
    try:
        for k in keys:
            store.enroll(None, Device(k.key_id, k.public_key, T0), T0)
        store.revoke(keys[0].key_id, T0 + timedelta(hours=1), "lost")
    finally:
        store.close()
    return keys


def _waiting_for_append_lock(url: str) -> int:
    """How many sessions of ``url``'s database wait for the log's append lock."""
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid::bigint = %s AND objid::bigint = %s",
            (APPEND_LOCK >> 32, APPEND_LOCK & 0xFFFFFFFF),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _audit(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The output of a full `prov log audit --db` of ``db``, which must pass."""
    store = open_store(db)
    try:
        vkey = store.get_meta("log_verifier_key")
    finally:
        store.close()
    assert vkey is not None
    capsys.readouterr()
    state = tmp_path / "audit.json"
    rc = prov_main(["log", "audit", "--db", db, "--state", str(state), "--log-key", vkey])
    got = capsys.readouterr()
    assert rc == 0, got.out + got.err
    return got.out


def test_servers_starting_together_on_an_upgraded_database_log_its_key_history_once(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two `prov serve` start together on a PostgreSQL database from before key history.
    The test holds the log's append lock until both wait for it (at their start-up
    check of the log, just before the backfill), so their starts run side by side: both
    servers start, each device's enrollment (and the revocation) is logged once, and the
    audit passes. Before, one of the two exited 3 ("LOG INTEGRITY FAILURE ... duplicate
    key value violates unique constraint "leaves_claim_hash_key"") in 9 runs of 10;
    without the held lock, in about 1 pair of starts in 3."""
    keys = _pre_key_history(pg_url, DEVICES)
    signer = generate_log_key(PG_LOG_KEYS[pg_url], DEFAULT_ORIGIN)  # its log's, from before
    store = open_store(pg_url)
    try:
        store.setdefault_meta("origin", DEFAULT_ORIGIN)
        store.setdefault_meta("log_verifier_key", signer.verifier_key())
    finally:
        store.close()
    started: list[ServerProc] = []
    failed: list[BaseException] = []

    def start() -> None:
        try:
            started.append(start_server(pg_url))
        except BaseException as e:  # asserted below
            failed.append(e)

    threads = [threading.Thread(target=start) for _ in range(2)]
    holder = PostgresStore(pg_url)
    try:
        with holder.append():
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60  # a hang guard, not a timing
            while _waiting_for_append_lock(pg_url) < 2:
                assert time.monotonic() < deadline, "the servers never waited for the log"
                assert not failed, failed
                time.sleep(0.05)
    finally:
        holder.close()
    for t in threads:
        t.join()
    for srv in started:
        srv.stop()
    assert not failed, failed[0]
    logs = "".join(srv.stderr() for srv in started)
    assert f"logged the key history of {DEVICES} existing devices" in logs or (
        "more devices was logged already" in logs
    ), logs
    store = open_store(pg_url)
    try:
        assert store.tree_size() == DEVICES + 1
        assert store.get_meta(KEY_HISTORY_META) == str(DEVICES + 1)
        assert [len(store.key_event_entries(k.key_id)) for k in keys] == [2] + [1] * (DEVICES - 1)
    finally:
        store.close()
    out = _audit(pg_url, tmp_path, capsys)
    assert f"key history OK: {DEVICES} enrollments and 1 revocation" in out


def test_the_writer_logs_no_backfilled_event_of_a_kind_the_log_holds(tmp_path: Path) -> None:
    """Where another server logged a backfilled event first, the same event queued again
    logs nothing: its outcome is the registry row without a receipt (before: the commit
    broke the leaves' unique claim hash, a LogIntegrityError naming a damaged
    database). A real SQLite store; the events queued again are the logged ones."""
    db = tmp_path / "prov.db"
    keys = _pre_key_history(db, 3)
    cfg = ServiceConfig(db=db, log_key=tmp_path / "log.key")
    service = ProvenanceService(cfg, Clock(T0 + timedelta(days=1)))
    try:
        entries, _ = service.entries(0, 10)
        assert len(entries) == 4
        pending = []
        for entry in entries:
            signed, _ = wire.decode_entry(entry)
            assert isinstance(signed, SignedKeyEvent)
            pending.append(
                PendingKeyEvent(signed, wire.decode_key_event(signed.event_bytes), backfill=True)
            )
        done = service.writer.submit_key_events(pending)
        assert [r.receipt for r in done] == [None] * 4
        assert [r.device.device_id for r in done] == [p.event.device_id for p in pending]
        # each the registry row as it stands: the first device's revoked
        assert [r.device.revoked_at is not None for r in done] == [
            p.event.device_id == keys[0].key_id for p in pending
        ]
        assert service.store.tree_size() == 4
    finally:
        service.close()


def test_a_backfill_stopped_part_way_is_finished_by_the_next_start(tmp_path: Path) -> None:
    """A start that logged a revoked device's enrollment but not its revocation (stopped
    between the two commits: no key history mark written) leaves the revocation to the
    next start, which logs it and nothing else. Before, a device with any logged entry was
    left out whole, and its revocation was never logged (the registry then disagreed with
    the log's key history)."""
    db = tmp_path / "prov.db"
    key = DeviceKey.generate()
    store = open_store(db)
    try:
        store.enroll(None, Device(key.key_id, key.public_key, T0), T0)
    finally:
        store.close()
    cfg = ServiceConfig(db=db, log_key=tmp_path / "log.key")
    ProvenanceService(cfg, Clock(T0 + timedelta(days=1))).close()  # logs the enrollment
    revoked = T0 + timedelta(hours=1)
    with sqlite3.connect(db) as con:  # the state the stopped start left
        con.execute(f"DELETE FROM meta WHERE key = '{KEY_HISTORY_META}'")
    store = open_store(db)
    try:
        store.revoke(key.key_id, revoked, "lost")
        assert store.tree_size() == 1
    finally:
        store.close()
    service = ProvenanceService(cfg, Clock(T0 + timedelta(days=1)))
    try:
        entries, _ = service.entries(0, 10)
        kinds = []
        for entry in entries:
            signed, _ = wire.decode_entry(entry)
            assert isinstance(signed, SignedKeyEvent)
            ev = wire.decode_key_event(signed.event_bytes)
            assert ev.backfilled
            kinds.append(ev.kind)
        assert kinds == [KeyEventKind.ENROLLMENT, KeyEventKind.REVOCATION]
        assert service.store.get_meta(KEY_HISTORY_META) == "2"
    finally:
        service.close()
