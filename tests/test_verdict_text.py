"""The verdict's text follows its evidence: a reason never claims a check that the
evidence says failed, and what the verdict computed (damaged ranges, chain gaps) reaches
the reasons."""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provenance.core.binding import PerceptualHash
from provenance.core.claims import Claim, HardBinding, Receipt, SignedClaim, Verdict
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, sign_payload
from provenance.core.keys import DeviceKey
from provenance.core.verify import FileFacts, LoggedClaim, VerificationReport, decide
from provenance.core.video_binding import hash_chunked
from provenance.wire import convert as wire
from tests.inproc import device_record, flip_bits

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
PDQ = PerceptualHash("pdq", bytes.fromhex("0f0ff0cee0f4a84f06370a22038f63f0" * 2), 100)
CHUNK = 1024


def _sign(key: DeviceKey, claim: Claim) -> SignedClaim:
    data = wire.encode_claim(claim)
    return SignedClaim(
        PAYLOAD_TYPE_CLAIM, data, key.key_id, sign_payload(key, PAYLOAD_TYPE_CLAIM, data)
    )


def _claim(key: DeviceKey, data: bytes, **kw: Any) -> Claim:
    base = Claim(
        key.key_id,
        1,
        NOW,
        "image/jpeg",
        len(data),
        HardBinding(hashlib.sha256(data).digest()),
        (PDQ,),
        4,
        3,
    )
    return replace(base, **kw)


def _logged(
    key: DeviceKey, claim: Claim, *, receipt_verified: bool = True, chain_linked: bool = True
) -> LoggedClaim:
    return LoggedClaim(
        _sign(key, claim),
        claim,
        Receipt(3, NOW - timedelta(hours=1), "cp", (), b"entry"),
        device_record(key, NOW),
        chain_linked,
        receipt_verified,
    )


def check_text_follows_evidence(r: VerificationReport) -> None:
    """No reason claims a check that the evidence records as failed."""
    text = " | ".join(r.reasons)
    c = r.evidence.claim
    if c is None or not c.receipt_verified:
        assert "verifies with the log key" not in text, text
    if c is None or not c.signature_valid:
        assert "validly signed" not in text, text
    if not r.evidence.hash_match:
        assert "exact bytes" not in text, text
    if c is not None and not c.chain_linked and c.in_log and r.status is Verdict.SIGNED_ORIGINAL:
        assert "sequence chain" in text, text
    if r.evidence.damaged_ranges:
        first, last = r.evidence.damaged_ranges[0]
        assert f"{first:,}-{last:,}" in text, text


@pytest.fixture
def key() -> DeviceKey:
    return DeviceKey.generate()


def test_an_unchecked_receipt_is_never_said_to_verify(key: DeviceKey) -> None:
    data = b"photo bytes"
    facts = FileFacts(hashlib.sha256(data).digest(), len(data), "image/jpeg", (PDQ,))
    lc = _logged(key, _claim(key, data), receipt_verified=False)
    r = decide(facts, NOW, exact=[lc])
    assert r.status is Verdict.SIGNED_ORIGINAL
    assert r.evidence.claim is not None and r.evidence.claim.receipt_verified is False
    assert "NOT checked" in r.reasons[0]
    check_text_follows_evidence(r)
    checked = decide(facts, NOW, exact=[_logged(key, _claim(key, data))])
    assert "verifies with the log key" in checked.reasons[0]
    check_text_follows_evidence(checked)


def test_a_chain_gap_is_said(key: DeviceKey) -> None:
    data = b"photo bytes"
    facts = FileFacts(hashlib.sha256(data).digest(), len(data), "image/jpeg")
    r = decide(facts, NOW, exact=[_logged(key, _claim(key, data), chain_linked=False)])
    assert r.status is Verdict.SIGNED_ORIGINAL and "sequence chain" in r.reasons[-1]
    check_text_follows_evidence(r)


def _video(key: DeviceKey, data: bytes) -> tuple[Claim, tuple[bytes, ...]]:
    digest = hash_chunked(data, CHUNK)
    claim = _claim(key, data, media_type="video/mp4", hard_binding=digest.hard_binding())
    return claim, digest.chunk_hashes


def _decide_video(
    key: DeviceKey,
    claim: Claim,
    data: bytes,
    listed: tuple[bytes, ...],
    measured_at: int = CHUNK,
    enrolled: bool = True,
) -> VerificationReport:
    """`decide` on the video ``data``, its chunks hashed ``measured_at`` bytes each, with
    ``claim``'s sidecar listing the chunk hashes ``listed``; ``key`` enrolled unless not
    ``enrolled``."""
    got = hash_chunked(data, measured_at)
    facts = FileFacts(got.sha256, got.size, "video/mp4", chunk_hashes=got.chunk_hashes)
    return decide(
        facts,
        NOW,
        sidecar=_sign(key, claim),
        sidecar_claim=claim,
        sidecar_device=device_record(key, NOW) if enrolled else None,
        sidecar_chunk_hashes=listed,
    )


@pytest.mark.parametrize("enrolled", [True, False])
def test_the_damaged_range_note_reaches_the_report(key: DeviceKey, enrolled: bool) -> None:
    original = os.urandom(5 * CHUNK + 100)
    claim, chunks = _video(key, original)
    damaged = bytearray(original)
    damaged[CHUNK + 7] ^= 1
    damaged[4 * CHUNK] ^= 1
    r = _decide_video(key, claim, bytes(damaged), chunks, enrolled=enrolled)
    check_text_follows_evidence(r)
    if not enrolled:  # a sidecar of a key this log does not know is not used
        assert r.status is Verdict.UNSIGNED and r.evidence.damaged_ranges == ()
        assert not any("differ" in x for x in r.reasons), r.reasons
        return
    assert r.status is Verdict.TAMPERED
    assert r.evidence.damaged_ranges == ((1024, 2047), (4096, 5119))
    assert any("bytes 1,024-2,047, 4,096-5,119 differ" in x for x in r.reasons), r.reasons


