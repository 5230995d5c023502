"""Every rule of DESIGN.md on the service side, in-process (tests/inproc.py): claim shape,
the per-device chain, enrollment, revocation, replays, receipts and proofs, durability,
and the verdict on real files. Each test runs in well under a second."""

from __future__ import annotations

import hashlib
import io
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image

from provenance.core import merkle
from provenance.core.binding import PerceptualHash
from provenance.core.claims import MAX_CLAIM_SOFT_BINDINGS, MAX_METADATA_BYTES, HardBinding, Verdict
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.errors import (
    ClaimError,
    EnrollmentError,
    KeyMaterialError,
    LogError,
    LogIntegrityError,
    RevokedKeyError,
    SequenceError,
    SignatureError,
    UnknownDeviceError,
)
from provenance.core.keys import DeviceKey
from provenance.core.verify import FileFacts
from provenance.log.checkpoint import open_checkpoint
from provenance.log.receipt import verify_receipt
from provenance.wire import convert as wire
from tests.conftest import SAMPLES
from tests.inproc import Device, InProc, make_claim, open_inproc, sign

PHOTO = SAMPLES / "grace_hopper.jpg"


@pytest.fixture(params=["sqlite", "memory"])
def inproc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[InProc]:
    """The service over each store driver that keeps no server (every rule holds for both)."""
    h = open_inproc(tmp_path, store=request.param)
    yield h
    h.service.close()


@pytest.fixture
def sqlite_inproc(tmp_path: Path) -> Iterator[InProc]:
    """The service over a SQLite file, for restarts and edits behind its back."""
    h = open_inproc(tmp_path)
    yield h
    h.service.close()


def _facts(data: bytes, soft: tuple[PerceptualHash, ...] = ()) -> FileFacts:
    return FileFacts(hashlib.sha256(data).digest(), len(data), "image/jpeg", soft)


def _file_facts(path: Path) -> FileFacts:
    from provenance.media.assets import AssetLimits, inspect_image

    data = path.read_bytes()
    return inspect_image(hashlib.sha256(data).digest(), data, AssetLimits()).facts


# ---------------------------------------------------------------- the claim's shape


def test_claim_shape_payload_type_is_the_claim_type(inproc: InProc) -> None:
    dev = inproc.enroll()
    claim = make_claim(dev.key, 1)
    with pytest.raises(ClaimError, match="payload type"):
        inproc.submit(sign(dev.key, claim, PAYLOAD_TYPE_ENROLL))


def test_claim_shape_version(inproc: InProc) -> None:
    dev = inproc.enroll()
    with pytest.raises(ClaimError, match="version 2"):
        inproc.submit(sign(dev.key, make_claim(dev.key, 1, version=2)))


def test_claim_shape_device_id_is_the_key_id(inproc: InProc) -> None:
    dev, other = inproc.enroll(), inproc.enroll()
    claim = make_claim(dev.key, 1, device_id=other.device_id)  # signed by dev, names other
    with pytest.raises(ClaimError, match="device id"):
        inproc.submit(sign(dev.key, claim))


def test_device_id_is_sha256_of_the_public_key(inproc: InProc) -> None:
    dev = inproc.enroll()
    got = inproc.service.get_device(dev.device_id)
    assert got.device_id == hashlib.sha256(dev.key.public_key).digest()


@pytest.mark.parametrize("n", [0, 31, 33])
def test_claim_shape_hard_binding_is_32_bytes(inproc: InProc, n: int) -> None:
    dev = inproc.enroll()
    claim = make_claim(dev.key, 1, hard_binding=HardBinding(b"\x01" * n))
    with pytest.raises(ClaimError, match="32-byte"):
        inproc.submit(sign(dev.key, claim))


def test_claim_shape_sequence_starts_at_1(inproc: InProc) -> None:
    dev = inproc.enroll()
    with pytest.raises(ClaimError, match="start at 1"):
        inproc.submit(sign(dev.key, make_claim(dev.key, 0)))


