"""The verdict (provenance.core.verify) branch by branch, checking the whole report: status,
the evidence it carries, the time, and the words of the reasons that name what was
found. Pure: real keys, real hashes, no store or server. Written so that mutations of the
verdict logic fail a test (docs/mutants.md); test_verify_rules.py covers the rules' intent.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from provenance.core import keys as keys_module
from provenance.core.binding import PDQ_MATCH_THRESHOLD, PDQ_MIN_QUALITY, PerceptualHash
from provenance.core.claims import Claim, Device, HardBinding, Receipt, SignedClaim, Verdict
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, PAYLOAD_TYPE_ENROLL, pae, sign_payload
from provenance.core.keys import DeviceKey
from provenance.core.verify import (
    EXACT_BOUND_NOTE,
    MAX_OTHER_CLAIMS,
    NO_BYTES_MATCH_REASON,
    NO_MATCH_REASON,
    NO_PERCEPTUAL_HASH,
    UNLOGGED_SIDECAR_REASON,
    ClaimEvidence,
    Evidence,
    FileFacts,
    LoggedClaim,
    VerificationReport,
    best_pdq_distance,
    decide,
    is_unlogged_sidecar_reason,
    signature_ok,
    with_c2pa,
)
from provenance.core.video_binding import hash_chunked
from provenance.wire import convert as wire

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
LOGGED_AT = NOW - timedelta(days=2)
KEY = DeviceKey.from_private_bytes(hashlib.sha256(b"verdict device").digest())
SHA = hashlib.sha256(b"the capture").digest()
OTHER_SHA = hashlib.sha256(b"other bytes").digest()
PDQ = PerceptualHash("pdq", hashlib.sha256(b"pixels").digest(), 100)


def _flip(h: PerceptualHash, bits: int, quality: int | None = None) -> PerceptualHash:
    b = bytearray(h.hash)
    for i in range(bits):
        b[i // 8] ^= 1 << (i % 8)
    return replace(h, hash=bytes(b), quality=h.quality if quality is None else quality)


def _signed(claim: Claim, key: DeviceKey = KEY) -> SignedClaim:
    data = wire.encode_claim(claim)
    return SignedClaim(
        PAYLOAD_TYPE_CLAIM, data, key.key_id, sign_payload(key, PAYLOAD_TYPE_CLAIM, data)
    )


def _claim(sha: bytes = SHA, soft: tuple[PerceptualHash, ...] = (PDQ,), **changes: Any) -> Claim:
    claim = Claim(KEY.key_id, 1, LOGGED_AT, "image/jpeg", 11, HardBinding(sha), soft, 4, 3)
    return replace(claim, **changes)


def _device(revoked_at: datetime | None = None, key: DeviceKey = KEY) -> Device:
    reason = "lost phone" if revoked_at else ""
    return Device(key.key_id, key.public_key, NOW - timedelta(days=9), 0, b"", revoked_at, reason)


def _logged(
    claim: Claim | None = None,
    *,
    index: int = 7,
    revoked_at: datetime | None = None,
    chain_linked: bool = True,
    receipt_verified: bool = True,
    signed: SignedClaim | None = None,
) -> LoggedClaim:
    claim = claim or _claim()
    signed = signed or _signed(claim)
    receipt = Receipt(index, LOGGED_AT, "checkpoint", (), b"entry")
    return LoggedClaim(signed, claim, receipt, _device(revoked_at), chain_linked, receipt_verified)


def _has(report_reasons: tuple[str, ...], *words: str) -> bool:
    return any(all(w in r for w in words) for r in report_reasons)


# ---------------------------------------------------------------- exact match


def test_exact_logged_bytes_are_signed_original_with_full_evidence() -> None:
    facts = FileFacts(SHA, 11, "image/jpeg", (PDQ,))
    lc = _logged(index=42)
    r = decide(facts, NOW, exact=[lc])
    assert r.status is Verdict.SIGNED_ORIGINAL
    assert r.verified_at == NOW and r.detector is None and r.c2pa is None
    assert r.evidence == Evidence(
        file=facts, claim=lc.evidence(signature_valid=True), hash_match=True
    )
    assert len(r.reasons) == 1 and _has(r.reasons, "log index 42", "exact bytes")


def test_exact_match_takes_the_first_candidate_that_binds_and_verifies() -> None:
    facts = FileFacts(SHA, 11, "image/jpeg")
    forged = _logged(index=1, signed=replace(_signed(_claim()), signature=bytes(64)))
    elsewhere = _logged(_claim(OTHER_SHA), index=2)
    good, later = _logged(index=3), _logged(index=4)
    r = decide(facts, NOW, exact=[forged, elsewhere, good, later])
    assert r.status is Verdict.SIGNED_ORIGINAL
    assert r.evidence.claim is not None and r.evidence.claim.receipt == good.receipt


def test_a_sidecar_beside_logged_bytes_is_noted_when_it_is_another_claim() -> None:
    facts = FileFacts(SHA, 11, "image/jpeg")
    lc = _logged()
    same = decide(facts, NOW, sidecar=lc.signed_claim, sidecar_claim=lc.claim, exact=[lc])
    assert same.status is Verdict.SIGNED_ORIGINAL and same.evidence.sidecar_present
    assert not _has(same.reasons, "another claim")
    other = _signed(_claim(sequence=2))
    r = decide(facts, NOW, sidecar=other, sidecar_claim=_claim(sequence=2), exact=[lc])
    assert r.status is Verdict.SIGNED_ORIGINAL and r.evidence.sidecar_present
    assert _has(r.reasons, "describes another claim")
    alone = decide(facts, NOW, exact=[lc])
    assert not alone.evidence.sidecar_present and len(alone.reasons) == 1


def test_several_claims_of_the_bytes_rank_valid_first_then_by_index_in_any_order() -> None:
    """The best-standing claim decides; the others follow as evidence, the same whatever
    order the store returned them in, each listed once; a sidecar among them is named."""
    facts = FileFacts(SHA, 11, "image/jpeg")
    stolen = NOW - timedelta(days=3)  # before LOGGED_AT: covers the claims of that key
    revoked = _logged(_claim(sequence=1), index=2, revoked_at=stolen)
    valid = _logged(_claim(sequence=2), index=5)
    later = _logged(_claim(sequence=3), index=9)
    forged = _logged(index=1, signed=replace(_signed(_claim()), signature=bytes(64)))
    orders = (
        [revoked, valid, later],
        [later, revoked, valid, forged, valid],
        [valid, later, revoked],
    )
    reports = [decide(facts, NOW, exact=o) for o in orders]
    assert all(r == reports[0] for r in reports)
    r = reports[0]
    assert r.status is Verdict.SIGNED_ORIGINAL
    assert r.evidence.claim == valid.evidence(True)
    assert r.evidence.other_claims == (later.evidence(True), revoked.evidence(True))
    assert _has(r.reasons, "also in a validly signed claim at log index 9")
    assert _has(r.reasons, "also in a signed claim at log index 2", "lost phone", "before")
    held = decide(facts, NOW, exact=orders[0], sidecar=revoked.signed_claim)
    assert held.status is Verdict.SIGNED_ORIGINAL and held.evidence.sidecar_present
    assert _has(held.reasons, "sidecar holds the claim at log index 2", "at log index 5")
    assert not _has(held.reasons, "another claim")
    own = decide(facts, NOW, exact=orders[0], sidecar=valid.signed_claim)
    assert own.reasons == r.reasons
    all_revoked = decide(
        facts, NOW, exact=[_logged(_claim(sequence=i), index=i, revoked_at=stolen) for i in (8, 3)]
    )
    assert all_revoked.status is Verdict.REVOKED_KEY
    assert all_revoked.evidence.claim is not None and all_revoked.evidence.claim.receipt
    assert all_revoked.evidence.claim.receipt.leaf_index == 3


def test_the_other_claims_listed_are_capped() -> None:
    facts = FileFacts(SHA, 11, "image/jpeg")
    many = [_logged(_claim(sequence=i), index=i) for i in range(1, MAX_OTHER_CLAIMS + 4)]
    r = decide(facts, NOW, exact=many[::-1])
    assert r.evidence.claim == many[0].evidence(True)
    assert r.evidence.other_claims == tuple(
        lc.evidence(True) for lc in many[1 : 1 + MAX_OTHER_CLAIMS]
    )
    assert _has(r.reasons, "and 2 more claims of the same bytes")


def test_revocation_after_logging_is_a_note_and_before_it_a_revoked_key() -> None:
    facts = FileFacts(SHA, 11, "image/jpeg")
    after = decide(facts, NOW, exact=[_logged(revoked_at=LOGGED_AT + timedelta(microseconds=1))])
    assert after.status is Verdict.SIGNED_ORIGINAL
    assert _has(after.reasons, "note:", "lost phone", "after this claim was logged")
    at = decide(facts, NOW, exact=[_logged(revoked_at=LOGGED_AT)])
    assert at.status is Verdict.REVOKED_KEY
    assert _has(at.reasons, "log index 7", "lost phone", "before that claim was logged")
    assert at.evidence == Evidence(
        file=facts, claim=_logged(revoked_at=LOGGED_AT).evidence(True), hash_match=True
    )
    assert at.verified_at == NOW


def test_a_logged_claim_that_no_longer_verifies_is_tampered() -> None:
    """A valid sidecar whose log record's signature fails (the record was altered)."""
    claim = _claim()
    sidecar = _signed(claim)
    altered = _logged(signed=replace(sidecar, signature=bytes(64)))
    facts = FileFacts(SHA, 11, "image/jpeg")
    r = decide(
        facts,
        NOW,
        sidecar=sidecar,
        sidecar_claim=claim,
        sidecar_device=_device(),
        sidecar_logged=altered,
    )
    assert r.status is Verdict.TAMPERED
    assert _has(r.reasons, "log index 7", "no longer verifies")
    assert r.evidence == Evidence(
        file=facts, claim=altered.evidence(False), sidecar_present=True, hash_match=True
    )
    assert r.verified_at == NOW


