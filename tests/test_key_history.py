"""Key history in the log: enrollments and revocations are signed log entries; the
verdict reads revocation from them; `prov log audit` reports a registry row edited or
deleted behind the log's back (exit 3). Real servers, real databases edited directly."""

from __future__ import annotations

import json
import sqlite3
import time
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from provenance.core.binding import PDQ_ALGORITHM, PerceptualHash
from provenance.core.claims import Device
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.errors import ClaimError, EnrollmentError, RevokedKeyError
from provenance.core.keyhistory import (
    KeyEvent,
    KeyEventKind,
    KeySigner,
    SignedKeyEvent,
    admin_key,
    registry_problems,
    sign_key_event,
)
from provenance.core.keys import DeviceKey
from provenance.log.audit import KeyHistoryReader
from provenance.log.tiledir import export_tiles
from provenance.server.service import ProvenanceService, ServiceConfig
from provenance.server.writer import KeyAppended, PendingClaim, PendingKeyEvent, _Item
from provenance.store import KEY_HISTORY_META, open_store, to_us
from provenance.wire import convert as wire
from tests.conftest import ADMIN_TOKEN, SAMPLES, Cli, ServerProc, sign_sample
from tests.inproc import T0, Clock, InProc


@pytest.fixture
def server_db(any_db: Path | str) -> Path | str:
    """The CLI test runs on SQLite and on PostgreSQL."""
    return any_db


def _signed(entry: bytes) -> SignedKeyEvent:
    """The signed key event of the log entry ``entry``."""
    signed, _ = wire.decode_entry(entry)
    assert isinstance(signed, SignedKeyEvent)
    return signed


def _history(service: ProvenanceService) -> KeyHistoryReader:
    entries, _ = service.entries(0, 1000)
    reader = KeyHistoryReader()
    assert list(reader.tap(entries)) == entries
    return reader


@pytest.mark.parametrize("store", ["sqlite", "memory"])
def test_enrollment_and_revocation_are_signed_entries_of_the_log(
    tmp_path: Path, store: str
) -> None:
    clock = Clock()
    cfg = ServiceConfig(
        db=tmp_path / "prov.db" if store == "sqlite" else ":memory:",
        log_key=tmp_path / "log.key",
        admin_token="an admin credential",
    )
    rig = InProc(ProvenanceService(cfg, clock), clock, tmp_path / "prov.db")
    try:
        dev = rig.enroll()
        first = rig.submit(dev.next_claim())
        since = clock.advance(minutes=5)
        clock.advance(minutes=5)
        rig.service.revoke(dev.device_id, "phone stolen", since)
        with pytest.raises(RevokedKeyError):
            rig.submit(dev.next_claim())
        reader = _history(rig.service)
        assert reader.problems == []
        kinds = [(index, kind) for index, _, kind in reader.logged_rows()]
        # enrollment, the claim, then the revocation: one log, in order
        assert kinds == [(0, KeyEventKind.ENROLLMENT), (2, KeyEventKind.REVOCATION)]
        assert first.receipt.leaf_index == 1
        admin = admin_key("an admin credential").public_key
        entries, _ = rig.service.entries(0, 3)
        signers = {_signed(entries[i]).signer_public_key for i in (0, 2)}
        assert signers == {admin}
        state = reader.states[dev.device_id]
        assert (state.revoked_at, state.revocation_reason) == (since, "phone stolen")
        assert state.public_key == dev.key.public_key and state.enrolled_at == T0
        row = rig.service.get_device(dev.device_id)
        assert registry_problems(state, row) == []
        # the checkpoint covers the revocation's time and reason
        assert rig.service.store.tree_size() == 3
        assert rig.service.latest_checkpoint().split("\n")[1] == "3"
    finally:
        rig.service.close()


def test_a_database_from_before_key_history_gets_its_history_logged(tmp_path: Path) -> None:
    """Rows written without log entries (as the code before key history did) are logged,
    marked backfilled, on the first start; a second start logs nothing more."""
    db = tmp_path / "prov.db"
    key, gone = DeviceKey.generate(), DeviceKey.generate()
    store = open_store(db)
    try:
        store.enroll(None, Device(key.key_id, key.public_key, T0), T0)
        store.enroll(None, Device(gone.key_id, gone.public_key, T0), T0)
        store.revoke(gone.key_id, T0 + timedelta(hours=1), "lost")
    finally:
        store.close()
    clock = Clock(T0 + timedelta(days=1))
    cfg = ServiceConfig(db=db, log_key=tmp_path / "log.key")
    service = ProvenanceService(cfg, clock)
    try:
        reader = _history(service)
        entries, _ = service.entries(0, 3)
        events = [wire.decode_key_event(_signed(entry).event_bytes) for entry in entries]
        assert len(events) == 3 and all(ev.backfilled for ev in events)
        assert reader.enrollments + reader.revocations == 3
        states = reader.states
        for k in (key, gone):
            assert registry_problems(states[k.key_id], service.get_device(k.key_id)) == []
        assert states[gone.key_id].revocation_reason == "lost"
        assert service.store.get_meta(KEY_HISTORY_META) == "3"
    finally:
        service.close()
    service = ProvenanceService(cfg, clock)
    try:
        assert service.store.tree_size() == 3
    finally:
        service.close()


