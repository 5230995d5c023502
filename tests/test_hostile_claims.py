"""Hostile claims and wire input (issue 11): refused with the right error type before they
reach the log writer, and never at the cost of other devices' submissions.

In-process: a real `ProvenanceService` on a temporary SQLite database, real keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from provenance.core.binding import PerceptualHash
from provenance.core.claims import MAX_METADATA_BYTES, Claim, HardBinding, Receipt, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.errors import ClaimError
from provenance.core.keys import DeviceKey
from provenance.core.verify import FileFacts, VerificationReport
from provenance.server.service import ProvenanceService, ServiceConfig
from provenance.server.writer import Appended, PendingClaim, _Item
from provenance.wire import convert as wire
from tests.conftest import ServerProc


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ProvenanceService]:
    s = ProvenanceService(ServiceConfig(tmp_path / "prov.db", tmp_path / "log.key"))
    yield s
    s.close()


def enroll(service: ProvenanceService) -> DeviceKey:
    key = DeviceKey.generate()
    token, _ = service.create_enrollment_token()
    service.enroll(token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode()))
    return key


def make_claim(key: DeviceKey, seq: int, **changes: Any) -> Claim:
    claim = Claim(
        device_id=key.key_id,
        sequence=seq,
        captured_at=datetime.now(UTC),
        media_type="image/jpeg",
        size_bytes=10,
        hard_binding=HardBinding(sha256=bytes(32) if seq == 0 else seq.to_bytes(32, "big")),
        soft_bindings=(PerceptualHash("pdq", bytes(32), 0),),
        width=4,
        height=3,
    )
    return dataclasses.replace(claim, **changes)


def sign(key: DeviceKey, claim: Claim) -> SignedClaim:
    data = wire.encode_claim(claim)
    return SignedClaim(
        PAYLOAD_TYPE_CLAIM, data, key.key_id, sign_payload(key, PAYLOAD_TYPE_CLAIM, data)
    )


# ------------------------------------------------------------ high 6: sequence >= 2^63


@pytest.mark.parametrize(
    "changes",
    [
        {"sequence": 2**63},
        {"sequence": 2**64 - 1},
        {"size_bytes": 2**63},
        {"hard_binding": HardBinding(sha256=bytes(32), chunk_size=1, chunk_count=2**63)},
    ],
)
def test_sequence_2_63_refused_at_claim_shape(
    service: ProvenanceService, changes: dict[str, object]
) -> None:
    key = enroll(service)
    with pytest.raises(ClaimError, match=r"2\^63"):
        service.submit(sign(key, make_claim(key, 1, **changes)))
    # the device can still submit normally afterwards
    assert service.submit(sign(key, make_claim(key, 1))).receipt.leaf_index == 1


def test_sequence_2_63_one_bad_claim_never_fails_its_batch(service: ProvenanceService) -> None:
    """Even a claim that gets past the shape checks and breaks the database's integer range
    fails alone: the other claims of its commit batch are logged."""
    keys = [enroll(service) for _ in range(4)]
    bad_key = enroll(service)
    huge = make_claim(bad_key, 2**63)
    bad = PendingClaim(sign(bad_key, huge), huge)
    good = [PendingClaim(sign(k, c := make_claim(k, 1)), c) for k in keys]
    futures: list[Future[Appended]] = [Future() for _ in range(5)]
    items = [
        _Item(p, f) for p, f in zip((good[0], good[1], bad, good[2], good[3]), futures, strict=True)
    ]
    service.writer._commit(items)
    results: list[Appended | BaseException] = []
    for f in futures:
        exc = f.exception(timeout=5)
        results.append(exc if exc is not None else f.result())
    assert isinstance(results[2], Exception)
    ok = [r for r in results if isinstance(r, Appended)]
    assert len(ok) == 4
    assert sorted(r.receipt.leaf_index for r in ok) == [5, 6, 7, 8]  # after 5 enrollments
    assert service.store.tree_size() == 9


# ------------------------------------------------------------ INTERNAL -> INVALID_ARGUMENT


def _claim_msg(**fields: Any) -> bytes:
    from google.protobuf.timestamp_pb2 import Timestamp

    base: dict[str, Any] = {
        "version": 1,
        "device_id": bytes(32),
        "sequence": 1,
        "captured_at": Timestamp(seconds=1_700_000_000),
        "hard_binding": wire.pb.HardBinding(sha256=bytes(32)),
    }
    base.update(fields)
    return wire.pb.Claim(**base).SerializeToString()


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(2**62, 0), (-(2**62), 0), (253402300800, 0), (-62135596801, 0), (0, -5)],
)
def test_out_of_range_timestamps_are_claim_errors(seconds: int, nanos: int) -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    data = _claim_msg(captured_at=Timestamp(seconds=seconds, nanos=nanos))
    with pytest.raises(ClaimError, match="capture time is out of range"):
        wire.decode_claim(data)
    entry = wire.pb.LogEntry(integrated_at=Timestamp(seconds=seconds, nanos=nanos))
    with pytest.raises(ClaimError, match="out of range"):
        wire.decode_log_entry(entry.SerializeToString())
    with pytest.raises(ClaimError, match="out of range"):
        wire.decode_receipt(wire.pb.Receipt(integrated_at=entry.integrated_at).SerializeToString())


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (-62135596800, 0),
        (253402300799, 999_999_999),
        (0, 0),
        (0, 999),
        (-1, 1_999),
        (1_700_000_000, 123_456_789),
        (253402300800, 0),
        (-62135596801, 999_999_999),
        (0, 1_000_000_000),
        (0, -1),
    ],
)
def test_timestamps_decode_as_protobuf_converts_them(seconds: int, nanos: int) -> None:
    """`ts_from_pb` (its own arithmetic, on every submission) gives what protobuf's
    `Timestamp.ToDatetime` gives, to the microsecond, and refuses what it refuses."""
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp(seconds=seconds, nanos=nanos)
    try:
        want: datetime | None = t.ToDatetime(tzinfo=UTC)
    except ValueError:
        want = None
    if want is None:
        with pytest.raises(ClaimError, match="out of range"):
            wire.ts_from_pb(t)
    else:
        got = wire.ts_from_pb(t)
        assert got == want and got.tzinfo is UTC


@pytest.mark.parametrize(
    "soft",
    [
        {"algorithm": "pdq", "hash": bytes(32), "quality": 200},
        {"algorithm": "pdq", "hash": bytes(32), "quality": -1},
        {"algorithm": "pdq", "hash": bytes(5), "quality": 90},
        {"algorithm": "md5", "hash": bytes(32), "quality": 90},
        {"algorithm": "pdq", "hash": bytes(32), "quality": 90, "timestamp_seconds": float("nan")},
    ],
)
def test_malformed_soft_bindings_are_claim_errors(soft: dict[str, Any]) -> None:
    data = _claim_msg(soft_bindings=[wire.pb.SoftBinding(**soft)])
    with pytest.raises(ClaimError, match="malformed soft binding"):
        wire.decode_claim(data)


def test_malformed_protobuf_claim_is_claim_error() -> None:
    good = _claim_msg(metadata={"a": "b"})
    for bad in (b"\xff\xff\xff" + good, bytes([0x2A, 2, 0xFF, 0xFE]) + good, good[:-3]):
        with pytest.raises(ClaimError, match="malformed claim"):
            wire.decode_claim(bad)


def test_sidecar_with_bad_timestamp_or_quality_is_claim_error(service: ProvenanceService) -> None:
    """Submitting such a claim is a ClaimError (INVALID_ARGUMENT), never a ValueError or a
    BindingError (INTERNAL); beside a file to verify, the sidecar is not used and the
    verdict is given without it ("a verdict always", issue 11)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    from provenance.core.verify import FileFacts

    key = enroll(service)
    facts = FileFacts(sha256=bytes(32), size=10, media_type="image/jpeg")
    for fields in (
        {"captured_at": Timestamp(seconds=2**40)},
        {"soft_bindings": [wire.pb.SoftBinding(algorithm="pdq", hash=bytes(32), quality=101)]},
    ):
        data = _claim_msg(device_id=key.key_id, **fields)
        signed = SignedClaim(
            PAYLOAD_TYPE_CLAIM, data, key.key_id, sign_payload(key, PAYLOAD_TYPE_CLAIM, data)
        )
        report = service.verify(facts, signed)
        assert report.status.value == "UNSIGNED" and "cannot be read" in report.reasons[-1]
        with pytest.raises(ClaimError):
            service.submit(signed)


