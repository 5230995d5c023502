"""`prov log audit` holds every logged claim to the log's own key history: its device
signature must verify under a key the log enrolled for its device (wherever the
enrollment is: a log upgraded to key history holds its backfilled enrollments after the
claims they cover), a live enrollment must come before the claims it covers, and no
claim may follow a live revocation of its key in force at its integration time.

The forged claims below are appended into a real database as the writer appends, with
the leaf rows, Merkle nodes and a checkpoint signed by the log's key all correct, so
only the claim check can catch them. Before it (h-auditkeys59) every one of these logs
passed the audit (exit 0). Real services on real SQLite files (and PostgreSQL), real
Ed25519 keys, the real CLI in-process, and one real `prov serve` for the online audit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clients.cli import main as prov_main
from provenance.core import merkle
from provenance.core.claims import Device as Registered
from provenance.core.claims import SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.errors import ServerEvidenceError
from provenance.core.keyhistory import (
    KeyEvent,
    KeyEventKind,
    KeySigner,
    LoggedKeyEvent,
    sign_key_event,
)
from provenance.core.keys import DeviceKey
from provenance.core.problems import MAX_PROBLEMS
from provenance.core.timetext import utc_text
from provenance.log.checkpoint import Checkpoint
from provenance.log.claim_audit import ClaimKeyAuditor
from provenance.store import KEY_HISTORY_META, NewKeyLeaf, NewLeaf, to_us
from provenance.v1 import provenance_pb2 as pb
from provenance.wire import convert as wire
from tests.conftest import relay, start_server
from tests.inproc import T0, Device, InProc, make_claim, sign
from tests.test_node_audit import _audit, _failed, _service, _sql


def _append_raw(h: InProc, signed: SignedClaim, at: datetime, linked: bool) -> int:
    """Append ``signed`` to the log of ``h`` as the writer appends a claim (its leaf row,
    nodes and a checkpoint signed by the log's key), without any of the writer's checks
    (registry, signature, revocation): a server that logs what it should have refused.
    The service must be closed after (its writer's memory of the tree is stale). The
    leaf's index."""
    w = h.service.writer
    claim = wire.decode_claim(signed.claim_bytes)
    entry = wire.encode_log_entry(signed, at)
    with h.service.store.append() as txn:
        start = txn.tree_size()
        frontier = w._frontier(txn, start, txn.latest_checkpoint())
        leaf = NewLeaf(
            leaf_hash=merkle.leaf_hash(entry),
            signed_claim=signed,
            device_id=claim.device_id,
            sequence=claim.sequence,
            file_sha256=claim.hard_binding.sha256,
            integrated_at=at,
            chain_linked=linked,
            entry=entry,
            soft_bindings=claim.soft_bindings,
        )
        txn.put_nodes(frontier.append(leaf.leaf_hash))
        note = w._signer.sign(Checkpoint(w._signer.name, start + 1, frontier.root(), at))
        txn.put_checkpoint(start + 1, note, at)
        txn.insert_leaves(start, [leaf])
    return start


def _append_key_event(h: InProc, ev: KeyEvent, at: datetime) -> int:
    """Append ``ev``, signed by the admin key, to the log of ``h`` as the writer appends
    a key event (leaf row, key-event row, nodes, a checkpoint signed by the log's key),
    without the registry's checks: a server with the admin key logging what it never
    should. The service must be closed after. The leaf's index."""
    w = h.service.writer
    signed = sign_key_event(h.service._admin, wire.encode_key_event(ev))
    entry = wire.encode_key_event_entry(signed, at)
    with h.service.store.append() as txn:
        start = txn.tree_size()
        frontier = w._frontier(txn, start, txn.latest_checkpoint())
        txn.put_nodes(frontier.append(merkle.leaf_hash(entry)))
        note = w._signer.sign(Checkpoint(w._signer.name, start + 1, frontier.root(), at))
        txn.put_checkpoint(start + 1, note, at)
        txn.insert_key_events(start, [NewKeyLeaf(merkle.leaf_hash(entry), signed, ev, at, entry)])
    return start


def _audit_online(
    db: str, vkey: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """`prov log audit --server` (a full audit, state in tmp_path/online.json) of a real
    `prov serve` on ``db`` with the log key tmp_path/log.key: (exit code, its text)."""
    server = start_server(db, "--log-key", str(tmp_path / "log.key"))
    try:
        state = tmp_path / "online.json"
        args = ["log", "audit", "--state", str(state), "--server", server.address]
        rc = prov_main([*args, "--log-key", vkey])
        got = capsys.readouterr()
        return rc, got.out + got.err
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "prov.db")


def _failing_claim(
    db: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    forge: Callable[[InProc], tuple[int, bytes]],
) -> str:
    """Log on ``db`` what ``forge`` logs (it returns the forged claim's leaf index and
    device id), close the service, audit it with --db: it fails (exit 3), naming only the
    claim, by its entry and device. The audit's text."""
    h = _service(db, tmp_path)
    try:
        index, device = forge(h)
        vkey = h.service.signer.verifier_key()
    finally:
        h.service.close()
    rc, text = _audit(db, vkey, tmp_path, capsys)
    _failed(rc, text)
    assert f"CLAIMS: log entry {index}: the claim" in text and device.hex()[:16] in text, text
    # nothing else differs: the leaf rows, nodes and key history all pass
    assert "LEAF ROWS" not in text and "STORED TREE" not in text and "KEY HISTORY" not in text
    return text


def test_a_claim_signed_by_a_key_never_enrolled_fails_the_audit(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A claim of an enrolled device, the next of its chain, signed by another key."""

    def forge(h: InProc) -> tuple[int, bytes]:
        dev = h.enroll()
        h.submit(dev.next_claim())
        rc, text = _audit(db, h.service.signer.verifier_key(), tmp_path, capsys)
        assert rc == 0 and "claims OK: 1 claim verifies under the key the log enrolled" in text, (
            text
        )
        dev.seq += 1
        claim = make_claim(dev.key, dev.seq, prev_claim_hash=dev.last)
        forged = replace(sign(DeviceKey.generate(), claim), key_id=dev.device_id)
        return _append_raw(h, forged, h.clock.advance(minutes=1), linked=True), dev.device_id

    text = _failing_claim(db, tmp_path, capsys, forge)
    assert "the claim's device signature does not verify under the key the log" in text


def test_a_claim_whose_envelope_names_another_key_fails_the_audit(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A claim of an enrolled device, the next of its chain and signed by its key, whose
    signature envelope's key id names another enrolled device: the server refuses it
    ("the claim's device id differs from the signing key id"), and a verifier refuses
    its evidence. (Before: the audit passed it, exit 0, its signature verifying under the
    key of the claim's device id.)"""
    other = b""

    def forge(h: InProc) -> tuple[int, bytes]:
        nonlocal other
        dev, other = h.enroll(), h.enroll().device_id
        h.submit(dev.next_claim())
        claim = dev.next_claim()
        forged = replace(claim, key_id=other)
        return _append_raw(h, forged, h.clock.advance(minutes=1), linked=True), dev.device_id

    text = " ".join(_failing_claim(db, tmp_path, capsys, forge).split())
    said = f"its signature envelope names the key id {other.hex()[:16]}..., not its device's"
    assert said in text, text


def _unenrolled_claim(db: Path, tmp_path: Path) -> tuple[int, DeviceKey, str]:
    """Log on ``db`` an enrollment, then a claim of a device whose registry row was
    written behind the log's back (no enrollment logged): (the claim's leaf index, the
    device's key, the log's verifier key)."""
    h = _service(db, tmp_path)
    try:
        h.enroll()
        key = DeviceKey.generate()
        h.service.store.enroll(None, Registered(key.key_id, key.public_key, T0), T0)
        index = h.submit(Device(key).next_claim()).receipt.leaf_index
        return index, key, h.service.signer.verifier_key()
    finally:
        h.service.close()


def test_a_claim_of_a_device_the_log_never_enrolled_fails_online_and_with_db(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A registry row written behind the log's back (no enrollment logged) lets the
    server log the device's claims; the registry check reads only the devices the log
    names, so only the claim check sees it, online and with --db."""
    db = tmp_path / "prov.db"
    index, key, vkey = _unenrolled_claim(db, tmp_path)
    said = f"log entry {index}: the log's key history never enrolled device {key.key_id.hex()[:16]}"
    rc, text = _audit(str(db), vkey, tmp_path, capsys)
    _failed(rc, text)
    assert f"CLAIMS: {said}" in text, text
    rc, text = _audit_online(str(db), vkey, tmp_path, capsys)
    _failed(rc, text)
    assert "CLAIMS: logged claims the log's key history does not cover" in text, text
    assert said in text


def test_claims_judged_inside_the_waiting_span_are_read_again_as_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The span read again runs from the first claim left waiting to the last, over the
    claims judged on the first reading between them (an enrolled device's): the second
    reading's chain hash must start at the first waiting claim and take those too, or
    an honest server is refused. Each unenrolled claim is named once, online and with
    --db, and nothing is said of the second read (revweb59: held)."""
    db = tmp_path / "prov.db"
    h = _service(db, tmp_path)
    try:
        known = h.enroll()
        h.submit(known.next_claim())
        key = DeviceKey.generate()
        h.service.store.enroll(None, Registered(key.key_id, key.public_key, T0), T0)
        unknown = Device(key)
        logged = [h.submit(d.next_claim()).receipt.leaf_index for d in (unknown, known) * 2]
        vkey = h.service.signer.verifier_key()
    finally:
        h.service.close()
    for rc, text in (
        _audit(str(db), vkey, tmp_path, capsys),
        _audit_online(str(db), vkey, tmp_path, capsys),
    ):
        _failed(rc, text)
        assert "read again" not in text and text.count("never enrolled") == 2, text
        for index in logged[::2]:
            assert f"log entry {index}: the log's key history never enrolled" in text, text


def test_a_second_read_other_than_the_first_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The claim check reads the claims left waiting for a key again (`finish`). A server
    answering that second read with other entries (a real relay in front of the real
    server: the enrollment's entry in place of the claim of a device the log never
    enrolled) is refused, exit 3, nothing saved. Before (revsmall59), the second read was
    taken as served, not checked against the entries re-hashed to the signed checkpoint
    the first time: this audit passed, exit 0, "claims OK: 0 claims verify", where the
    same audit of the real server fails (exit 3, the claim named)."""
    db = tmp_path / "prov.db"
    index, _, vkey = _unenrolled_claim(db, tmp_path)
    first: list[bytes] = []

    def answer(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        start = pb.GetEntriesRequest.FromString(request).start
        page = pb.GetEntriesResponse.FromString(forward(request))
        if start == 0:  # the audit's read
            first[:] = page.entries
        elif start == index:  # the claim check's second read: the enrollment again
            page.entries[0] = first[0]
        return bytes(page.SerializeToString())

    server = start_server(db, "--log-key", str(tmp_path / "log.key"))
    state = tmp_path / "online.json"
    try:
        with relay(server.address, {"/provenance.v1.Log/GetEntries": answer}) as address:
            args = ["log", "audit", "--state", str(state), "--server", address]
            rc = prov_main([*args, "--log-key", vkey])
    finally:
        server.stop()
    got = capsys.readouterr()
    assert rc == 3 and "claims OK" not in got.out, (rc, got.out, got.err)
    assert f"SERVER EVIDENCE REFUSED: log entry {index}, read again for the claim check," in (
        got.err
    ), got.err
    assert not state.exists()


def test_a_claim_logged_after_its_keys_revocation_fails_the_audit(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A live revocation, then a claim of the key integrated after the revoked time."""

    def forge(h: InProc) -> tuple[int, bytes]:
        dev = h.enroll()
        h.submit(dev.next_claim())
        h.service.revoke(dev.device_id, "phone stolen", h.clock.advance(minutes=1))
        late = dev.next_claim()
        return _append_raw(h, late, h.clock.advance(minutes=1), linked=True), dev.device_id

    text = _failing_claim(db, tmp_path, capsys, forge)
    # when, and which entry revoked it (before h-revaudit59: "was integrated after its
    # key's revocation, logged before it", neither time nor entry)
    said = (
        f"was integrated at {utc_text(T0 + timedelta(minutes=2))}, when its key was revoked"
        f" (from {utc_text(T0 + timedelta(minutes=1))}, log entry 2, logged before the"
        " claim): the server should have refused it"
    )
    assert said in " ".join(text.split()), text


def test_a_claim_logged_before_its_keys_live_enrollment_fails_the_audit(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A claim appended before its device's (live, not backfilled) enrollment, correctly
    signed: the key was not enrolled when the server logged it."""
    index = -1

    def forge(h: InProc) -> tuple[int, bytes]:
        nonlocal index
        h.submit(h.enroll().next_claim())
        early = Device(DeviceKey.generate())
        index = _append_raw(h, early.next_claim(), h.clock.advance(minutes=1), linked=True)
        token, _ = h.service.create_enrollment_token()
        pop = sign_payload(early.key, PAYLOAD_TYPE_ENROLL, token.encode())
        h.service.enroll(token, early.key.public_key, pop)
        return index, early.device_id

    text = _failing_claim(db, tmp_path, capsys, forge)
    assert f"was logged before its key's enrollment (log entry {index + 1})" in text, text


def test_an_honest_log_upgraded_to_key_history_passes(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Devices registered without key history (as before it), their claims logged, one
    of them revoked after its claims; the upgrade backfills their enrollments and the
    revocation after the claims. Then a live enrollment, claims, a live revocation back-
    dated before the device's last claim (logged before it), and a claim of the first
    device after the upgrade. Every claim verifies; the audit passes."""
    h = _service(db, tmp_path)
    try:
        old, gone = Device(DeviceKey.generate()), Device(DeviceKey.generate())
        for d in (old, gone):
            h.service.store.enroll(None, Registered(d.key.key_id, d.key.public_key, T0), T0)
        for d in (old, gone, old, gone):
            h.submit(d.next_claim())
        h.service.store.revoke(gone.device_id, h.clock.advance(minutes=1), "lost")
        vkey = h.service.signer.verifier_key()
    finally:
        h.service.close()
    _sql(db, "DELETE FROM meta WHERE key=?", KEY_HISTORY_META)  # a log before key history
    h = _service(db, tmp_path)
    try:
        assert h.service.store.tree_size() == 4 + 3  # 2 enrollments and 1 revocation
        h.clock.advance(minutes=1)
        h.submit(old.next_claim())
        new = h.enroll()
        h.submit(new.next_claim())
        since = h.clock.now
        h.clock.advance(minutes=1)
        h.submit(new.next_claim())
        h.service.revoke(new.device_id, "key extracted", since)  # before the last claim
    finally:
        h.service.close()
    rc, text = _audit(db, vkey, tmp_path, capsys)
    assert rc == 0, text
    assert "key history OK: 3 enrollments and 2 revocations" in text, text
    assert "claims OK: 7 claims verify under keys the log enrolled" in text, text
    rc, text = _audit(db, vkey, tmp_path, capsys, "--incremental")
    assert rc == 0 and "claims OK" not in text, text
    # a reader is told the claims were not checked (before h-revaudit59 the line named
    # only the key history and the near-duplicate index)
    assert "key history, claims and near-duplicate index: not checked (--incremental" in text
    # online: the claims before the backfill are read again through GetEntries pages
    rc, text = _audit_online(db, vkey, tmp_path, capsys)
    assert rc == 0, text
    assert "claims OK: 7 claims verify under keys the log enrolled" in text, text


def test_the_claim_check_keeps_its_memory_per_device() -> None:
    """Memory: the auditor keeps each device's keys and revocation and two leaf indexes,
    however many claims it reads (a log upgraded to key history leaves its claims before
    the backfill waiting: their span, not the claims)."""
    from provenance.log.claim_audit import ClaimKeyAuditor

    dev = Device(DeviceKey.generate())
    claims = ClaimKeyAuditor()
    entries = [
        wire.encode_log_entry(dev.next_claim(), T0 + timedelta(seconds=i)) for i in range(50)
    ]
    for i, entry in enumerate(entries):
        claims.read(i, entry)  # as `KeyHistoryReader` feeds it
        claims.claim(i, entry)
    assert claims._waiting == (0, 49) and claims.claims_checked == 0
    claims.finish(lambda first, end: entries[first:end])
    assert claims.problems == [
        f"log entry {i}: the log's key history never enrolled device {dev.device_id.hex()[:16]}..., whose claim it holds"
        for i in range(20)
    ]
    assert claims.more == 30


def test_a_second_enrollment_of_a_device_under_a_foreign_key_covers_none_of_its_claims(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A device id is its key's SHA-256. A server holding the admin key logs a second
    enrollment of an enrolled device under another key, then a claim of the device
    signed by that key. The key history passes (its first enrollment counts and matches
    the registry row); before (h-revaudit59) the claim check took any key enrolled for
    the device, so the audit passed (exit 0, "claims OK: 2 claims")."""
    db = str(tmp_path / "prov.db")
    impostor = Device(DeviceKey.generate())
    index = -1

    def forge(h: InProc) -> tuple[int, bytes]:
        nonlocal index
        dev = h.enroll()
        h.submit(dev.next_claim())
        ev = KeyEvent(
            KeyEventKind.ENROLLMENT,
            dev.device_id,
            h.clock.advance(minutes=1),
            public_key=impostor.key.public_key,
            authorised_by="token",
        )
        index = _append_key_event(h, ev, h.clock.now)
        claim = make_claim(impostor.key, 2, device_id=dev.device_id)
        forged = replace(sign(impostor.key, claim), key_id=dev.device_id)
        return _append_raw(h, forged, h.clock.advance(minutes=1), linked=False), dev.device_id

    text = _failing_claim(db, tmp_path, capsys, forge)
    assert f"log entry {index} enrolls for device" in text, text
    assert "not the device id" in text, text


def _entries_of(dev: Device, n: int) -> list[bytes]:
    return [wire.encode_log_entry(dev.next_claim(), T0 + timedelta(seconds=i)) for i in range(n)]


def _served(entries: list[bytes]) -> Callable[[int, int], list[bytes]]:
    """A second reading serving ``entries`` whatever span is asked."""
    return lambda first, end: entries


def test_a_second_reading_that_serves_other_entries_or_none_is_refused() -> None:
    """The claims before their key's (backfilled) enrollment are judged on a second
    reading of their span, which must reproduce the first. Before (h-revaudit59,
    revsmall59) a server serving nothing the second time left them unchecked and the
    audit said "claims OK" (no problem at all); one serving other claims of the device
    had them judged in place of the logged ones. Now ServerEvidenceError (exit 3)."""
    dev = Device(DeviceKey.generate())
    entries = _entries_of(dev, 5)
    enrolled = KeyEvent(
        KeyEventKind.ENROLLMENT, dev.device_id, T0, public_key=dev.key.public_key, backfilled=True
    )
    signed = sign_key_event(
        KeySigner(dev.key.public_key, dev.key.sign), wire.encode_key_event(enrolled)
    )

    def audited(reread: Callable[[int, int], list[bytes]]) -> ClaimKeyAuditor:
        claims = ClaimKeyAuditor()
        for i, entry in enumerate(entries):
            claims.read(i, entry)
            claims.claim(i, entry)
        claims.read(5, b"the enrollment's entry")
        claims.key_event(LoggedKeyEvent(5, T0, signed, enrolled))
        claims.finish(reread)
        return claims

    honest = audited(lambda first, end: entries[first:end])
    assert honest.problems == [] and honest.claims_checked == 5
    for served in ([], entries[:2], [*entries[:4], entries[3]], _entries_of(dev, 5)):
        with pytest.raises(ServerEvidenceError) as refused:
            audited(_served(served))
        assert str(refused.value).startswith(
            "log entries 0 to 4, read again for the claim check, came back other than"
        ), (served, refused.value)


def test_many_enrollments_of_one_device_keep_one_key() -> None:
    """A log enrolling one device many times (honest: two servers upgrading one database
    together backfill it twice; hostile: a thousand times) leaves one key to try, not a
    list each claim walks. Before (h-revaudit59) the auditor kept every enrollment."""
    dev = Device(DeviceKey.generate())
    claims = ClaimKeyAuditor()
    ev = KeyEvent(KeyEventKind.ENROLLMENT, dev.device_id, T0, public_key=dev.key.public_key)
    signed = sign_key_event(KeySigner(dev.key.public_key, dev.key.sign), wire.encode_key_event(ev))
    for i in range(1000):
        claims.key_event(LoggedKeyEvent(i, T0, signed, replace(ev, backfilled=i % 2 == 1)))
    for i, entry in enumerate(_entries_of(dev, 3), 1000):
        claims.claim(i, entry)
    claims.finish(lambda first, end: [])
    assert claims.problems == [] and claims.claims_checked == 3
    assert claims._keys == {dev.device_id: (dev.key.public_key, 0, True)}


def _unlogged_row(db: str, key: DeviceKey) -> None:
    """Add a registry row for ``key`` straight into ``db``, behind the log's back: no
    enrollment logged, yet the server accepts the device's claims."""
    _sql(
        db,
        "INSERT INTO devices(device_id, public_key, enrolled_at) VALUES (?, ?, ?)",
        key.key_id,
        key.public_key,
        to_us(T0),
    )


def test_a_registry_row_the_log_never_enrolled_fails_the_audit(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows added straight into the devices table, of devices the log never enrolled and
    that logged no claim, are each named (in the registry problems' own bound; the
    table read in pages, here of 4 rows); the honestly enrolled device is not. Before
    (h-regextra60) the audit passed (exit 0): only the devices the log names were
    looked up in the registry."""
    h = _service(db, tmp_path)
    try:
        honest = h.enroll()
        h.submit(honest.next_claim())
        vkey = h.service.signer.verifier_key()
    finally:
        h.service.close()
    rc, text = _audit(db, vkey, tmp_path, capsys)
    assert rc == 0 and "key history OK: 1 enrollment and 0 revocations" in text, text
    added = [DeviceKey.generate() for _ in range(MAX_PROBLEMS + 3)]
    for key in added:
        _unlogged_row(db, key)
    monkeypatch.setattr("provenance.store.sql.PAGE", 4)
    rc, text = _audit(db, vkey, tmp_path, capsys)
    _failed(rc, text)
    flat = " ".join(text.split())
    named = [k for k in added if f"KEY HISTORY: device {k.key_id.hex()} is in" in flat]
    assert len(named) == MAX_PROBLEMS, text
    said = "is in the registry but the log holds no enrollment of it: added behind the log's back"
    assert flat.count(said) == MAX_PROBLEMS and "... and 3 more mismatches" in flat, text
    assert honest.device_id.hex() not in flat, text
    # nothing else differs: the claim is its enrolled device's
    assert "CLAIMS" not in text and "LEAF ROWS" not in text and "STORED TREE" not in text
    # a database whose key history is not logged yet (migrated, no server started on
    # it since) holds such rows honestly: they are not named, and the audit says so
    _sql(db, "DELETE FROM meta WHERE key=?", KEY_HISTORY_META)
    rc, text = _audit(db, vkey, tmp_path, capsys)
    assert rc == 0, text
    assert "registry rows of devices the log never enrolled: not looked for" in text, text


def test_a_device_enrolled_after_the_audited_checkpoint_passes(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A live server enrolls a device after the checkpoint an audit read: its registry
    row is there, its enrollment logged in the same transaction, but past the audited
    tree. Written here as the writer writes an enrollment, with the checkpoint left out
    (what the audit sees of one committed after it read its checkpoint): the audit
    passes, naming no row."""
    h = _service(db, tmp_path)
    try:
        h.submit(h.enroll().next_claim())
        key = DeviceKey.generate()
        at = h.clock.advance(minutes=1)
        ev = KeyEvent(KeyEventKind.ENROLLMENT, key.key_id, at, public_key=key.public_key)
        signed = sign_key_event(h.service._admin, wire.encode_key_event(ev))
        entry = wire.encode_key_event_entry(signed, at)
        w = h.service.writer
        with h.service.store.append() as txn:
            start = txn.tree_size()
            frontier = w._frontier(txn, start, txn.latest_checkpoint())
            txn.enroll(None, Registered(key.key_id, key.public_key, at), at, "")
            txn.put_nodes(frontier.append(merkle.leaf_hash(entry)))
            txn.insert_key_events(
                start, [NewKeyLeaf(merkle.leaf_hash(entry), signed, ev, at, entry)]
            )
        vkey = h.service.signer.verifier_key()
    finally:
        h.service.close()
    rc, text = _audit(db, vkey, tmp_path, capsys)
    assert rc == 0, text
    assert "log OK: has 2 entries" in text and "key history OK: 1 enrollment" in text, text