# ---------------------------------------------------------------- near copies


def test_the_closest_valid_near_copy_is_derived() -> None:
    facts = FileFacts(OTHER_SHA, 9, "image/png", (PDQ,))
    far = _logged(_claim(soft=(_flip(PDQ, 10),)), index=1)
    close = _logged(_claim(soft=(_flip(PDQ, 4),)), index=2)
    tie = _logged(_claim(soft=(_flip(PDQ, 4),)), index=3)
    forged = _logged(
        _claim(soft=(PDQ,)), index=4, signed=replace(_signed(_claim()), signature=bytes(64))
    )
    too_far = _logged(_claim(soft=(_flip(PDQ, PDQ_MATCH_THRESHOLD + 1),)), index=5)
    for near in ([far, close, tie], [tie, close, far][::-1], [forged, too_far, far, close, tie]):
        r = decide(facts, NOW, near=near)
        assert r.status is Verdict.DERIVED
        assert r.evidence == Evidence(
            file=facts, claim=close.evidence(True), pdq_distance=4, pdq_transform="identity"
        )
        assert r.verified_at == NOW
        assert len(r.reasons) == 1 and _has(r.reasons, "within 4 bits", "log index 2")


def test_derived_at_the_threshold_and_from_a_revoked_key() -> None:
    facts = FileFacts(OTHER_SHA, 9, "image/png", (PDQ,))
    edge = _logged(_claim(soft=(_flip(PDQ, PDQ_MATCH_THRESHOLD),)), revoked_at=NOW)
    r = decide(facts, NOW, near=[edge])
    assert r.status is Verdict.DERIVED and r.evidence.pdq_distance == PDQ_MATCH_THRESHOLD
    assert _has(r.reasons, "note: for that capture", "lost phone")


def test_pdq_hashes_of_the_minimum_quality_count_and_weaker_ones_do_not() -> None:
    weakest = _flip(PDQ, 0, quality=PDQ_MIN_QUALITY)
    assert best_pdq_distance([weakest], [_flip(PDQ, 3)]) == 3
    assert best_pdq_distance([_flip(PDQ, 3)], [weakest]) == 3
    below = _flip(PDQ, 0, quality=PDQ_MIN_QUALITY - 1)
    assert best_pdq_distance([below], [PDQ]) is None
    assert best_pdq_distance([PDQ], [below]) is None
    assert best_pdq_distance([], [PDQ]) is None and best_pdq_distance([PDQ], []) is None
    assert best_pdq_distance([_flip(PDQ, 9), _flip(PDQ, 2)], [PDQ, _flip(PDQ, 30)]) == 2


def test_unsigned_says_whether_near_copies_were_searched() -> None:
    hashed = FileFacts(OTHER_SHA, 9, "image/png", (PDQ,))
    r = decide(hashed, NOW)
    assert r.status is Verdict.UNSIGNED and r.evidence == Evidence(file=hashed)
    assert r.verified_at == NOW and len(r.reasons) == 1
    assert r.reasons == ("no signed claim in the log matches these bytes or these pixels",)
    blind = FileFacts(OTHER_SHA, 9, "application/octet-stream")
    r = decide(blind, NOW)
    # no pixels were hashed (not media, or not decodable): the reasons say only the bytes
    # were looked up, as `prov scan`'s row does (before: "these bytes or these pixels")
    assert r.status is Verdict.UNSIGNED and r.reasons == (
        "no signed claim in the log matches these bytes",
        "no perceptual hash could be computed, so near copies were not searched",
    )
    # a sidecar object without its decoded claim is not a sidecar to judge
    r = decide(hashed, NOW, sidecar=_signed(_claim()), sidecar_claim=None)
    assert r.status is Verdict.UNSIGNED and not r.evidence.sidecar_present


# ---------------------------------------------------------------- video


def _frames(
    n: int, start: float = 0.0, changed: tuple[int, ...] = ()
) -> tuple[PerceptualHash, ...]:
    """n sampled frames, one a second from ``start``; those in ``changed`` show other pixels."""
    return tuple(
        PerceptualHash(
            "pdq",
            hashlib.sha256((b"other %d" if i in changed else b"frame %d") % i).digest(),
            100,
            start + i,
        )
        for i in range(n)
    )


def test_a_video_matching_in_time_is_derived_with_its_frame_match() -> None:
    original = _claim(soft=_frames(12), media_type="video/mp4")
    lc = _logged(original, index=5)
    image_claim = _logged(_claim(soft=_frames(12)), index=6)
    forged = _logged(original, index=8, signed=replace(_signed(original), signature=bytes(64)))
    facts = FileFacts(OTHER_SHA, 99, "video/mp4", _frames(12))
    r = decide(facts, NOW, near=[image_claim, forged, lc])
    assert r.status is Verdict.DERIVED and r.verified_at == NOW
    m = r.evidence.video_match
    assert m is not None and m.matched
    assert r.evidence.claim == lc.evidence(True)
    assert r.evidence.pdq_distance == 0
    assert _has(r.reasons, "log index 5", "seconds 0.0-11.0")
    nothing = decide(FileFacts(OTHER_SHA, 99, "video/mp4", _frames(12, 100.0)[:0]), NOW, near=[lc])
    assert nothing.status is Verdict.UNSIGNED