def test_get_entries_and_inclusion_index_2_63_out_of_range(service: ProvenanceService) -> None:
    from provenance.core.errors import LogError

    key = enroll(service)
    service.submit(sign(key, make_claim(key, 1)))  # leaf 1, after the enrollment
    for start in (2**63, 2**64 - 1, 3):
        with pytest.raises(LogError, match="beyond the log's size 2"):
            service.entries(start, 10)
    assert service.entries(2, 10) == ([], 2)
    for index in (2**63, 2**64 - 1, 2):
        with pytest.raises(LogError, match="not in the tree of size 2"):
            service.inclusion_proof(0, index=index)


def test_revoke_rpc_refuses_future_revocation_time(service: ProvenanceService) -> None:
    from datetime import timedelta

    key = enroll(service)
    with pytest.raises(ClaimError, match="in the future"):
        service.revoke(key.key_id, "lost", datetime.now(UTC) + timedelta(days=365))
    assert service.get_device(key.key_id).revoked_at is None
    past = datetime.now(UTC) - timedelta(hours=1)
    assert service.revoke(key.key_id, "lost", past).revoked_at == past


# ------------------------------------------------------------ receipt verify checks the key


def test_receipt_verify_checks_sidecar_public_key(
    service: ProvenanceService, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov receipt verify` of a sidecar whose public key is not the claim's signer
    fails, where it used to print "receipt OK"."""
    from clients.cli import main as prov_main
    from provenance.wire.sidecar import Sidecar, encode_sidecar

    key, other = enroll(service), DeviceKey.generate()
    signed = sign(key, make_claim(key, 1))
    receipt = service.submit(signed).receipt
    vkey = service.signer.verifier_key()
    good = tmp_path / "good.jpg.prov"
    good.write_bytes(encode_sidecar(Sidecar(signed, key.public_key, receipt)))
    assert prov_main(["receipt", "verify", str(good), "--log-key", vkey]) == 0
    assert "receipt OK" in capsys.readouterr().out
    swapped = tmp_path / "swapped.jpg.prov"
    swapped.write_bytes(encode_sidecar(Sidecar(signed, other.public_key, receipt)))
    assert prov_main(["receipt", "verify", str(swapped), "--log-key", vkey]) != 0
    cap = capsys.readouterr()
    assert "receipt OK" not in cap.out
    assert "is not the key that signed its claim" in cap.err


# ------------------------------------------------------------ time sanity


def _verify_exact(service: ProvenanceService, claim: Claim) -> VerificationReport:
    facts = FileFacts(sha256=claim.hard_binding.sha256, size=10, media_type="image/jpeg")
    return service.verify(facts)


def test_capture_time_far_ahead_is_accepted_but_flagged(service: ProvenanceService) -> None:
    from datetime import timedelta

    from clients.report import report_to_json, report_to_text

    key = enroll(service)
    ahead = make_claim(key, 1, captured_at=datetime.now(UTC) + timedelta(days=3))
    service.submit(sign(key, ahead))  # accepted: the log cannot know the device clock
    report = _verify_exact(service, ahead)
    assert report.status.value == "SIGNED_ORIGINAL"
    assert [f.code for f in report.evidence.time_flags] == ["captured_after_server_time"]
    assert any("ahead of the server's clock" in r for r in report.reasons)
    # the flags travel on the wire and show in the `prov verify` report
    back = wire.report_from_pb(wire.report_to_pb(report))
    assert back.evidence.time_flags == report.evidence.time_flags
    assert report_to_json(back)["evidence"]["time_flags"][0]["code"] == (
        "captured_after_server_time"
    )
    assert "FLAGGED: captured_after_server_time" in report_to_text(back, "x.jpg")
    # within the stated tolerance (24 h) nothing is flagged
    near = make_claim(key, 2, captured_at=datetime.now(UTC) + timedelta(hours=20))
    service.submit(sign(key, near))
    assert _verify_exact(service, near).evidence.time_flags == ()


def test_capture_time_before_enrollment_is_flagged(service: ProvenanceService) -> None:
    from datetime import timedelta

    key = enroll(service)
    for seq, when in (
        (1, datetime(1, 1, 1, tzinfo=UTC)),
        (2, datetime.now(UTC) - timedelta(days=400)),
    ):
        old = make_claim(key, seq, captured_at=when)
        service.submit(sign(key, old))
        report = _verify_exact(service, old)
        assert report.status.value == "SIGNED_ORIGINAL"
        assert [f.code for f in report.evidence.time_flags] == ["captured_before_enrollment"]
    ok = make_claim(key, 3)
    service.submit(sign(key, ok))
    assert _verify_exact(service, ok).evidence.time_flags == ()


# ------------------------------------------------------------ status codes on the wire


def test_hostile_requests_get_specific_status_codes_on_the_wire(server: ServerProc) -> None:
    """A real `prov serve`: the status codes clients see for each hostile request."""
    from datetime import timedelta

    import grpc
    from google.protobuf.timestamp_pb2 import Timestamp

    from clients.api import ProvenanceClient
    from provenance.v1 import provenance_pb2_grpc as rpc
    from tests.conftest import ADMIN_TOKEN, enroll_key

    pb = wire.pb
    auth = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as client:
        key = enroll_key(client)
    channel = grpc.insecure_channel(server.address)

    def code(
        call: Callable[..., object], request: object, **kw: Any
    ) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as e:
            call(request, timeout=30, **kw)
        return e.value.code(), str(e.value.details())

    captures = rpc.CapturesStub(channel)
    huge = sign(key, make_claim(key, 2**63))
    got = code(
        captures.SubmitCapture, pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(huge))
    )
    assert got[0] == grpc.StatusCode.INVALID_ARGUMENT and "2^63" in got[1]
    ok = captures.SubmitCapture(
        pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(sign(key, make_claim(key, 1)))),
        timeout=30,
    )
    assert ok.receipt.leaf_index == 1  # leaf 0: the enrollment

    bad_time = _claim_msg(device_id=key.key_id, captured_at=Timestamp(seconds=2**40))
    signed = SignedClaim(
        PAYLOAD_TYPE_CLAIM, bad_time, key.key_id, sign_payload(key, PAYLOAD_TYPE_CLAIM, bad_time)
    )
    got = code(
        captures.SubmitCapture, pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(signed))
    )
    assert got[0] == grpc.StatusCode.INVALID_ARGUMENT and "out of range" in got[1]

    verification = rpc.VerificationStub(channel)
    query = pb.LookupQuery(
        ref="x",
        sha256=bytes(32),
        soft_bindings=[pb.SoftBinding(algorithm="pdq", hash=bytes(32), quality=200)],
    )
    got = code(verification.Lookup, pb.LookupRequest(queries=[query]))
    assert got[0] == grpc.StatusCode.INVALID_ARGUMENT and "soft binding" in got[1]

    log = rpc.LogStub(channel)
    assert (
        code(log.GetEntries, pb.GetEntriesRequest(start=2**63))[0] == grpc.StatusCode.OUT_OF_RANGE
    )
    assert (
        code(log.GetInclusionProof, pb.GetInclusionProofRequest(leaf_index=2**64 - 1))[0]
        == grpc.StatusCode.OUT_OF_RANGE
    )

    raw: grpc.UnaryUnaryMultiCallable[bytes, bytes]
    raw = channel.unary_unary("/provenance.v1.Log/GetEntries")
    got = code(raw, b"\xff\xff\xff\xff")
    assert got[0] == grpc.StatusCode.INVALID_ARGUMENT and "malformed request" in got[1]
    upload: grpc.StreamUnaryMultiCallable[bytes, bytes]
    upload = channel.stream_unary("/provenance.v1.Verification/VerifyFile")
    got = code(upload, iter([b"\x0a\x03\x0a\x01\xff"]))  # header.filename with bad UTF-8
    assert got[0] == grpc.StatusCode.INVALID_ARGUMENT and "malformed request" in got[1]

    registry = rpc.DeviceRegistryStub(channel)
    future = wire.ts_to_pb(datetime.now(UTC) + timedelta(days=365))
    revoke = pb.RevokeRequest(device_id=key.key_id, reason="lost", effective_at=future)
    got = code(registry.Revoke, revoke, metadata=auth)
    assert got[0] == grpc.StatusCode.INVALID_ARGUMENT and "in the future" in got[1]
    far = pb.RevokeRequest(
        device_id=key.key_id, reason="lost", effective_at=Timestamp(seconds=2**40)
    )
    assert code(registry.Revoke, far, metadata=auth)[0] == grpc.StatusCode.INVALID_ARGUMENT
    # the server is still healthy and the device unrevoked
    assert not registry.GetDevice(pb.GetDeviceRequest(device_id=key.key_id), timeout=30).revoked
    channel.close()


# ------------------------------------------------------------ restored (rolled-back) database


def _restore(db: Path, backup: Path) -> None:
    import shutil

    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, db)


def _backup_after_one_then_log_another(
    tmp_path: Path,
) -> tuple[ServiceConfig, DeviceKey, SignedClaim, Receipt]:
    """A log of 1 claim backed up to backup.db, then a 2nd claim logged (leaf 2): returns
    the config, the device key, the 2nd signed claim and its receipt."""
    import shutil

    cfg = ServiceConfig(tmp_path / "prov.db", tmp_path / "log.key")
    s = ProvenanceService(cfg)
    key = enroll(s)
    s.submit(sign(key, make_claim(key, 1)))
    s.close()
    shutil.copyfile(cfg.db, tmp_path / "backup.db")
    s = ProvenanceService(cfg)
    second = sign(key, make_claim(key, 2))
    receipt = s.submit(second).receipt
    s.close()
    assert receipt.leaf_index == 2  # leaf 0: the enrollment
    return cfg, key, second, receipt


def _paths(cfg: ServiceConfig) -> tuple[Path, Path]:
    """The database file and log key of `_backup_after_one_then_log_another`'s config."""
    assert isinstance(cfg.db, Path) and cfg.log_key is not None
    return cfg.db, cfg.log_key


def test_restored_older_database_is_detected(tmp_path: Path) -> None:
    """An operator restores yesterday's database: the server refuses to start (it
    remembers the newest checkpoint it signed beside the log key), and once the operator
    accepts the loss, a capture holding a now-lost receipt reads as a log rollback, not
    as "run `prov device sync`"."""
    from provenance.core.errors import LogIntegrityError
    from provenance.core.verify import FileFacts
    from provenance.server.rollback import memo_path

    cfg, _, lost, receipt = _backup_after_one_then_log_another(tmp_path)
    db, key_path = _paths(cfg)
    _restore(db, tmp_path / "backup.db")
    with pytest.raises(LogIntegrityError, match="restored from an older backup") as e:
        ProvenanceService(cfg)
    assert str(memo_path(key_path)) in str(e.value)

    memo_path(key_path).rename(tmp_path / "accepted-loss.checkpoint")  # the operator decides
    s = ProvenanceService(cfg)
    try:
        facts = FileFacts(sha256=(2).to_bytes(32, "big"), size=10, media_type="image/jpeg")
        report = s.verify(facts, lost, sidecar_receipt=receipt)
        assert report.status.value == "UNSIGNED"
        assert report.reasons[0].startswith("LOG ROLLBACK")
        assert "past the log's current size 2" in report.reasons[0]
        assert not any("submit it with `prov device sync`" in r for r in report.reasons)
        assert report.evidence.claim is not None and report.evidence.claim.receipt_verified
        # without the receipt the old advice stands (nothing proves it was ever logged)
        plain = s.verify(facts, lost)
        assert any("prov device sync" in r for r in plain.reasons)
    finally:
        s.close()


def test_rolled_back_claim_the_log_now_refuses_gets_only_the_rollback_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim an older server logged (and signed a receipt for) under a looser limit, lost
    by a rollback, and refused by today's log: the verdict's reasons give the rollback
    alone. Before, they also kept "the log refuses it ... sign the file again", which
    contradicts "tell the log's operator" (only the plain "run `prov device sync`" reason
    was replaced)."""
    import shutil

    from provenance.core import registry
    from provenance.core.verify import FileFacts
    from provenance.server.rollback import memo_path

    cfg = ServiceConfig(tmp_path / "prov.db", tmp_path / "log.key")
    db, key_path = _paths(cfg)
    s = ProvenanceService(cfg)
    key = enroll(s)
    s.close()
    shutil.copyfile(db, tmp_path / "backup.db")
    # an older server, whose metadata limit was twice today's, logs a claim over today's
    big = {"note": "x" * (MAX_METADATA_BYTES + 100)}
    lost = sign(key, make_claim(key, 1, metadata=big))
    with monkeypatch.context() as older:
        older.setattr(registry, "MAX_METADATA_BYTES", 2 * MAX_METADATA_BYTES)  # registry's copy
        s = ProvenanceService(cfg)
        receipt = s.submit(lost).receipt
        s.close()
    _restore(db, tmp_path / "backup.db")
    memo_path(key_path).unlink()  # the operator accepts the loss
    s = ProvenanceService(cfg)
    try:
        facts = FileFacts(sha256=(1).to_bytes(32, "big"), size=10, media_type="image/jpeg")
        plain = s.verify(facts, lost)  # without the receipt: the log refuses it today
        assert any("the log refuses it" in r for r in plain.reasons), plain.reasons
        report = s.verify(facts, lost, sidecar_receipt=receipt)
    finally:
        s.close()
    assert report.status.value == "UNSIGNED"
    assert report.reasons[0].startswith("LOG ROLLBACK"), report.reasons
    assert len(report.reasons) == 1, report.reasons


def test_restored_database_that_grew_again_is_a_fork(tmp_path: Path) -> None:
    import shutil

    from provenance.core.errors import LogIntegrityError
    from provenance.server.rollback import memo_path

    cfg, key, _, _ = _backup_after_one_then_log_another(tmp_path)
    db, key_path = _paths(cfg)
    shutil.copyfile(memo_path(key_path), tmp_path / "size2.checkpoint")
    _restore(db, tmp_path / "backup.db")
    memo_path(key_path).unlink()
    s = ProvenanceService(cfg)  # no memory: starts, and other claims fill leaves 2 and 3
    s.submit(sign(key, make_claim(key, 3)))
    s.submit(sign(key, make_claim(key, 4)))
    s.close()
    shutil.copyfile(tmp_path / "size2.checkpoint", memo_path(key_path))
    with pytest.raises(LogIntegrityError, match="a fork"):
        ProvenanceService(cfg)


def _lost_capture_on_the_wire(
    tmp_path: Path,
) -> tuple[Path, Path, DeviceKey, SignedClaim, Receipt]:
    """A `prov serve` database of tmp_path that logged a claim of a photo (its sidecar's
    receipt kept), then was restored from a backup taken before, which `prov serve`
    refuses until the operator accepts the loss (its checkpoint memory moved away, done
    here): the database, the photo, its device key, the lost claim and its receipt."""
    import shutil

    from clients.api import ProvenanceClient
    from clients.device import measure
    from provenance.server.rollback import memo_path
    from tests.conftest import ADMIN_TOKEN, SAMPLES, enroll_key, start_server

    db = tmp_path / "prov.db"
    srv = start_server(db)
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            key = enroll_key(c)
            c.submit(sign(key, make_claim(key, 1)))
    finally:
        srv.stop()
    shutil.copyfile(db, tmp_path / "backup.db")
    photo = tmp_path / "photo.jpg"
    shutil.copyfile(SAMPLES / "rocket.jpg", photo)
    fields, _ = measure(photo)
    lost = sign(key, Claim(key.key_id, 2, datetime.now(UTC), **fields))
    srv = start_server(db)
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            receipt, _ = c.submit(lost)
    finally:
        srv.stop()
    _restore(db, tmp_path / "backup.db")
    with pytest.raises(RuntimeError, match="restored from an older backup"):
        start_server(db)
    memo_path(Path(f"{db}.logkey.pem")).unlink()  # the operator accepts the loss
    return db, photo, key, lost, receipt


def test_restored_database_prov_serve_refuses_to_start(tmp_path: Path) -> None:
    """On the wire: `prov serve` refuses a restored database; after the operator accepts
    the loss, `VerifyFile` with the sidecar's receipt reports the rollback."""
    from clients.api import ProvenanceClient
    from tests.conftest import start_server

    db, photo, _, lost, receipt = _lost_capture_on_the_wire(tmp_path)
    srv = start_server(db)
    try:
        with ProvenanceClient(srv.address) as c:
            report = c.verify_file(photo, lost, detect=False, receipt=receipt)
    finally:
        srv.stop()
    assert report.status.value == "UNSIGNED"
    assert report.reasons[0].startswith("LOG ROLLBACK"), report.reasons


def test_restored_database_web_upload_reports_the_rollback(tmp_path: Path) -> None:
    """The web page and API (`prov web`) relay the sidecar's receipt too: a capture whose
    FILE.prov holds a receipt for a claim a restored log lost reads as a log rollback there
    as on `prov verify --sidecar` (one pipeline, one verdict). Before, the web sent the
    sidecar's claim, key and chunk hashes but not its receipt, so the page told the editor
    to run `prov device sync`, which cannot help, and hid the loss of an accepted capture."""
    import httpx

    from provenance.wire.sidecar import Sidecar, encode_sidecar
    from tests.conftest import start_server, start_web

    db, photo, key, lost, receipt = _lost_capture_on_the_wire(tmp_path)
    sidecar = encode_sidecar(Sidecar(lost, key.public_key, receipt))
    srv = start_server(db)
    try:
        web = start_web(srv.address)
        try:
            with httpx.Client(base_url=web.address, timeout=60) as http:
                r = http.post(
                    "/api/v1/verify?detect=false",
                    files={
                        "sidecar": ("photo.jpg.prov", sidecar),
                        "file": ("photo.jpg", photo.read_bytes()),
                    },
                )
                page = http.post(
                    "/verify?detect=false",
                    files={
                        "sidecar": ("photo.jpg.prov", sidecar),
                        "file": ("photo.jpg", photo.read_bytes()),
                    },
                )
        finally:
            web.stop()
    finally:
        srv.stop()
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["status"] == "UNSIGNED"
    assert report["reasons"][0].startswith("LOG ROLLBACK"), report["reasons"]
    assert not any("prov device sync`)" in x for x in report["reasons"]), report["reasons"]
    assert page.status_code == 200
    assert "LOG ROLLBACK" in page.text