def test_verdict_reads_the_revocation_from_the_log_inproc(inproc: InProc) -> None:
    """An edited row never makes a verdict more lenient, and the report says so."""
    dev = inproc.enroll()
    photo = SAMPLES / "rocket.jpg"
    signed, _ = inproc.log_file(dev, photo)
    since = inproc.clock.now - timedelta(minutes=1)
    inproc.service.revoke(dev.device_id, "key extracted", since)
    with sqlite3.connect(inproc.db) as c:
        c.execute(
            "UPDATE devices SET revoked_at=?, revocation_reason='' WHERE device_id=?",
            (to_us(since + timedelta(days=30)), dev.device_id),
        )
    row = inproc.service.get_device(dev.device_id)
    assert row.revoked_at == since + timedelta(days=30)  # the edit is in the table
    device = inproc.service.device_in_force(row)
    assert (device.revoked_at, device.revocation_reason) == (since, "key extracted")
    with pytest.raises(RevokedKeyError):  # nor does it let the key submit again
        inproc.submit(dev.next_claim())


def _edit_registry(db: Path | str, device_id: bytes, revoked_us: int | None, reason: str) -> None:
    """Edit the device's registry row directly in the database, behind the log's back."""
    sql = "UPDATE devices SET revoked_at=?, revocation_reason=? WHERE device_id=?"
    if isinstance(db, Path):
        with sqlite3.connect(db) as c:
            c.execute(sql, (revoked_us, reason, device_id))
        return
    import psycopg

    with psycopg.connect(db, autocommit=True) as c:
        c.execute(sql.replace("?", "%s"), (revoked_us, reason, device_id))


def _verify(cli: Cli, path: Path) -> tuple[int, dict[str, Any]]:
    rc, out, err = cli("verify", str(path), "--json", "--no-detect")
    assert out, err
    return rc, json.loads(out)


def test_audit_reports_an_edited_or_deleted_revocation(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    photo, device_id = sign_sample(enrolled, tmp_path)
    since = datetime.now(UTC) - timedelta(minutes=1)  # before the capture was logged
    rc, out, err = enrolled(
        "admin", "revoke", device_id, "--reason", "key extracted", "--since", since.isoformat()
    )
    assert rc == 0, err
    state = tmp_path / "audit.json"
    rc, out, err = enrolled("log", "audit", "--state", str(state))
    assert rc == 0, err
    assert "key history OK: 1 enrollment and 1 revocation" in out
    rc, report = _verify(enrolled, photo)
    assert (rc, report["status"]) == (12, "REVOKED_KEY")

    # the operator moves the revocation after the capture, as if it were signed before
    later = datetime.now(UTC) + timedelta(days=1)
    _edit_registry(server.db, bytes.fromhex(device_id), to_us(later), "key extracted")
    rc, out, err = enrolled("log", "audit", "--state", str(state))
    assert rc == 3, out + err
    assert "revocation time was edited" in err and device_id in err
    rc, report = _verify(enrolled, photo)  # the log's revocation still decides
    assert (rc, report["status"]) == (12, "REVOKED_KEY")
    assert any("registry disagrees with the logged key history" in r for r in report["reasons"])

    # ... or deletes it
    _edit_registry(server.db, bytes.fromhex(device_id), None, "")
    rc, out, err = enrolled("log", "audit", "--state", str(state))
    assert rc == 3 and "the revocation was deleted" in err, out + err
    rc, report = _verify(enrolled, photo)
    assert (rc, report["status"]) == (12, "REVOKED_KEY")
    assert report["evidence"]["claim"]["device"]["revocation_reason"] == "key extracted"

    # put back as it was logged: the audit passes again
    _edit_registry(server.db, bytes.fromhex(device_id), to_us(since), "key extracted")
    time.sleep(0.05)
    rc, out, err = enrolled("log", "audit", "--state", str(state))
    assert rc == 0 and "key history OK" in out, out + err


def test_enrollment_by_token_is_signed_by_the_admin_key(tmp_path: Path) -> None:
    cfg = ServiceConfig(db=":memory:", log_key=tmp_path / "log.key", admin_token=ADMIN_TOKEN)
    service = ProvenanceService(cfg, Clock())
    try:
        key = DeviceKey.generate()
        token, _ = service.create_enrollment_token()
        service.enroll(
            token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode())
        )
        [entry], _ = service.entries(0, 10)
        signed, _ = wire.decode_entry(entry)
        reader = KeyHistoryReader()
        list(reader.tap([entry]))
        assert [row[0] for row in reader.logged_rows()] == [0] and reader.problems == []
        assert isinstance(signed, SignedKeyEvent)
        assert wire.decode_key_event(signed.event_bytes).authorised_by == "token"
        assert signed.signer_public_key == admin_key(ADMIN_TOKEN).public_key
        # a refused enrollment (spent token) logs nothing
        other = DeviceKey.generate()
        with pytest.raises(EnrollmentError, match="already used"):
            pop = sign_payload(other, PAYLOAD_TYPE_ENROLL, token.encode())
            service.enroll(token, other.public_key, pop)
        assert service.store.tree_size() == 1
    finally:
        service.close()