def test_the_better_covered_video_wins() -> None:
    partial = _logged(_claim(soft=_frames(12, changed=(1, 3, 5)), media_type="video/mp4"), index=1)
    full = _logged(_claim(soft=_frames(12), media_type="video/mp4"), index=2)
    facts = FileFacts(OTHER_SHA, 99, "video/mp4", _frames(12))
    for near in ([partial, full], [full, partial]):
        r = decide(facts, NOW, near=near)
        assert r.evidence.claim is not None and r.evidence.claim.receipt is not None
        assert r.evidence.claim.receipt.leaf_index == 2


# ---------------------------------------------------------------- sidecars


def _sidecar_case(
    facts: FileFacts,
    *,
    device: Device | None = None,
    logged: LoggedClaim | None = None,
    claim: Claim | None = None,
    signed: SignedClaim | None = None,
    chunks: tuple[bytes, ...] = (),
) -> tuple[VerificationReport, SignedClaim, Claim]:
    claim = claim or _claim()
    signed = signed or _signed(claim)
    return (
        decide(
            facts,
            NOW,
            sidecar=signed,
            sidecar_claim=claim,
            sidecar_device=device,
            sidecar_logged=logged,
            sidecar_chunk_hashes=chunks,
        ),
        signed,
        claim,
    )


def test_an_unknown_key_sidecar_is_not_used_and_the_log_decides() -> None:
    """A sidecar whose key this log has not enrolled is no evidence about the bytes: the
    verdict is the log's (UNSIGNED, or DERIVED from a near logged capture), never
    TAMPERED, and a reason names the sidecar: unchecked without a public key, signed by
    an unknown key when it verifies under the key it carries, a bad signature when not."""
    stranger = DeviceKey.from_private_bytes(hashlib.sha256(b"another log's device").digest())
    claim = _claim(device_id=stranger.key_id)
    signed = _signed(claim, stranger)
    facts = FileFacts(SHA, 11, "image/jpeg", (PDQ,))
    r = decide(facts, NOW, sidecar=signed, sidecar_claim=claim)
    assert r.status is Verdict.UNSIGNED and len(r.reasons) == 2 and r.verified_at == NOW
    assert r.evidence == Evidence(
        file=facts,
        claim=ClaimEvidence(signed, claim, None, None, False, False, False, False),
        sidecar_present=True,
        hash_match=True,
        pdq_distance=0,
    )
    assert _has(r.reasons, "no signed claim in the log")
    assert _has(r.reasons, "a key this log does not know", "could not be checked", "file's bytes")
    known = decide(
        facts, NOW, sidecar=signed, sidecar_claim=claim, sidecar_public_key=stranger.public_key
    )
    assert known.status is Verdict.UNSIGNED and known.evidence == r.evidence
    assert _has(known.reasons, "a key this log does not know", "verifies under the public key")
    # a near copy of a capture logged here, with another log's sidecar: DERIVED stands
    copy = FileFacts(OTHER_SHA, 11, "image/jpeg", (_flip(PDQ, 6),))
    lc = _logged(index=1)
    near = decide(copy, NOW, near=[lc])
    for key in (b"", stranger.public_key):
        d = decide(
            copy, NOW, sidecar=signed, sidecar_claim=claim, near=[lc], sidecar_public_key=key
        )
        assert d.status is Verdict.DERIVED and d.reasons[: len(near.reasons)] == near.reasons
        assert d.evidence == replace(near.evidence, sidecar_present=True)
        assert len(d.reasons) == len(near.reasons) + 1
        assert _has(d.reasons, "a key this log does not know", "other bytes", "not used")
        assert not _has(d.reasons, "INVALID") and not _has(d.reasons, "bad signature")
    # a signature that fails even under the key the sidecar carries is named as such
    forged = replace(signed, signature=bytes(64))
    for key, why in (
        (stranger.public_key, "does not verify even under the public key it carries"),
        (KEY.public_key, "not the key that signature names"),
        (bytes(32), "unusable"),
    ):
        bad = forged if key == stranger.public_key else signed
        b = decide(copy, NOW, sidecar=bad, sidecar_claim=claim, near=[lc], sidecar_public_key=key)
        assert b.status is Verdict.DERIVED and _has(b.reasons, "bad signature", why)
    alone = decide(
        FileFacts(OTHER_SHA, 11, "image/jpeg", (PDQ,)),
        NOW,
        sidecar=forged,
        sidecar_claim=claim,
        sidecar_public_key=stranger.public_key,
    )
    assert alone.status is Verdict.UNSIGNED and not alone.evidence.hash_match
    assert _has(alone.reasons, "bad signature", "other bytes")


def test_a_forged_sidecar_signature_is_tampered() -> None:
    facts = FileFacts(SHA, 11, "image/jpeg")
    claim = _claim()
    forged = replace(_signed(claim), signature=bytes(64))
    r, _, _ = _sidecar_case(facts, device=_device(), claim=claim, signed=forged)
    assert r.status is Verdict.TAMPERED and r.verified_at == NOW
    assert r.evidence.claim is not None and r.evidence.claim.signature_valid is False
    assert r.evidence.hash_match and r.evidence.sidecar_present


def test_edited_bytes_are_tampered_with_the_pixel_distance() -> None:
    logged = _logged(chain_linked=False, receipt_verified=True)
    for bits, words in (
        (4, "a close copy with edits"),
        (PDQ_MATCH_THRESHOLD, "a close copy with edits"),
        (PDQ_MATCH_THRESHOLD + 1, "a different picture"),
    ):
        facts = FileFacts(OTHER_SHA, 11, "image/jpeg", (_flip(PDQ, bits),))
        r, signed, claim = _sidecar_case(facts, device=_device(), logged=logged)
        assert r.status is Verdict.TAMPERED and r.verified_at == NOW
        assert _has(r.reasons, f"{bits} bits", words) and len(r.reasons) == 2
        assert r.evidence == Evidence(
            file=facts,
            claim=ClaimEvidence(signed, claim, _device(), logged.receipt, True, True, False, True),
            sidecar_present=True,
            hash_match=False,
            pdq_distance=bits,
        )
    no_pixels = FileFacts(OTHER_SHA, 11, "image/jpeg")
    r, _, _ = _sidecar_case(no_pixels, device=_device())
    assert r.status is Verdict.TAMPERED and len(r.reasons) == 1
    assert r.evidence.claim is not None and r.evidence.claim.in_log is False
    assert r.evidence.claim.receipt is None and r.evidence.claim.chain_linked is False
    assert r.evidence.claim.receipt_verified is False


def test_a_logged_sidecar_is_signed_original_with_the_log_evidence() -> None:
    facts = FileFacts(SHA, 11, "image/jpeg")
    logged = _logged(index=9)
    r, _, _ = _sidecar_case(facts, device=_device(), logged=logged)
    assert r.status is Verdict.SIGNED_ORIGINAL and r.verified_at == NOW
    assert r.evidence == Evidence(
        file=facts, claim=logged.evidence(True), sidecar_present=True, hash_match=True
    )
    assert _has(r.reasons, "log index 9")