def test_a_chunk_list_that_does_not_rebuild_the_root_is_said(key: DeviceKey) -> None:
    original = os.urandom(3 * CHUNK)
    claim, chunks = _video(key, original)
    r = _decide_video(
        key, claim, original[:-1] + bytes([original[-1] ^ 1]), (chunks[1], chunks[0], chunks[2])
    )
    assert r.status is Verdict.TAMPERED and r.evidence.damaged_ranges == ()
    assert any("does not match the signed chunk root" in x for x in r.reasons)


def test_chunks_measured_at_another_size_cannot_break_the_verdict(key: DeviceKey) -> None:
    original = os.urandom(3 * CHUNK)
    claim, chunks = _video(key, original)
    # the file's chunks measured at another size
    r = _decide_video(
        key, claim, original[:-1] + bytes([original[-1] ^ 1]), chunks, measured_at=4 * CHUNK
    )
    assert r.status is Verdict.TAMPERED
    assert any("could not be located" in x for x in r.reasons)


def test_every_verdict_of_a_scenario_sweep_follows_its_evidence(key: DeviceKey) -> None:
    data = b"photo bytes"
    claim = _claim(key, data)
    s = _sign(key, claim)
    forged = replace(s, signature=bytes(64))
    exact = FileFacts(hashlib.sha256(data).digest(), len(data), "image/jpeg", (PDQ,))
    other = FileFacts(b"\x01" * 32, 9, "image/jpeg", (flip_bits(PDQ, 5),))
    dev = device_record(key, NOW)
    revoked = device_record(key, NOW, NOW - timedelta(days=2))
    for facts in (exact, other):
        for sidecar in (None, s, forged):
            for device in (None, dev, revoked):
                for logged in (None, _logged(key, claim), _logged(key, claim, chain_linked=False)):
                    for verified in (True, False):
                        lc = None if logged is None else replace(logged, receipt_verified=verified)
                        if lc is not None and device is not None:
                            lc = replace(lc, device=device)
                        r = decide(
                            facts,
                            NOW,
                            sidecar=sidecar,
                            sidecar_claim=claim if sidecar else None,
                            sidecar_device=device,
                            sidecar_logged=lc if sidecar else None,
                            exact=[lc] if lc and sidecar is None else [],
                            near=[lc] if lc else [],
                        )
                        check_text_follows_evidence(r)


_KEY = DeviceKey.generate()


@st.composite
def _scenarios(draw: st.DrawFn) -> dict[str, object]:
    """Any mix of file facts, sidecar, registry record, log records and chunk lists."""
    size = draw(st.sampled_from([0, 100, 3 * CHUNK, 5 * CHUNK + 7]))
    data = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    video = draw(st.booleans())
    chunk = draw(st.sampled_from([0, 1, CHUNK, 4 * CHUNK]))
    digest = hash_chunked(data, chunk or CHUNK)
    hb = digest.hard_binding() if video and chunk else HardBinding(digest.sha256)
    soft = tuple(
        PerceptualHash("pdq", draw(st.binary(min_size=32, max_size=32)), q, float(t))
        for t, q in enumerate(draw(st.lists(st.integers(0, 100), max_size=4)))
    )
    claim = _claim(
        _KEY,
        data,
        hard_binding=hb,
        soft_bindings=soft,
        media_type="video/mp4" if video else "image/png",
    )
    signed = _sign(_KEY, claim)
    if draw(st.booleans()):
        signed = replace(signed, signature=bytes(64))
    got = data if draw(st.booleans()) else data[: size // 2] + b"\x00" * (size - size // 2)
    facts = FileFacts(
        hashlib.sha256(got).digest(),
        len(got),
        claim.media_type,
        soft if draw(st.booleans()) else (),
        chunk_hashes=hash_chunked(
            got, draw(st.sampled_from([chunk or CHUNK, 2 * CHUNK]))
        ).chunk_hashes,
    )
    lc = _logged(
        _KEY, claim, receipt_verified=draw(st.booleans()), chain_linked=draw(st.booleans())
    )
    lc = replace(lc, signed_claim=signed)
    chunks = (
        digest.chunk_hashes
        if draw(st.booleans())
        else draw(st.lists(st.binary(min_size=32, max_size=32), max_size=3))
    )
    return {
        "facts": facts,
        "sidecar": draw(st.sampled_from([signed, signed, None])),
        "claim": claim,
        "device": draw(st.sampled_from([None, device_record(_KEY, NOW)])),
        "logged": lc if draw(st.booleans()) else None,
        "exact": [lc] if draw(st.booleans()) else [],
        "near": [lc] if draw(st.booleans()) else [],
        "chunks": tuple(chunks),
    }


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenarios())
def test_decide_is_total_and_its_text_follows_its_evidence(s: dict[str, Any]) -> None:
    r = decide(
        s["facts"],
        NOW,
        sidecar=s["sidecar"],
        sidecar_claim=s["claim"] if s["sidecar"] else None,
        sidecar_device=s["device"],
        sidecar_logged=s["logged"] if s["sidecar"] else None,
        exact=s["exact"],
        near=s["near"],
        sidecar_chunk_hashes=s["chunks"],
    )
    assert isinstance(r.status, Verdict) and r.reasons
    check_text_follows_evidence(r)