def test_claim_shape_metadata_size_limit(inproc: InProc) -> None:
    dev = inproc.enroll()
    at_limit = {"k": "v" * (MAX_METADATA_BYTES - 1)}
    assert not inproc.submit(sign(dev.key, make_claim(dev.key, 1, metadata=at_limit))).duplicate
    over = {"k": "v" * MAX_METADATA_BYTES}
    with pytest.raises(ClaimError, match=f"limit is {MAX_METADATA_BYTES}"):
        inproc.submit(sign(dev.key, make_claim(dev.key, 2, metadata=over)))
    # multi-byte characters count in UTF-8 bytes, keys too
    wide = {"é" * 1000: "€" * 700}  # 2,000 + 2,100 bytes
    with pytest.raises(ClaimError, match="metadata is 4100 bytes"):
        inproc.submit(sign(dev.key, make_claim(dev.key, 3, metadata=wide)))


def test_claim_shape_soft_binding_count(inproc: InProc) -> None:
    dev = inproc.enroll()
    h = PerceptualHash("pdq", b"\x00" * 32, 100)
    video = {"media_type": "video/mp4", "duration_seconds": 1.0}  # an image has one hash
    ok = make_claim(dev.key, 1, soft_bindings=(h,) * MAX_CLAIM_SOFT_BINDINGS, **video)
    inproc.submit(sign(dev.key, ok))
    over = make_claim(dev.key, 2, soft_bindings=(h,) * (MAX_CLAIM_SOFT_BINDINGS + 1), **video)
    with pytest.raises(ClaimError, match=f"limit is {MAX_CLAIM_SOFT_BINDINGS}"):
        inproc.submit(sign(dev.key, over))


def test_a_refused_claim_changes_nothing(inproc: InProc) -> None:
    dev = inproc.enroll()
    with pytest.raises(ClaimError):
        inproc.submit(sign(dev.key, make_claim(dev.key, 1, version=9)))
    assert inproc.service.store.tree_size() == 1  # the enrollment alone
    assert inproc.service.get_device(dev.device_id).last_sequence == 0


# ---------------------------------------------------------------- signatures and keys


def test_a_claim_signed_by_another_key_is_refused(inproc: InProc) -> None:
    dev = inproc.enroll()
    thief = DeviceKey.generate()
    claim = make_claim(dev.key, 1)
    data = wire.encode_claim(claim)
    forged = replace(sign(dev.key, claim), signature=sign_payload(thief, PAYLOAD_TYPE_CLAIM, data))
    with pytest.raises(SignatureError):
        inproc.submit(forged)


def test_a_signature_is_bound_to_its_payload_type(inproc: InProc) -> None:
    """PAE domain separation: the same bytes signed as an enrollment proof are no claim."""
    dev = inproc.enroll()
    data = wire.encode_claim(make_claim(dev.key, 1))
    as_enroll = sign_payload(dev.key, PAYLOAD_TYPE_ENROLL, data)
    good = sign(dev.key, make_claim(dev.key, 1))
    with pytest.raises(SignatureError):
        inproc.submit(replace(good, claim_bytes=data, signature=as_enroll))


def test_an_unknown_device_is_refused(inproc: InProc) -> None:
    key = DeviceKey.generate()
    with pytest.raises(UnknownDeviceError):
        inproc.submit(sign(key, make_claim(key, 1)))


def test_a_small_order_key_cannot_enroll(inproc: InProc) -> None:
    token, _ = inproc.service.create_enrollment_token()
    identity = bytes([1]) + bytes(31)  # the neutral point: order 1
    with pytest.raises(KeyMaterialError):
        inproc.service.enroll(token, identity, bytes(64))


# ---------------------------------------------------------------- enrollment tokens


def test_an_enrollment_token_is_one_time(inproc: InProc) -> None:
    token, _ = inproc.service.create_enrollment_token()
    a, b = DeviceKey.generate(), DeviceKey.generate()
    inproc.service.enroll(token, a.public_key, sign_payload(a, PAYLOAD_TYPE_ENROLL, token.encode()))
    with pytest.raises(EnrollmentError):
        inproc.service.enroll(
            token, b.public_key, sign_payload(b, PAYLOAD_TYPE_ENROLL, token.encode())
        )


def test_an_enrollment_token_expires(inproc: InProc) -> None:
    token, expires = inproc.service.create_enrollment_token(ttl=timedelta(minutes=5))
    inproc.clock.now = expires + timedelta(seconds=1)
    k = DeviceKey.generate()
    with pytest.raises(EnrollmentError):
        inproc.service.enroll(
            token, k.public_key, sign_payload(k, PAYLOAD_TYPE_ENROLL, token.encode())
        )