def test_an_unlogged_sidecar_is_unsigned_or_revoked() -> None:
    facts = FileFacts(SHA, 11, "image/jpeg")
    r, signed, claim = _sidecar_case(facts, device=_device())
    assert r.status is Verdict.UNSIGNED and r.verified_at == NOW
    assert r.evidence == Evidence(
        file=facts,
        claim=ClaimEvidence(signed, claim, _device(), None, True, False, False, False),
        sidecar_present=True,
        hash_match=True,
    )
    assert _has(r.reasons, "not in the log")
    revoked = _device(revoked_at=NOW + timedelta(days=1))
    r, _, _ = _sidecar_case(facts, device=revoked)
    assert r.status is Verdict.REVOKED_KEY and r.verified_at == NOW
    assert _has(r.reasons, "lost phone", "never logged")
    assert r.evidence.claim is not None and r.evidence.claim.device == revoked
    assert r.evidence.hash_match and r.evidence.sidecar_present


def test_damaged_video_bytes_are_located_from_the_sidecar_chunk_list() -> None:
    size = 4 * 64
    original = bytes(range(256))
    damaged = original[:70] + b"\xff" + original[71:]
    signed_digest = hash_chunked(original, 64)
    claim = _claim(
        media_type="video/mp4", hard_binding=signed_digest.hard_binding(), size_bytes=size
    )
    received = hash_chunked(damaged, 64)
    facts = FileFacts(received.sha256, size, "video/mp4", chunk_hashes=received.chunk_hashes)
    r, _, _ = _sidecar_case(facts, device=_device(), claim=claim, chunks=signed_digest.chunk_hashes)
    assert r.status is Verdict.TAMPERED and r.evidence.damaged_ranges == ((64, 127),)
    # a chunk list that does not rebuild the signed root is not used
    wrong = (bytes(32),) + signed_digest.chunk_hashes[1:]
    r, _, _ = _sidecar_case(facts, device=_device(), claim=claim, chunks=wrong)
    assert r.status is Verdict.TAMPERED and r.evidence.damaged_ranges == ()
    # without the lists there is nothing to compare
    r, _, _ = _sidecar_case(facts, device=_device(), claim=claim)
    assert r.evidence.damaged_ranges == ()
    bare = replace(facts, chunk_hashes=())
    r, _, _ = _sidecar_case(bare, device=_device(), claim=claim, chunks=signed_digest.chunk_hashes)
    assert r.evidence.damaged_ranges == ()
    unchunked = replace(claim, hard_binding=HardBinding(signed_digest.sha256))
    r, _, _ = _sidecar_case(
        facts, device=_device(), claim=unchunked, chunks=signed_digest.chunk_hashes
    )
    assert r.evidence.damaged_ranges == ()
    # identical bytes: no damage is looked for
    same = FileFacts(
        signed_digest.sha256, size, "video/mp4", chunk_hashes=signed_digest.chunk_hashes
    )
    r, _, _ = _sidecar_case(same, device=_device(), claim=claim, chunks=signed_digest.chunk_hashes)
    assert r.status is Verdict.UNSIGNED and r.evidence.damaged_ranges == ()


# ---------------------------------------------------------------- signatures, C2PA


def test_signature_ok_needs_the_enrolled_key_and_the_claim_payload_type() -> None:
    claim = _claim()
    signed = _signed(claim)
    assert signature_ok(signed, _device()) is True
    assert signature_ok(signed, None) is False
    other = DeviceKey.generate()
    assert signature_ok(signed, _device(key=other)) is False
    # a valid signature for another payload type is not a claim signature
    data = signed.claim_bytes
    enroll = SignedClaim(
        PAYLOAD_TYPE_ENROLL, data, KEY.key_id, sign_payload(KEY, PAYLOAD_TYPE_ENROLL, data)
    )
    assert signature_ok(enroll, _device()) is False
    # a registry record holding a small-order key never verifies anything
    weak = replace(_device(), public_key=bytes([1]) + bytes(31))
    assert signature_ok(signed, weak) is False
    assert signature_ok(replace(signed, signature=bytes(64)), _device()) is False


def test_c2pa_credentials_add_a_reason_only_to_unsigned_files() -> None:
    unsigned = decide(FileFacts(OTHER_SHA, 5, "image/jpeg", (PDQ,)), NOW)
    assert with_c2pa(unsigned, None) is unsigned
    for state in ("Valid", "Trusted"):
        out = with_c2pa(unsigned, {"present": True, "validation_state": state, "signer": "Cam"})
        assert out.reasons[:-1] == unsigned.reasons
        assert _has(out.reasons[-1:], f"validate as {state}", "signed by Cam")
    anonymous = with_c2pa(unsigned, {"present": True, "validation_state": "Valid"})
    assert _has(anonymous.reasons, "an unnamed signer")
    for block in (
        {"present": True, "validation_state": "Invalid", "signer": "Cam"},
        {"present": False, "validation_state": "Valid"},
    ):
        out = with_c2pa(unsigned, block)
        assert out.reasons == unsigned.reasons and out.c2pa == block
    signed = decide(FileFacts(SHA, 11, "image/jpeg"), NOW, exact=[_logged()])
    block = {"present": True, "validation_state": "Trusted", "signer": "Cam"}
    out = with_c2pa(signed, block)
    assert out.reasons == signed.reasons and out.c2pa == block and out.status is signed.status


# ---------------------------------------------------------------- damage notes, ties


def _video_case(
    original: bytes, received: bytes, **kw: Any
) -> tuple[FileFacts, Claim, tuple[bytes, ...]]:
    signed_digest = hash_chunked(original, 64)
    claim = _claim(
        media_type="video/mp4", hard_binding=signed_digest.hard_binding(), size_bytes=len(original)
    )
    got = hash_chunked(received, 64)
    facts = FileFacts(got.sha256, len(received), "video/mp4", chunk_hashes=got.chunk_hashes)
    facts = replace(facts, **kw)
    return facts, claim, signed_digest.chunk_hashes


def _damaged(data: bytes, chunks: tuple[int, ...]) -> bytes:
    out = bytearray(data)
    for c in chunks:
        out[c * 64] ^= 0xFF
    return bytes(out)


def test_the_damage_note_names_the_ranges() -> None:
    original = bytes(range(256)) * 3  # 12 chunks of 64 bytes
    facts, claim, chunks = _video_case(original, _damaged(original, (1,)))
    r, _, _ = _sidecar_case(facts, device=_device(), claim=claim, chunks=chunks)
    assert r.status is Verdict.TAMPERED
    assert r.reasons[-1] == "bytes 64-127 differ from the signed file (64-byte chunks)"
    # an unenrolled key's chunk list locates nothing: that sidecar is not used at all
    r, _, _ = _sidecar_case(facts, device=None, claim=claim, chunks=chunks)
    assert r.status is Verdict.UNSIGNED and r.evidence.damaged_ranges == ()
    assert not _has(r.reasons, "differ from the signed file")
    # nor does one whose signature fails under the enrolled key: nothing vouches for the
    # chunk root it is checked against, so the ranges would be the forger's to choose
    forged = replace(_signed(claim), signature=bytes(64))
    r, _, _ = _sidecar_case(facts, device=_device(), claim=claim, signed=forged, chunks=chunks)
    assert r.status is Verdict.TAMPERED and _has(r.reasons, "bytes differ")
    assert r.evidence.damaged_ranges == ()
    assert not _has(r.reasons, "differ from the signed file")
    five = _video_case(original, _damaged(original, (0, 2, 4, 6, 8)))[0]
    r, _, _ = _sidecar_case(five, device=_device(), claim=claim, chunks=chunks)
    assert r.reasons[-1] == (
        "bytes 0-63, 128-191, 256-319, 384-447, 512-575 differ from the signed file"
        " (64-byte chunks)"
    )
    six = _video_case(original, _damaged(original, (0, 2, 4, 6, 8, 10)))[0]
    r, _, _ = _sidecar_case(six, device=_device(), claim=claim, chunks=chunks)
    assert len(r.evidence.damaged_ranges) == 6
    assert r.reasons[-1] == (
        "bytes 0-63, 128-191, 256-319, 384-447, 512-575 and 1 more differ from the signed"
        " file (64-byte chunks)"
    )
    wrong = (bytes(32),) + chunks[1:]
    r, _, _ = _sidecar_case(facts, device=_device(), claim=claim, chunks=wrong)
    assert _has(r.reasons, "chunk list does not match the signed chunk root")


