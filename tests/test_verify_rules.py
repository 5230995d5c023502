"""The verdict rules of provenance.core.verify.decide, on real keys and real hashes, one
branch each (the server-level tests cover the common paths end to end)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from provenance.core.binding import PerceptualHash
from provenance.core.claims import Claim, Device, HardBinding, Receipt, SignedClaim, Verdict
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, sign_payload
from provenance.core.keys import DeviceKey
from provenance.core.verify import FileFacts, LoggedClaim, decide, with_c2pa
from provenance.wire import convert as wire
from tests.inproc import device_record

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SHA = hashlib.sha256(b"the capture").digest()
PDQ = PerceptualHash(
    "pdq", bytes.fromhex("f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"), 100
)


def _flip(h: PerceptualHash, bits: int) -> PerceptualHash:
    b = bytearray(h.hash)
    for i in range(bits):
        b[i // 8] ^= 1 << (i % 8)
    return PerceptualHash("pdq", bytes(b), h.quality)


@pytest.fixture
def key() -> DeviceKey:
    return DeviceKey.generate()


def _signed(key: DeviceKey, sha: bytes = SHA) -> tuple[SignedClaim, Claim]:
    claim = Claim(key.key_id, 1, NOW, "image/jpeg", 11, HardBinding(sha), (PDQ,), 4, 3)
    data = wire.encode_claim(claim)
    return SignedClaim(
        PAYLOAD_TYPE_CLAIM, data, key.key_id, sign_payload(key, PAYLOAD_TYPE_CLAIM, data)
    ), claim


def _device(key: DeviceKey, revoked_at: datetime | None = None) -> Device:
    return device_record(key, NOW, revoked_at)


def _logged(key: DeviceKey, revoked_at: datetime | None = None) -> LoggedClaim:
    signed, claim = _signed(key)
    receipt = Receipt(7, NOW, "cp", (), b"entry")
    return LoggedClaim(signed, claim, receipt, _device(key, revoked_at), True, True)


def test_exact_match_is_signed_original(key: DeviceKey) -> None:
    r = decide(FileFacts(SHA, 11, "image/jpeg", (PDQ,)), NOW, exact=[_logged(key)])
    assert r.status is Verdict.SIGNED_ORIGINAL
    assert r.evidence.claim is not None and r.evidence.claim.receipt_verified


def test_an_index_is_never_trusted_alone(key: DeviceKey) -> None:
    other = FileFacts(hashlib.sha256(b"another file").digest(), 11, "image/jpeg")
    r = decide(other, NOW, exact=[_logged(key)])  # found by an edited index column
    assert r.status is Verdict.UNSIGNED


def test_exact_bytes_win_over_a_bad_sidecar(key: DeviceKey) -> None:
    signed, claim = _signed(key)
    forged = SignedClaim(signed.payload_type, signed.claim_bytes, signed.key_id, bytes(64))
    facts = FileFacts(SHA, 11, "image/jpeg", (PDQ,))
    r = decide(
        facts,
        NOW,
        exact=[_logged(key)],
        sidecar=forged,
        sidecar_claim=claim,
        sidecar_device=_device(key),
    )
    assert r.status is Verdict.SIGNED_ORIGINAL
    queued, queued_claim = _signed(key, sha=hashlib.sha256(b"a queued capture").digest())
    r = decide(
        facts,
        NOW,
        exact=[_logged(key)],
        sidecar=queued,
        sidecar_claim=queued_claim,
        sidecar_device=_device(key),
    )
    assert r.status is Verdict.SIGNED_ORIGINAL
    assert "another claim" in r.reasons[-1]


def test_revocation_before_logging_and_after(key: DeviceKey) -> None:
    before = decide(
        FileFacts(SHA, 11, "image/jpeg"), NOW, exact=[_logged(key, NOW - timedelta(hours=1))]
    )
    assert before.status is Verdict.REVOKED_KEY
    after = decide(
        FileFacts(SHA, 11, "image/jpeg"), NOW, exact=[_logged(key, NOW + timedelta(hours=1))]
    )
    assert after.status is Verdict.SIGNED_ORIGINAL
    assert any("after this claim was logged" in x for x in after.reasons)


def test_a_copy_of_a_revoked_capture_is_not_derived(key: DeviceKey) -> None:
    """A near copy of a capture logged after its key's revocation (the capture itself
    reads REVOKED_KEY) reads REVOKED_KEY too, with the match as evidence: a re-encode must
    not launder a stolen key's capture into a DERIVED copy (exit 10 instead of 12). A
    revocation after the capture was logged leaves the copy DERIVED, with a note; and a
    capture the revocation does not cover is preferred even when farther."""
    facts = FileFacts(hashlib.sha256(b"a copy").digest(), 9, "image/jpeg", (_flip(PDQ, 3),))
    stolen = _logged(key, NOW - timedelta(hours=1))
    r = decide(facts, NOW, near=[stolen])
    assert r.status is Verdict.REVOKED_KEY
    assert r.evidence.pdq_distance == 3 and r.evidence.claim is not None
    assert "before that capture was logged" in r.reasons[0]
    later = decide(facts, NOW, near=[_logged(key, NOW + timedelta(hours=1))])
    assert later.status is Verdict.DERIVED
    assert any(x.startswith("note: for that capture, the key was revoked") for x in later.reasons)
    other = DeviceKey.generate()
    claim = Claim(other.key_id, 1, NOW, "image/jpeg", 11, HardBinding(SHA), (_flip(PDQ, 13),), 4, 3)
    data = wire.encode_claim(claim)
    signed = SignedClaim(
        PAYLOAD_TYPE_CLAIM, data, other.key_id, sign_payload(other, PAYLOAD_TYPE_CLAIM, data)
    )
    far = LoggedClaim(
        signed, claim, Receipt(8, NOW, "cp", (), b"entry"), _device(other), True, True
    )
    both = decide(facts, NOW, near=[stolen, far])
    assert both.status is Verdict.DERIVED and both.evidence.pdq_distance == 10
    assert "log index 8" in both.reasons[0]


@pytest.mark.parametrize(
    ("bits", "status"), [(0, Verdict.DERIVED), (31, Verdict.DERIVED), (32, Verdict.UNSIGNED)]
)
def test_pdq_threshold_is_inclusive_31(key: DeviceKey, bits: int, status: Verdict) -> None:
    facts = FileFacts(hashlib.sha256(b"other").digest(), 9, "image/jpeg", (_flip(PDQ, bits),))
    r = decide(facts, NOW, near=[_logged(key)])
    assert r.status is status
    if status is Verdict.DERIVED:
        assert r.evidence.pdq_distance == bits


def test_low_quality_hashes_never_match(key: DeviceKey) -> None:
    weak = PerceptualHash("pdq", PDQ.hash, 49)
    r = decide(FileFacts(b"\x01" * 32, 9, "image/png", (weak,)), NOW, near=[_logged(key)])
    assert r.status is Verdict.UNSIGNED


def test_sidecar_branches(key: DeviceKey) -> None:
    signed, claim = _signed(key)
    facts = FileFacts(SHA, 11, "image/jpeg", (PDQ,))
    # valid, matching, but never logged: nothing proves when it was made
    r = decide(facts, NOW, sidecar=signed, sidecar_claim=claim, sidecar_device=_device(key))
    assert r.status is Verdict.UNSIGNED and "not in the log" in r.reasons[0]
    # the same, by a revoked key
    r = decide(
        facts,
        NOW,
        sidecar=signed,
        sidecar_claim=claim,
        sidecar_device=_device(key, NOW - timedelta(minutes=1)),
    )
    assert r.status is Verdict.REVOKED_KEY
    # a forged signature
    forged = SignedClaim(signed.payload_type, signed.claim_bytes, signed.key_id, bytes(64))
    r = decide(facts, NOW, sidecar=forged, sidecar_claim=claim, sidecar_device=_device(key))
    assert r.status is Verdict.TAMPERED and "signature" in r.reasons[0]
    # bytes edited: the pixels stay close, and the report says so
    edited = FileFacts(b"\x02" * 32, 11, "image/jpeg", (_flip(PDQ, 4),))
    r = decide(
        edited,
        NOW,
        sidecar=signed,
        sidecar_claim=claim,
        sidecar_device=_device(key),
        sidecar_logged=_logged(key),
    )
    assert r.status is Verdict.TAMPERED and r.evidence.pdq_distance == 4
    # an unknown key with matching bytes proves nothing
    r = decide(facts, NOW, sidecar=signed, sidecar_claim=claim, sidecar_device=None)
    assert r.status is Verdict.UNSIGNED and "key this log does not know" in r.reasons[-1]
    # and with bytes that differ it is still not evidence of tampering (the log decides)
    r = decide(edited, NOW, sidecar=signed, sidecar_claim=claim, sidecar_device=None)
    assert r.status is Verdict.UNSIGNED and "key this log does not know" in r.reasons[-1]


def test_manifest_stripped_hash_binds(key: DeviceKey) -> None:
    signed, claim = _signed(key)
    facts = FileFacts(b"\x03" * 32, 99, "image/jpeg", (PDQ,), content_sha256=SHA)
    r = decide(
        facts,
        NOW,
        sidecar=signed,
        sidecar_claim=claim,
        sidecar_device=_device(key),
        sidecar_logged=_logged(key),
    )
    assert r.status is Verdict.SIGNED_ORIGINAL


def test_c2pa_block_never_changes_the_status(key: DeviceKey) -> None:
    r = decide(FileFacts(b"\x04" * 32, 5, "image/jpeg"), NOW)
    block = {"present": True, "validation_state": "Trusted", "signer": "Camera Co"}
    out = with_c2pa(r, block)
    assert out.status is Verdict.UNSIGNED and out.c2pa == block
    assert "Content Credentials" in out.reasons[-1]


def test_a_match_without_the_manifest_says_so_not_exact_bytes(key: DeviceKey) -> None:
    """A `prov sign --c2pa` export matches its claim by the bytes with the manifest store
    removed: the reason says that, not "exact bytes", whose hash the report shows as
    another one (before, a reader saw two different SHA-256s said to match exactly)."""
    exported = FileFacts(b"\x03" * 32, 99, "image/jpeg", (PDQ,), content_sha256=SHA)
    r = decide(exported, NOW, exact=[_logged(key)])
    assert r.status is Verdict.SIGNED_ORIGINAL
    assert r.reasons[0].startswith(
        "the file's bytes without its C2PA manifest (SHA-256) match a validly signed claim"
    ), r.reasons
    # the file as signed still reads "exact bytes"
    r = decide(FileFacts(SHA, 11, "image/jpeg", (PDQ,)), NOW, exact=[_logged(key)])
    assert r.reasons[0].startswith("exact bytes (SHA-256) match a validly signed claim")
    # and a revoked key's export says the same of its match
    r = decide(exported, NOW, exact=[_logged(key, revoked_at=NOW - timedelta(days=1))])
    assert r.status is Verdict.REVOKED_KEY
    assert r.reasons[0].startswith(
        "the file's bytes without its C2PA manifest match a claim at log index 7, but the key"
    ), r.reasons