def test_enrollment_needs_proof_of_possession(inproc: InProc) -> None:
    token, _ = inproc.service.create_enrollment_token()
    k, other = DeviceKey.generate(), DeviceKey.generate()
    with pytest.raises(EnrollmentError, match="proof of possession"):
        inproc.service.enroll(
            token, k.public_key, sign_payload(other, PAYLOAD_TYPE_ENROLL, token.encode())
        )
    # the failed attempt did not spend the token
    inproc.service.enroll(token, k.public_key, sign_payload(k, PAYLOAD_TYPE_ENROLL, token.encode()))


# ---------------------------------------------------------------- the per-device chain


def _chain_linked(inproc: InProc, signed: bytes) -> bool:
    rec = inproc.service.store.leaf_by_claim_hash(signed)
    assert rec is not None
    return rec.chain_linked


def test_chain_linked_when_each_claim_names_the_previous(inproc: InProc) -> None:
    dev = inproc.enroll()
    a, b = dev.next_claim(), dev.next_claim()
    inproc.submit(a)
    inproc.submit(b)
    assert _chain_linked(inproc, a.claim_hash) and _chain_linked(inproc, b.claim_hash)
    report = inproc.service.verify(_facts(b"x"), sidecar=None)
    assert report.status is Verdict.UNSIGNED  # sanity: unrelated bytes


def test_chain_linked_is_false_after_a_sequence_gap(inproc: InProc) -> None:
    dev = inproc.enroll()
    inproc.submit(dev.next_claim())
    dev.seq += 1  # sequence 2 never reaches the log
    gap = dev.next_claim()
    assert not inproc.submit(gap).duplicate  # accepted: a gap is visible, not refused
    assert _chain_linked(inproc, gap.claim_hash) is False


def test_chain_linked_is_false_when_prev_hash_names_another_claim(inproc: InProc) -> None:
    dev = inproc.enroll()
    inproc.submit(dev.next_claim())
    dev.last = b"\x07" * 32
    wrong = dev.next_claim()
    inproc.submit(wrong)
    assert _chain_linked(inproc, wrong.claim_hash) is False


def test_chain_linked_reaches_the_verdict(inproc: InProc, tmp_path: Path) -> None:
    dev = inproc.enroll()
    inproc.submit(dev.next_claim())
    dev.seq += 3
    signed, _ = inproc.log_file(dev, PHOTO)
    report = inproc.service.verify(_file_facts(PHOTO))
    assert report.status is Verdict.SIGNED_ORIGINAL
    assert report.evidence.claim is not None and report.evidence.claim.chain_linked is False


@pytest.mark.parametrize("seq", [1, 2])
def test_a_sequence_must_advance(inproc: InProc, seq: int) -> None:
    dev = inproc.enroll()
    inproc.submit(dev.next_claim())
    inproc.submit(dev.next_claim())
    with pytest.raises(SequenceError, match="does not advance"):
        inproc.submit(sign(dev.key, make_claim(dev.key, seq)))


# ---------------------------------------------------------------- replays


def test_a_replay_returns_the_original_receipt(inproc: InProc) -> None:
    dev = inproc.enroll()
    signed = dev.next_claim()
    first = inproc.submit(signed)
    inproc.clock.advance(hours=1)
    again = inproc.submit(signed)
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.receipt == first.receipt
    assert inproc.service.store.tree_size() == 2  # the enrollment and the claim, once


def test_a_replay_after_revocation_still_returns_its_receipt(inproc: InProc) -> None:
    dev = inproc.enroll()
    signed = dev.next_claim()
    first = inproc.submit(signed)
    inproc.service.revoke(dev.device_id, "lost", None)
    assert inproc.submit(signed).receipt == first.receipt


# ---------------------------------------------------------------- revocation


def test_revoking_twice_keeps_the_earlier_time(inproc: InProc) -> None:
    dev = inproc.enroll()
    t1 = inproc.clock.now - timedelta(hours=2)
    first = inproc.service.revoke(dev.device_id, "lost", t1)
    later = inproc.service.revoke(dev.device_id, "stolen", t1 + timedelta(hours=1))
    assert first.revoked_at == t1 and later.revoked_at == t1
    assert later.revocation_reason == "lost"  # the reason stays with the time it came with
    earlier = inproc.service.revoke(dev.device_id, "found out", t1 - timedelta(days=1))
    assert earlier.revoked_at == t1 - timedelta(days=1)
    assert inproc.service.get_device(dev.device_id).revoked_at == t1 - timedelta(days=1)
    assert inproc.service.get_device(dev.device_id).revocation_reason == "found out"