def test_an_export_names_the_damage_in_the_bytes_its_claim_signed() -> None:
    """A video exported with a manifest store (here 100 bytes put in at offset 10) after
    it was signed: its chunks are compared with the store removed and the ranges named
    at the export's offsets (before: every chunk of the export was shifted by the store,
    and the whole file was named). A claim that signed the file with the store in it
    (a third-party export signed as it is) keeps the file's own chunks."""
    original = bytes(range(256)) * 3  # 12 chunks of 64 bytes
    store = bytes(100)
    export = original[:10] + store + original[10:]
    edited = bytearray(export)
    edited[500] ^= 0xFF  # byte 400 of the signed bytes: their chunk 384-447
    edited[120] ^= 0xFF  # byte 20 of the signed bytes, just after the store: chunk 0-63
    content = hash_chunked(bytes(edited[:10] + edited[110:]), 64).chunk_hashes
    for signed_bytes, expected in (
        (original, ((0, 163), (484, 547))),  # the first takes the store in
        (export, ((64, 127), (448, 511))),
    ):
        facts, claim, chunks = _video_case(
            signed_bytes,
            bytes(edited),
            content_chunk_hashes=content,
            content_removed=((10, len(store)),),
        )
        r, _, _ = _sidecar_case(facts, device=_device(), claim=claim, chunks=chunks)
        assert r.status is Verdict.TAMPERED
        assert r.evidence.damaged_ranges == expected, signed_bytes is export


def test_no_damage_note_without_both_chunk_lists_or_a_chunked_claim() -> None:
    original = bytes(range(256))
    facts, claim, chunks = _video_case(original, _damaged(original, (1,)))
    for case_facts, case_claim, case_chunks in (
        (replace(facts, chunk_hashes=()), claim, chunks),
        (facts, claim, ()),
        (facts, replace(claim, hard_binding=HardBinding(claim.hard_binding.sha256)), chunks),
    ):
        r, _, _ = _sidecar_case(case_facts, device=_device(), claim=case_claim, chunks=case_chunks)
        assert r.status is Verdict.TAMPERED and r.evidence.damaged_ranges == ()
        assert len(r.reasons) == 1, r.reasons


def test_a_file_bound_by_its_manifest_stripped_hash_is_not_damaged() -> None:
    """Embedding C2PA changes the raw bytes (and their chunks) but not the binding."""
    original = bytes(range(256))
    facts, claim, chunks = _video_case(original, _damaged(original, (1,)))
    facts = replace(facts, content_sha256=claim.hard_binding.sha256)
    r, _, _ = _sidecar_case(facts, device=_device(), claim=claim, chunks=chunks)
    assert r.status is Verdict.UNSIGNED and r.evidence.hash_match
    assert r.evidence.damaged_ranges == ()


def test_logged_evidence_is_carried_into_a_tampered_report() -> None:
    logged = _logged(chain_linked=True, receipt_verified=False)
    facts = FileFacts(OTHER_SHA, 11, "image/jpeg")
    r, signed, claim = _sidecar_case(facts, device=_device(), logged=logged)
    assert r.evidence.claim == ClaimEvidence(
        signed, claim, _device(), logged.receipt, True, True, True, False
    )


def test_equally_covered_videos_keep_the_first_found() -> None:
    first = _logged(_claim(soft=_frames(12), media_type="video/mp4"), index=1)
    second = _logged(_claim(soft=_frames(12), media_type="video/mp4"), index=2)
    facts = FileFacts(OTHER_SHA, 99, "video/mp4", _frames(12))
    r = decide(facts, NOW, near=[first, second])
    assert r.evidence.claim is not None and r.evidence.claim.receipt is not None
    assert r.evidence.claim.receipt.leaf_index == 1
    assert r.evidence.file == facts
    unrelated = _claim(soft=_frames(12, changed=tuple(range(12))), media_type="video/mp4")
    nothing = decide(facts, NOW, near=[_logged(unrelated, index=3)])
    assert nothing.status is Verdict.UNSIGNED and nothing.verified_at == NOW


def test_signed_original_says_whether_the_receipt_and_the_chain_were_checked() -> None:
    facts = FileFacts(SHA, 11, "image/jpeg")
    checked = decide(facts, NOW, exact=[_logged()])
    assert len(checked.reasons) == 1
    assert checked.reasons[0].endswith(
        "logged 2026-11-27 12:00:00 UTC; its receipt (signed checkpoint and inclusion proof)"
        " verifies with the log key"
    )
    unchecked = decide(facts, NOW, exact=[_logged(receipt_verified=False)])
    assert unchecked.reasons[0].endswith("its receipt was NOT checked against the log key")
    gap = decide(facts, NOW, exact=[_logged(chain_linked=False)])
    assert len(gap.reasons) == 2
    assert gap.reasons[1].startswith("note: this claim does not directly follow")


def test_a_logged_claim_as_evidence_keeps_every_field() -> None:
    lc = _logged(chain_linked=False, receipt_verified=True)
    for valid in (True, False):
        ev = lc.evidence(signature_valid=valid)
        assert (ev.signed_claim, ev.claim, ev.device, ev.receipt) == (
            lc.signed_claim,
            lc.claim,
            lc.device,
            lc.receipt,
        )
        assert (ev.signature_valid, ev.in_log, ev.chain_linked, ev.receipt_verified) == (
            valid,
            True,
            False,
            True,
        )
    assert _logged(chain_linked=True).evidence(True).chain_linked is True
    assert lc.integrated_at == LOGGED_AT


def test_a_sidecar_of_another_picture_gives_way_to_a_logged_capture_of_these_pixels() -> None:
    """A valid sidecar whose bytes and pixels both differ from the file's is not evidence
    against it when a logged capture is near these pixels: the file is DERIVED from that
    capture, with a note that the sidecar was not used (test_one_pipeline.py shows it
    end to end)."""
    far = PDQ_MATCH_THRESHOLD + 9
    facts = FileFacts(OTHER_SHA, 9, "image/png", (_flip(PDQ, far),))
    near = _logged(_claim(soft=(_flip(PDQ, far - 3),)), index=12)
    r = _with_sidecar(facts, near)
    alone = decide(facts, NOW, near=[near])
    assert alone.status is Verdict.DERIVED and alone.verified_at == NOW
    assert r.status is Verdict.DERIVED and r.verified_at == NOW
    assert r.evidence == replace(alone.evidence, sidecar_present=True)
    assert r.evidence.claim == near.evidence(True) and r.evidence.pdq_distance == 3
    assert r.reasons == (
        *alone.reasons,
        f"a sidecar came with the file but describes a different picture ({far} bits away"
        " by PDQ) and other bytes; it was not used",
    )
    # Nothing logged near these pixels: the mismatch is the only evidence, TAMPERED.
    kept = _with_sidecar(facts, _logged(_claim(soft=(_flip(PDQ, 0),)), index=13))
    assert kept.status is Verdict.TAMPERED and _has(kept.reasons, "a different picture")
    # A sidecar of a close copy with edits (within the threshold) is not another picture:
    # it stays TAMPERED though a logged capture is near too.
    edited = FileFacts(OTHER_SHA, 9, "image/png", (_flip(PDQ, 4),))
    r = _with_sidecar(edited, _logged(_claim(soft=(_flip(PDQ, 6),)), index=14))
    assert r.status is Verdict.TAMPERED and _has(r.reasons, "4 bits", "a close copy with edits")