def test_a_claim_meeting_its_keys_revocation_in_one_batch_is_refused(inproc: InProc) -> None:
    """The writer applies a batch's key events first: a claim queued before its key's
    revocation but committed with it is refused, and the revocation is logged."""
    dev = inproc.enroll()
    signed = dev.next_claim()
    ev = KeyEvent(KeyEventKind.REVOCATION, dev.device_id, inproc.clock.now, reason="lost")
    admin = KeySigner.of(DeviceKey.generate())
    revocation = PendingKeyEvent(sign_key_event(admin, wire.encode_key_event(ev)), ev)
    claimed: Future[object] = Future()
    revoked: Future[object] = Future()
    items = [
        _Item(PendingClaim(signed, wire.decode_claim(signed.claim_bytes)), claimed),
        _Item(revocation, revoked),
    ]
    inproc.service.writer._commit(items)
    with pytest.raises(RevokedKeyError):
        claimed.result(5)
    logged = revoked.result(5)
    assert isinstance(logged, KeyAppended) and logged.device.revocation_reason == "lost"
    assert inproc.service.store.tree_size() == 2  # the enrollment and the revocation


def test_a_backfilled_entry_too_large_for_an_entry_bundle_is_not_logged(tmp_path: Path) -> None:
    """The key history of a database from before key history is logged at the first
    start (backfill) without the service's checks: a revocation reason of 70,000
    characters, accepted before reasons were capped, became a 70 KB log entry, and the
    log's tiled copy (`prov log export-tiles`) stopped at it for good. The writer now
    refuses any entry over 65,535 bytes (a tlog-tiles bundle's uint16 length) on every
    path, naming the device: the server does not start, and nothing is logged, so the
    operator can shorten the reason first."""
    db = tmp_path / "prov.db"
    key = DeviceKey.generate()
    store = open_store(db)
    try:
        store.enroll(None, Device(key.key_id, key.public_key, T0), T0)
        store.revoke(key.key_id, T0 + timedelta(hours=1), "x" * 70_000)
    finally:
        store.close()
    cfg = ServiceConfig(db=db, log_key=tmp_path / "log.key")
    with pytest.raises(ClaimError, match=f"device {key.key_id.hex()[:16]}.*65,535"):
        ProvenanceService(cfg, Clock(T0 + timedelta(days=1)))
    store = open_store(db)
    try:
        assert store.tree_size() == 0 and store.get_meta(KEY_HISTORY_META) is None
        with sqlite3.connect(db) as con:  # what the operator does: a shorter reason
            con.execute("UPDATE devices SET revocation_reason = 'lost'")
    finally:
        store.close()
    service = ProvenanceService(cfg, Clock(T0 + timedelta(days=1)))
    try:
        assert service.store.tree_size() == 2
        export_tiles(service.store, tmp_path / "tiles")
    finally:
        service.close()


def test_the_writer_refuses_an_entry_too_large_on_any_path(inproc: InProc) -> None:
    """The writer is the one path every entry takes: a claim handed to it without the
    service's check_claim_shape (as a future import or batch path might) is refused
    there too when its entry is over 65,535 bytes, and nothing is logged."""
    dev = inproc.enroll()
    soft = tuple(PerceptualHash(PDQ_ALGORITHM, bytes([i % 256]) * 32, 100, float(i)) for i in
                 range(1300))  # fmt: skip
    signed = dev.next_claim(media_type="video/mp4", soft_bindings=soft)
    size = inproc.service.store.tree_size()
    pending = PendingClaim(signed, wire.decode_claim(signed.claim_bytes), dev.key.public_key)
    with pytest.raises(ClaimError, match="at most 65,535"):
        inproc.service.writer.submit(pending)
    assert inproc.service.store.tree_size() == size