def test_revoking_an_unknown_device_fails(inproc: InProc) -> None:
    with pytest.raises(UnknownDeviceError):
        inproc.service.revoke(b"\x01" * 32, "lost", None)


def test_a_claim_after_revocation_is_refused(inproc: InProc) -> None:
    dev = inproc.enroll()
    inproc.service.revoke(dev.device_id, "lost", None)
    with pytest.raises(RevokedKeyError, match="lost"):
        inproc.submit(dev.next_claim())


def test_a_future_revocation_is_refused_and_changes_nothing(inproc: InProc) -> None:
    dev = inproc.enroll()
    with pytest.raises(ClaimError, match="in the future"):
        inproc.service.revoke(dev.device_id, "retiring", inproc.clock.now + timedelta(days=1))
    assert inproc.service.get_device(dev.device_id).revoked_at is None
    inproc.submit(dev.next_claim())


def test_earlier_claims_are_reported_with_the_revocation(inproc: InProc) -> None:
    dev = inproc.enroll()
    inproc.log_file(dev, PHOTO)
    inproc.clock.advance(hours=1)
    inproc.service.revoke(dev.device_id, "lost", None)
    report = inproc.service.verify(_file_facts(PHOTO))
    assert report.status is Verdict.SIGNED_ORIGINAL
    assert "revoked" in report.reasons[-1] and "after this claim was logged" in report.reasons[-1]


def test_a_revocation_backdated_before_logging_gives_revoked_key(inproc: InProc) -> None:
    dev = inproc.enroll()
    inproc.log_file(dev, PHOTO)
    inproc.service.revoke(dev.device_id, "key leaked", inproc.clock.now - timedelta(days=1))
    report = inproc.service.verify(_file_facts(PHOTO))
    assert report.status is Verdict.REVOKED_KEY and "key leaked" in report.reasons[0]


# ---------------------------------------------------------------- receipts, proofs, durability


def test_a_receipt_verifies_offline_with_the_log_key(inproc: InProc) -> None:
    dev = inproc.enroll()
    claims = [dev.next_claim() for _ in range(5)]
    receipts = [inproc.submit(c).receipt for c in claims]
    for c, r in zip(claims, receipts, strict=True):
        cp = verify_receipt(r, c, inproc.service.verifier)
        assert cp.size >= r.leaf_index + 1
    assert [r.leaf_index for r in receipts] == list(range(1, 6))  # leaf 0: the enrollment
    other = dev.next_claim()
    with pytest.raises(LogError):
        verify_receipt(receipts[0], other, inproc.service.verifier)


def test_consistency_between_any_two_checkpoints(inproc: InProc) -> None:
    dev = inproc.enroll()
    roots = {}
    for _ in range(6):
        inproc.submit(dev.next_claim())
        cp = open_checkpoint(inproc.service.latest_checkpoint(), inproc.service.verifier)
        roots[cp.size] = cp.root_hash
    for a in range(2, 8):  # leaf 0 is the enrollment
        for b in range(a, 8):
            first, second, proof = inproc.service.consistency_proof(a, b)
            merkle.verify_consistency(first, second, proof, roots[a], roots[b])
    with pytest.raises(LogError):
        inproc.service.consistency_proof(3, 8)
    with pytest.raises(LogError):
        inproc.service.consistency_proof(5, 4)


def test_inclusion_proofs_by_index_and_by_hash(inproc: InProc) -> None:
    dev = inproc.enroll()
    for _ in range(3):
        inproc.submit(dev.next_claim())
    cp = open_checkpoint(inproc.service.latest_checkpoint(), inproc.service.verifier)
    idx, size, proof, lh = inproc.service.inclusion_proof(0, index=1)
    merkle.verify_inclusion(idx, size, lh, proof, cp.root_hash)
    assert inproc.service.inclusion_proof(0, leaf_hash=lh)[0] == 1
    with pytest.raises(LogError):
        inproc.service.inclusion_proof(0, index=4)  # the enrollment and 3 claims
    with pytest.raises(LogError):
        inproc.service.inclusion_proof(1, index=2)


def test_the_empty_log_has_no_checkpoint(inproc: InProc) -> None:
    with pytest.raises(LogError, match="empty"):
        inproc.service.latest_checkpoint()