def test_a_sidecar_of_the_same_pixels_does_not_call_the_copy_edited() -> None:
    # A JPEG re-saved, its metadata edited or bytes appended keeps PDQ distance 0: the
    # bytes differ, but "a close copy with edits" said pixels were edited. One bit off
    # is a close copy with edits again.
    differ = "the file's bytes differ from the bytes the signed sidecar claim covers (SHA-256)"
    same = FileFacts(OTHER_SHA, 11, "image/jpeg", (_flip(PDQ, 0),))
    assert _sidecar_case(same, device=_device())[0].reasons == (
        differ,
        "the pixels are 0 bits (PDQ) from the signed capture's: the same picture to PDQ,"
        " its bytes changed (re-saved or re-encoded, metadata edited, data added, or an"
        " edit too small for PDQ to see)",
    )
    one = FileFacts(OTHER_SHA, 11, "image/jpeg", (_flip(PDQ, 1),))
    assert _sidecar_case(one, device=_device())[0].reasons == (
        differ,
        "the pixels are 1 bits (PDQ) from the signed capture's: a close copy with edits",
    )


def test_a_sidecar_at_exactly_the_threshold_is_an_edited_copy_not_another_picture() -> None:
    facts = FileFacts(OTHER_SHA, 9, "image/png", (_flip(PDQ, PDQ_MATCH_THRESHOLD),))
    near = _logged(_claim(soft=(_flip(PDQ, PDQ_MATCH_THRESHOLD - 2),)), index=15)
    r = _with_sidecar(facts, near)
    assert r.status is Verdict.TAMPERED
    assert _has(r.reasons, f"{PDQ_MATCH_THRESHOLD} bits", "a close copy with edits")


def _with_sidecar(facts: FileFacts, near: LoggedClaim) -> VerificationReport:
    """`decide` on ``facts`` with a valid sidecar of `_claim` (its device enrolled) and
    ``near`` the one logged capture near the file's pixels."""
    claim = _claim()
    return decide(
        facts,
        NOW,
        sidecar=_signed(claim),
        sidecar_claim=claim,
        sidecar_device=_device(),
        near=[near],
    )


def test_a_near_copy_notes_a_changed_exif_orientation() -> None:
    facts = FileFacts(OTHER_SHA, 9, "image/jpeg", (PDQ,), orientation=1)
    lc = _logged(_claim(soft=(_flip(PDQ, 2),), orientation=6), index=4)
    r = decide(facts, NOW, near=[lc])
    assert r.status is Verdict.DERIVED and len(r.reasons) == 2
    assert r.reasons[1] == "the file's EXIF orientation tag is 1 where the signed capture's was 6"
    stripped = decide(replace(facts, orientation=0), NOW, near=[lc])
    assert stripped.reasons[1] == (
        "the file's EXIF orientation tag is absent where the signed capture's was 6"
    )
    same = decide(replace(facts, orientation=6), NOW, near=[lc])
    assert len(same.reasons) == 1


# ---------------------------------------------------------------- rules' edges


def _reasons(report: VerificationReport, status: Verdict) -> tuple[str, ...]:
    """The reasons of ``report``, once its status and its time (NOW) are checked."""
    assert report.status is status and report.verified_at == NOW
    return report.reasons


def _second_signature(seed: bytes, message: bytes) -> bytes:
    """Another valid Ed25519 signature of ``message`` by the key of ``seed``, made with a
    nonce of our choosing rather than RFC 8032's deterministic one (as a hedged signer
    would): R = [r]B, S = r + H(R || A || M) * a mod L (RFC 8032 section 5.1.6)."""

    def times(n: int, point: tuple[int, int]) -> tuple[int, int]:
        out = (0, 1)
        while n:
            if n & 1:
                out = keys_module._add(out, point)
            point, n = keys_module._add(point, point), n >> 1
        return out

    def encode(point: tuple[int, int]) -> bytes:
        return (point[1] | (point[0] & 1) << 255).to_bytes(32, "little")

    h = hashlib.sha512(seed).digest()
    a = (int.from_bytes(h[:32], "little") & ((1 << 254) - 8)) | (1 << 254)
    base = keys_module._decode_point(bytes.fromhex("58" + "66" * 31))
    order = keys_module._L
    r = int.from_bytes(hashlib.sha512(b"a hedged nonce" + message).digest(), "little") % order
    big_r, big_a = encode(times(r, base)), encode(times(a, base))
    k = int.from_bytes(hashlib.sha512(big_r + big_a + message).digest(), "little") % order
    return big_r + ((r + k * a) % order).to_bytes(32, "little")


def test_a_sidecar_of_the_logged_claim_is_ignored_only_when_its_signature_fails() -> None:
    """Beside the exact logged bytes, a sidecar that holds the same claim is noted as
    ignored when its signature does not verify, and not noted when it verifies: also
    when its signature differs from the logged one (Ed25519 admits many valid ones)."""
    facts = FileFacts(SHA, 11, "image/jpeg")
    lc = _logged()
    seed = hashlib.sha256(b"verdict device").digest()
    hedged = _second_signature(seed, pae(PAYLOAD_TYPE_CLAIM, lc.signed_claim.claim_bytes))
    assert hedged != lc.signed_claim.signature
    alone = decide(facts, NOW, exact=[lc])
    for signature in (lc.signed_claim.signature, hedged):
        sidecar = replace(lc.signed_claim, signature=signature)
        assert signature_ok(sidecar, lc.device)
        r = decide(facts, NOW, sidecar=sidecar, sidecar_claim=lc.claim, exact=[lc])
        assert r.status is Verdict.SIGNED_ORIGINAL and r.reasons == alone.reasons
    forged = replace(lc.signed_claim, signature=bytes(64))
    r = decide(facts, NOW, sidecar=forged, sidecar_claim=lc.claim, exact=[lc])
    assert r.status is Verdict.SIGNED_ORIGINAL
    assert r.reasons == (
        *alone.reasons,
        "note: a sidecar came with the file, but its signature does not verify under the"
        " enrolled device key, so it was ignored: the logged claim of these exact bytes"
        " decides",
    )


def test_claims_of_the_bytes_revoked_after_they_were_logged_rank_and_read_as_valid() -> None:
    facts = FileFacts(SHA, 11, "image/jpeg")
    later = LOGGED_AT + timedelta(hours=1)
    first = _logged(_claim(sequence=1), index=1, revoked_at=later)
    second = _logged(_claim(sequence=2), index=2, revoked_at=later)
    unrevoked = _logged(_claim(sequence=3), index=3)
    r = decide(facts, NOW, exact=[unrevoked, second, first])
    assert r.status is Verdict.SIGNED_ORIGINAL
    assert r.evidence.claim == first.evidence(True)
    assert r.evidence.other_claims == (second.evidence(True), unrevoked.evidence(True))
    device = KEY.key_id.hex()[:16]
    assert r.reasons[1:3] == (
        "note: the key was revoked at 2026-11-27 13:00:00 UTC (lost phone), after this claim"
        " was logged",
        f"note: the same bytes are also in a validly signed claim at log index 2 (device"
        f" {device}), logged 2026-11-27 12:00:00 UTC",
    )


def test_the_note_of_claims_left_unlisted_starts_past_the_cap() -> None:
    facts = FileFacts(SHA, 11, "image/jpeg")
    for count, more in ((1 + MAX_OTHER_CLAIMS, None), (2 + MAX_OTHER_CLAIMS, 1)):
        claims = [_logged(_claim(sequence=i), index=i) for i in range(1, count + 1)]
        r = decide(facts, NOW, exact=claims)
        assert len(r.evidence.other_claims) == MAX_OTHER_CLAIMS
        notes = [x for x in r.reasons if "not listed" in x]
        assert notes == (
            [] if more is None else [f"note: and {more} more claims of the same bytes (not listed)"]
        )


def test_more_claims_than_examined_add_a_note_and_change_nothing_else() -> None:
    lc = _logged()
    exact_bytes, a_copy = FileFacts(SHA, 11, "image/jpeg"), FileFacts(OTHER_SHA, 9, "image/png")
    for facts, exact in ((exact_bytes, [lc]), (a_copy, [])):
        base = decide(facts, NOW, exact=exact)
        r = decide(facts, NOW, exact=exact, exact_more=True)
        assert r == replace(base, reasons=(*base.reasons, EXACT_BOUND_NOTE))
        assert EXACT_BOUND_NOTE == (
            "note: more than 64 logged claims bind these bytes; the first 64 by log index"
            " were examined"
        )


def test_a_near_copy_of_a_capture_logged_after_its_key_s_revocation_says_so() -> None:
    facts = FileFacts(OTHER_SHA, 9, "image/png", (_flip(PDQ, 3),))
    stolen = _logged(revoked_at=LOGGED_AT)
    r = decide(facts, NOW, near=[stolen])
    assert _reasons(r, Verdict.REVOKED_KEY) == (
        "no exact match; the pixels are within 3 bits (PDQ, threshold 31) of a signed capture"
        " at log index 7, but the key was revoked at 2026-11-27 12:00:00 UTC (lost phone),"
        " before that capture was logged: a copy of it proves nothing",
    )
    assert r.evidence == Evidence(
        file=facts, claim=stolen.evidence(True), pdq_distance=3, pdq_transform="identity"
    )


def test_a_near_copy_prefers_a_capture_logged_before_its_key_s_revocation() -> None:
    """A capture whose key was revoked after it was logged still counts (DERIVED) and wins
    over a closer one logged after its key's revocation (review of session 35's
    `_revocation`: deciding coverage without the logging time chose the closer one)."""
    facts = FileFacts(OTHER_SHA, 9, "image/png", (PDQ,))
    stolen = _logged(_claim(soft=(_flip(PDQ, 2),)), index=1, revoked_at=LOGGED_AT)
    later = LOGGED_AT + timedelta(hours=1)
    kept = _logged(_claim(soft=(_flip(PDQ, 6),)), index=2, revoked_at=later)
    for near in ([stolen, kept], [kept, stolen]):
        r = decide(facts, NOW, near=near)
        assert r.status is Verdict.DERIVED and r.evidence.claim == kept.evidence(True)
        assert r.evidence.pdq_distance == 6


def _video(rate: float = 0.0, *, revoked_at: datetime | None = None) -> LoggedClaim:
    claim = _claim(soft=_frames(12), media_type="video/mp4", frame_sample_rate=rate)
    return _logged(claim, index=5, revoked_at=revoked_at)


def test_a_video_copy_says_how_sparsely_the_signed_video_was_sampled() -> None:
    facts = FileFacts(OTHER_SHA, 99, "video/mp4", _frames(12))
    for rate, sampled in (
        (0.0, "sampled frames"),
        (0.25, "frames, sampled one every 4 s,"),
        (0.999, "frames, sampled one every 1 s,"),
        (1.0, "sampled frames"),
        (1.5, "sampled frames"),
    ):
        r = decide(facts, NOW, near=[_video(rate)])
        assert r.status is Verdict.DERIVED
        assert r.reasons == (
            "no exact match; the frames match seconds 0.0-11.0 of the signed video at log"
            f" index 5 (100% of its {sampled} in that stretch, 100% of this file's): a"
            " transcoded, resized or trimmed copy of it",
        )


def test_a_video_copy_of_a_revoked_key_s_capture_is_derived_or_revoked_by_the_time() -> None:
    facts = FileFacts(OTHER_SHA, 99, "video/mp4", _frames(12))
    near_by = (
        "no exact match; the frames match seconds 0.0-11.0 of the signed video at log index 5"
        " (100% of its sampled frames in that stretch, 100% of this file's)"
    )
    after = decide(facts, NOW, near=[_video(revoked_at=LOGGED_AT + timedelta(hours=1))])
    assert after.status is Verdict.DERIVED
    assert after.reasons == (
        f"{near_by}: a transcoded, resized or trimmed copy of it",
        "note: for that capture, the key was revoked at 2026-11-27 13:00:00 UTC (lost phone)",
    )
    stolen = _video(revoked_at=LOGGED_AT)
    r = decide(facts, NOW, near=[stolen])
    assert _reasons(r, Verdict.REVOKED_KEY) == (
        f"{near_by}, but the key was revoked at 2026-11-27 12:00:00 UTC (lost phone), before"
        " that capture was logged: a copy of it proves nothing",
    )
    assert r.evidence.claim == stolen.evidence(True) and r.evidence.file == facts
    assert r.evidence.video_match is not None and r.evidence.video_match.matched
    assert r.evidence.pdq_distance == 0
    # a capture the revocation does not cover wins over a covered one
    fine = _logged(_claim(soft=_frames(12), media_type="video/mp4"), index=6)
    both = decide(facts, NOW, near=[stolen, fine])
    assert both.status is Verdict.DERIVED and both.evidence.claim == fine.evidence(True)
    # so does a less covered one whose key was revoked only after it was logged
    partial = _logged(
        _claim(soft=_frames(12, changed=(1, 3, 5)), media_type="video/mp4"),
        index=6,
        revoked_at=LOGGED_AT + timedelta(hours=1),
    )
    for near in ([stolen, partial], [partial, stolen]):
        r = decide(facts, NOW, near=near)
        assert r.status is Verdict.DERIVED and r.evidence.claim == partial.evidence(True)


def test_a_valid_sidecar_the_log_refuses_is_unsigned_with_the_refusal() -> None:
    facts = FileFacts(SHA, 11, "image/jpeg")
    claim = _claim(sequence=0)
    r, signed, _ = _sidecar_case(facts, device=_device(), claim=claim)
    assert _reasons(r, Verdict.UNSIGNED) == (
        "the sidecar's signature is valid and matches the bytes, but the claim is not in the"
        " log, and the log refuses it (claim sequence numbers start at 1): `prov device sync`"
        " cannot log it; sign the file again with a current `prov sign`",
    )
    assert r.evidence == Evidence(
        file=facts,
        claim=ClaimEvidence(signed, claim, _device(), None, True, False, False, False),
        sidecar_present=True,
        hash_match=True,
    )
    assert is_unlogged_sidecar_reason(r.reasons[0])
    assert is_unlogged_sidecar_reason(UNLOGGED_SIDECAR_REASON)
    for other in (NO_MATCH_REASON, "", "note: " + UNLOGGED_SIDECAR_REASON):
        assert not is_unlogged_sidecar_reason(other)