def test_an_acknowledged_claim_survives_a_restart(sqlite_inproc: InProc) -> None:
    dev = sqlite_inproc.enroll()
    signed, res = sqlite_inproc.log_file(dev, PHOTO)
    sqlite_inproc.reopen()  # verify_on_start re-hashes every leaf
    assert sqlite_inproc.service.receipt_for_claim(signed.claim_hash) == res.receipt
    assert sqlite_inproc.service.verify(_file_facts(PHOTO)).status is Verdict.SIGNED_ORIGINAL
    assert sqlite_inproc.service.get_device(dev.device_id).last_sequence == 1


def test_an_edited_database_is_refused_at_start(sqlite_inproc: InProc) -> None:
    dev = sqlite_inproc.enroll()
    sqlite_inproc.submit(dev.next_claim())
    sqlite_inproc.submit(dev.next_claim())
    sqlite_inproc.service.close()
    with sqlite3.connect(sqlite_inproc.db) as c:
        c.execute("UPDATE leaves SET file_sha256=? WHERE idx=0", (b"\x09" * 32,))
    with pytest.raises(LogIntegrityError, match="index columns"):
        sqlite_inproc.reopen()


# ---------------------------------------------------------------- verdicts on real files


def test_a_logged_photo_is_signed_original_and_its_copy_derived(inproc: InProc) -> None:
    dev = inproc.enroll()
    _, res = inproc.log_file(dev, PHOTO)
    report = inproc.service.verify(_file_facts(PHOTO))
    assert report.status is Verdict.SIGNED_ORIGINAL
    ev = report.evidence.claim
    assert ev is not None and ev.receipt_verified and ev.signature_valid and ev.in_log
    assert ev.receipt == res.receipt
    im = Image.open(PHOTO).convert("RGB")
    buf = io.BytesIO()
    im.resize((im.width // 2, im.height // 2)).save(buf, "PNG")
    copy = buf.getvalue()
    from provenance.media.assets import AssetLimits, inspect_image

    facts = inspect_image(hashlib.sha256(copy).digest(), copy, AssetLimits()).facts
    derived = inproc.service.verify(facts)
    assert derived.status is Verdict.DERIVED
    assert derived.evidence.pdq_distance is not None and derived.evidence.pdq_distance <= 31


def test_a_sidecar_of_a_logged_claim_gives_signed_original(inproc: InProc) -> None:
    dev = inproc.enroll()
    signed, _ = inproc.log_file(dev, PHOTO)
    report = inproc.service.verify(_file_facts(PHOTO), signed)
    assert report.status is Verdict.SIGNED_ORIGINAL and report.evidence.sidecar_present


def test_an_unlogged_sidecar_is_unsigned_until_synced(inproc: InProc) -> None:
    dev = inproc.enroll()
    signed = dev.claim_for_file(PHOTO)
    report = inproc.service.verify(_file_facts(PHOTO), signed)
    assert report.status is Verdict.UNSIGNED and "not in the log" in report.reasons[0]
    inproc.submit(signed)
    assert inproc.service.verify(_file_facts(PHOTO), signed).status is Verdict.SIGNED_ORIGINAL


def test_sidecar_from_an_unknown_key_is_not_used_whatever_the_bytes(inproc: InProc) -> None:
    """A sidecar whose key this log has not enrolled is no evidence of tampering: the log
    decides (UNSIGNED here), and the reason names the unknown key, with what the key it
    carries says of its signature."""
    stranger = Device(DeviceKey.generate())
    signed = stranger.claim_for_file(PHOTO)
    other = _facts(b"not the photo")
    report = inproc.service.verify(other, signed)
    assert report.status is Verdict.UNSIGNED
    assert report.evidence.claim is not None and report.evidence.claim.device is None
    assert "a key this log does not know" in report.reasons[-1]
    assert "could not be checked" in report.reasons[-1]
    same = inproc.service.verify(
        _file_facts(PHOTO), signed, sidecar_public_key=stranger.key.public_key
    )
    assert same.status is Verdict.UNSIGNED and same.evidence.hash_match
    assert "verifies under the public key it carries" in same.reasons[-1]


def test_an_edited_file_with_its_sidecar_is_tampered(inproc: InProc) -> None:
    dev = inproc.enroll()
    signed, _ = inproc.log_file(dev, PHOTO)
    data = bytearray(PHOTO.read_bytes())
    data[-10] ^= 0xFF
    report = inproc.service.verify(_facts(bytes(data)), signed)
    assert report.status is Verdict.TAMPERED and not report.evidence.hash_match