def test_an_unknown_key_sidecar_is_named_by_its_key_id() -> None:
    stranger = DeviceKey.from_private_bytes(hashlib.sha256(b"another log's device").digest())
    claim = _claim(device_id=stranger.key_id)
    r = decide(
        FileFacts(SHA, 11, "image/jpeg"), NOW, sidecar=_signed(claim, stranger), sidecar_claim=claim
    )
    assert r.reasons[-1] == (
        f"a sidecar came with the file, signed by a key this log does not know (key id"
        f" {stranger.key_id.hex()[:16]}…) and carrying no public key, so its signature could"
        " not be checked; it proves nothing about these bytes and was not used (it describes"
        " this file's bytes)"
    )


def test_of_two_damage_readings_the_one_naming_fewer_bytes_wins_and_a_tie_keeps_the_file_s() -> (
    None
):
    """A video with a manifest store's chunks as well: the file's own ranges stand unless
    the stripped bytes' ranges name strictly fewer bytes (counted inclusively)."""
    original = bytes(range(256)) * 3  # 12 chunks of 64 bytes
    for size, content_damaged, expected in (
        # 2 chunks as is (128 bytes) against 2 chunks stripped (128): a tie
        (768, (5, 8), ((128, 255),)),
        # against one full chunk and the 63-byte last one (127 bytes): fewer
        (767, (5, 11), ((320, 383), (704, 766))),
    ):
        facts, claim, chunks = _video_case(original[:size], _damaged(original[:size], (2, 3)))
        content = hash_chunked(_damaged(original[:size], content_damaged), 64).chunk_hashes
        facts = replace(facts, content_chunk_hashes=content)
        r, _, _ = _sidecar_case(facts, device=_device(), claim=claim, chunks=chunks)
        assert r.status is Verdict.TAMPERED
        assert r.evidence.damaged_ranges == expected


def test_the_reasons_of_each_rule_word_for_word() -> None:
    """The reasons a person reads, pinned whole for the rules whose words the tests above
    only sample (each is what the verdict's exit code stands for, in prose)."""
    same, other = FileFacts(SHA, 11, "image/jpeg"), FileFacts(OTHER_SHA, 11, "image/jpeg")
    forged = replace(_signed(_claim()), signature=bytes(64))
    bad_sig = "the sidecar's signature does not verify under the enrolled device key"
    assert _sidecar_case(same, device=_device(), signed=forged)[0].reasons == (bad_sig,)
    assert _sidecar_case(other, device=_device(), signed=forged)[0].reasons == (
        bad_sig,
        "and the file's bytes differ from the ones the sidecar describes",
    )
    differ = "the file's bytes differ from the bytes the signed sidecar claim covers (SHA-256)"
    for bits, what in ((4, "a close copy with edits"), (32, "a different picture")):
        edited = FileFacts(OTHER_SHA, 11, "image/jpeg", (_flip(PDQ, bits),))
        assert _sidecar_case(edited, device=_device())[0].reasons == (
            differ,
            f"the pixels are {bits} bits (PDQ) from the signed capture's: {what}",
        )
    original = bytes(range(256))
    facts, claim, chunks = _video_case(original, _damaged(original, (1,)))
    r, _, _ = _sidecar_case(facts, device=_device(), claim=claim, chunks=(bytes(32),) + chunks[1:])
    assert r.reasons == (
        differ,
        "the sidecar's chunk list does not match the signed chunk root, so it was not used",
    )
    lc, later = _logged(index=3), _logged(_claim(sequence=2), index=4)
    another = decide(
        same, NOW, sidecar=_signed(_claim(sequence=5)), sidecar_claim=_claim(), exact=[lc]
    )
    assert another.reasons[1:] == (
        "a sidecar came with the file but describes another claim; it was not used",
    )
    held = decide(
        same, NOW, sidecar=later.signed_claim, sidecar_claim=later.claim, exact=[later, lc]
    )
    assert held.reasons[-1] == (
        "the sidecar holds the claim at log index 4, which also binds these bytes; the verdict"
        " rests on the best-standing claim of them, at log index 3"
    )
    assert decide(same, NOW, exact=[_logged(revoked_at=LOGGED_AT)]).reasons == (
        "exact bytes match a claim at log index 7, but the key was revoked at 2026-11-27"
        " 12:00:00 UTC (lost phone), before that claim was logged",
    )
    assert decide(same, NOW, exact=[_logged(chain_linked=False)]).reasons[1:] == (
        "note: this claim does not directly follow the device's previous logged claim (a gap"
        " or a break in its sequence chain)",
    )
    unexplained = replace(_device(revoked_at=LOGGED_AT), revocation_reason="")
    lc = replace(_logged(), device=unexplained)
    assert decide(same, NOW, exact=[lc]).reasons == (
        "exact bytes match a claim at log index 7, but the key was revoked at 2026-11-27"
        " 12:00:00 UTC (no reason given), before that claim was logged",
    )


def test_the_reasons_on_an_unknown_key_s_sidecar_word_for_word() -> None:
    stranger = DeviceKey.from_private_bytes(hashlib.sha256(b"another log's device").digest())
    claim = _claim(device_id=stranger.key_id)
    signed = _signed(claim, stranger)
    kid = f"key id {stranger.key_id.hex()[:16]}…"
    other = FileFacts(OTHER_SHA, 11, "image/jpeg")
    for sidecar, key, note in (
        (
            signed,
            stranger.public_key,
            f"a sidecar came with the file, signed by a key this log does not know ({kid}):"
            " its signature verifies under the public key it carries, but that key is not"
            " enrolled here, so it proves nothing about these bytes and was not used (it"
            " describes other bytes)",
        ),
        (
            signed,
            KEY.public_key,
            "a sidecar came with the file with a bad signature: the public key it carries is"
            f" not the key that signature names ({kid}, a key this log does not know); it was"
            " not used (it describes other bytes)",
        ),
        (
            replace(signed, signature=bytes(64)),
            stranger.public_key,
            "a sidecar came with the file with a bad signature: its signature does not verify"
            f" even under the public key it carries ({kid}, a key this log does not know); it"
            " was not used (it describes other bytes)",
        ),
    ):
        r = decide(other, NOW, sidecar=sidecar, sidecar_claim=claim, sidecar_public_key=key)
        assert r.reasons == (NO_BYTES_MATCH_REASON, NO_PERCEPTUAL_HASH, note)
    unsigned = decide(other, NOW)
    anonymous = with_c2pa(unsigned, {"present": True, "validation_state": "Valid"})
    assert anonymous.reasons[-1] == (
        "the file carries Content Credentials (C2PA) that validate as Valid, signed by an"
        " unnamed signer: a separate line of evidence, not a record in this log"
    )


def test_a_video_sidecar_with_one_frame_alike_is_not_called_the_same_picture() -> None:
    # The distance is the closest pair of frames': a video whose other 11 frames show
    # other pixels was told "the same picture to PDQ ... or an edit too small for PDQ to
    # see", as if nothing seen had changed.
    claim = _claim(soft=_frames(12), media_type="video/mp4")
    facts = FileFacts(OTHER_SHA, 99, "video/mp4", _frames(12, changed=tuple(range(1, 12))))
    reasons = _sidecar_case(facts, device=_device(), claim=claim)[0].reasons
    assert not _has(reasons, "too small for PDQ to see"), reasons
    assert reasons[1] == (
        "the pixels are 0 bits (PDQ) from the signed capture's: at least one frame is the"
        " same picture to PDQ as one of the signed capture's, its bytes changed; its other"
        " frames may show other pixels (edited, cut or added)"
    ), reasons
    # every frame alike: still no word on the other frames for a video
    alike = FileFacts(OTHER_SHA, 99, "video/mp4", _frames(12))
    assert _sidecar_case(alike, device=_device(), claim=claim)[0].reasons[1] == reasons[1]
