"""Unit tests of the pure core's rules: registry checks, offline receipt verification and
the log audit, one rule (and its boundary) per test, on real keys and real Merkle trees.

Written so that each mutation of these rules that changes behaviour fails a test (see
docs/mutants.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from provenance.core import keys as keys_module
from provenance.core import merkle
from provenance.core.binding import PerceptualHash
from provenance.core.claims import (
    LOG_ENTRY_FRAMING_BYTES,
    MAX_CLAIM_SOFT_BINDINGS,
    MAX_LOG_ENTRY_BYTES,
    MAX_METADATA_BYTES,
    MAX_STORED_INT,
    Claim,
    Device,
    HardBinding,
    Receipt,
    SignedClaim,
)
from provenance.core.envelope import (
    PAYLOAD_TYPE_CLAIM,
    PAYLOAD_TYPE_ENROLL,
    sign_payload,
    verify_payload,
)
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL_CERTIFICATE as CERT_ENROLL
from provenance.core.errors import (
    AlreadyEnrolledError,
    ClaimError,
    ConfigError,
    EnrollmentError,
    KeyMaterialError,
    LogError,
    LogIntegrityError,
    ProofError,
    RevokedKeyError,
    SequenceError,
    SignatureError,
)
from provenance.core.keyhistory import (
    KeyEvent,
    KeyEventKind,
    KeySigner,
    LoggedKeyEvent,
    SignedKeyEvent,
    replay,
    sign_key_event,
)
from provenance.core.keys import DeviceKey, verify_strict
from provenance.core.problems import MAX_PROBLEMS
from provenance.core.registry import (
    ENROLL_SKEW,
    TOKEN_BYTES,
    answer_enrollment_again,
    certificate_enrollment_proof,
    certificate_enrollment_statement,
    chain_link,
    check_certificate_enrollment,
    check_claim_shape,
    check_claim_signature,
    check_enrollment,
    check_label,
    check_not_revoked,
    check_signature,
    merged_revocation,
    new_token,
    token_hash,
)
from provenance.log.audit import AuditState, KeyHistoryReader, audit_step, open_trusted
from provenance.log.checkpoint import (
    Checkpoint,
    LogSigner,
    NoteVerifier,
    generate_log_key,
    load_log_signer,
)
from provenance.log.receipt import build_receipt, verify_receipt
from provenance.wire import convert as wire

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ORIGIN = "example.com/log"
KEY = DeviceKey.from_private_bytes(hashlib.sha256(b"core rules device").digest())
SIGNER = LogSigner(
    Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"core rules log").digest()), ORIGIN
)
VERIFIER = NoteVerifier(ORIGIN, SIGNER.public_key)
# a public key of small order (the identity point): verifies forged signatures
SMALL_ORDER_KEY = bytes([1]) + bytes(31)


def _claim(**changes: Any) -> Claim:
    base = Claim(
        device_id=KEY.key_id,
        sequence=1,
        captured_at=NOW,
        media_type="image/jpeg",
        size_bytes=10,
        hard_binding=HardBinding(hashlib.sha256(b"capture").digest()),
        soft_bindings=(PerceptualHash("pdq", bytes(32), 0),),  # a flat picture's
        width=4,
        height=3,
    )
    return replace(base, **changes)


def _sign(
    claim: Claim, key: DeviceKey = KEY, payload_type: str = PAYLOAD_TYPE_CLAIM
) -> SignedClaim:
    data = wire.encode_claim(claim)
    return SignedClaim(payload_type, data, key.key_id, sign_payload(key, payload_type, data))


def _device(key: DeviceKey = KEY, **changes: Any) -> Device:
    return replace(Device(key.key_id, key.public_key, NOW - timedelta(days=1)), **changes)


# ---------------------------------------------------------------- registry


def test_tokens_are_fresh_urlsafe_and_stored_as_their_hash() -> None:
    tokens = {new_token() for _ in range(20)}
    assert len(tokens) == 20
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
        assert len(token) == 43  # 32 bytes of randomness in unpadded base64
    assert TOKEN_BYTES == 32
    assert token_hash("tök") == hashlib.sha256("tök".encode()).digest()


def test_enrollment_needs_a_proof_over_the_token() -> None:
    token = new_token()
    proof = sign_payload(KEY, PAYLOAD_TYPE_ENROLL, token.encode())
    assert check_enrollment(KEY.public_key, token, proof) == KEY.key_id
    # non-ASCII tokens are signed as UTF-8
    assert check_enrollment(
        KEY.public_key, "é", sign_payload(KEY, PAYLOAD_TYPE_ENROLL, "é".encode())
    )
    with pytest.raises(EnrollmentError) as info:
        check_enrollment(KEY.public_key, new_token(), proof)
    assert str(info.value) == (
        "proof of possession does not verify: the request was not signed by this key"
    )
    assert isinstance(info.value.__cause__, SignatureError)
    claim_type = sign_payload(KEY, PAYLOAD_TYPE_CLAIM, token.encode())
    with pytest.raises(EnrollmentError):
        check_enrollment(KEY.public_key, token, claim_type)
    other = DeviceKey.generate()
    with pytest.raises(EnrollmentError):
        check_enrollment(other.public_key, token, proof)


def test_enrollment_refuses_weak_keys_before_the_proof() -> None:
    with pytest.raises(KeyMaterialError):
        check_enrollment(SMALL_ORDER_KEY, "t", bytes(64))
    with pytest.raises(KeyMaterialError):
        check_enrollment(b"short", "t", bytes(64))


LOG_KEY = "example.com/log+0a1b2c3d+AbCdEfGh"
SIGNED_AT = datetime(2026, 11, 29, 11, 58, 30, tzinfo=UTC)


def _cert_enroll(
    log_key: str = LOG_KEY,
    signed_at: datetime | None = SIGNED_AT,
    proof: bytes | None = None,
    now: datetime = NOW,
    public_key: bytes = KEY.public_key,
) -> bytes:
    if proof is None:
        proof = certificate_enrollment_proof(KEY, LOG_KEY, SIGNED_AT)
    return check_certificate_enrollment(public_key, log_key, signed_at, proof, LOG_KEY, now)


def test_a_certificate_enrollment_proof_signs_the_log_key_and_the_time() -> None:
    statement = certificate_enrollment_statement(LOG_KEY, SIGNED_AT.replace(microsecond=7))
    assert statement == f"{LOG_KEY}\n2026-11-29T11:58:30Z\n".encode()
    proof = certificate_enrollment_proof(KEY, LOG_KEY, SIGNED_AT)
    assert len(proof) == 64
    verify_payload(KEY.public_key, CERT_ENROLL, statement, proof)
    for payload_type, other in (
        (PAYLOAD_TYPE_ENROLL, statement),
        (CERT_ENROLL, certificate_enrollment_statement("x", SIGNED_AT)),
        (
            CERT_ENROLL,
            certificate_enrollment_statement(LOG_KEY, SIGNED_AT + timedelta(seconds=1)),
        ),
    ):
        with pytest.raises(SignatureError):
            verify_payload(KEY.public_key, payload_type, other, proof)
    other_key = DeviceKey.from_private_bytes(hashlib.sha256(b"another device").digest())
    assert certificate_enrollment_proof(other_key, LOG_KEY, SIGNED_AT) != proof
    assert _cert_enroll() == KEY.key_id
    # the time is signed in whole seconds: a fraction in signed_at changes nothing
    assert _cert_enroll(signed_at=SIGNED_AT.replace(microsecond=999_999)) == KEY.key_id


def test_a_certificate_enrollment_is_accepted_within_the_skew_either_way() -> None:
    assert ENROLL_SKEW == timedelta(minutes=5)
    for now in (SIGNED_AT + ENROLL_SKEW, SIGNED_AT - ENROLL_SKEW, SIGNED_AT):
        assert _cert_enroll(now=now) == KEY.key_id
    for now, words in (
        (SIGNED_AT + ENROLL_SKEW + timedelta(microseconds=1), "12:03:30"),
        (SIGNED_AT - ENROLL_SKEW - timedelta(microseconds=1), "11:53:29"),
    ):
        with pytest.raises(EnrollmentError) as info:
            _cert_enroll(now=now)
        assert str(info.value) == (
            "this enrollment request was signed at 2026-11-29 11:58:30 UTC, more than 5"
            f" minutes from the server's time (2026-11-29 {words} UTC): make a new one, with"
            " the device's clock set right"
        )


@pytest.mark.parametrize(("log_key", "signed_at"), [("", SIGNED_AT), (LOG_KEY, None), ("", None)])
def test_a_certificate_enrollment_must_name_the_log_and_the_time(
    log_key: str, signed_at: datetime | None
) -> None:
    with pytest.raises(EnrollmentError) as info:
        _cert_enroll(log_key=log_key, signed_at=signed_at)
    assert str(info.value) == (
        "this certificate enrollment names no log or no time: its proof of possession must"
        " sign the log's key and the time (a client older than this server: upgrade it)"
    )


@pytest.mark.parametrize(
    ("log_key", "named"),
    [
        ("other.example/log+01020304+AAAA", "other.example/log+01020304+AAAA"),
        ("k" * 200, "k" * 200),
        ("k" * 201, "unreadable"),
        ("other\nlog", "unreadable"),
        ("\x1b[2J", "unreadable"),
    ],
)
def test_a_certificate_enrollment_for_another_log_is_refused_naming_it(
    log_key: str, named: str
) -> None:
    proof = certificate_enrollment_proof(KEY, log_key, SIGNED_AT)  # a valid proof for that log
    with pytest.raises(EnrollmentError) as info:
        _cert_enroll(log_key=log_key, proof=proof)
    assert str(info.value) == (
        f"this enrollment request was made for another log ({named}), not this server's"
        f" ({LOG_KEY}): a request made for one server cannot be replayed to another; enroll"
        " with this one"
    )


def test_a_certificate_enrollment_proof_must_be_the_key_s_over_this_log_and_time() -> None:
    other_key = DeviceKey.from_private_bytes(hashlib.sha256(b"another device").digest())
    later = SIGNED_AT + timedelta(seconds=1)
    for proof, public_key, signed_at in (
        (certificate_enrollment_proof(other_key, LOG_KEY, SIGNED_AT), KEY.public_key, SIGNED_AT),
        (certificate_enrollment_proof(KEY, LOG_KEY, SIGNED_AT), other_key.public_key, SIGNED_AT),
        (certificate_enrollment_proof(KEY, LOG_KEY, SIGNED_AT), KEY.public_key, later),
        (certificate_enrollment_proof(KEY, "x", SIGNED_AT), KEY.public_key, SIGNED_AT),
        (
            sign_payload(
                KEY, PAYLOAD_TYPE_ENROLL, certificate_enrollment_statement(LOG_KEY, SIGNED_AT)
            ),
            KEY.public_key,
            SIGNED_AT,
        ),
        (bytes(64), KEY.public_key, SIGNED_AT),
    ):
        with pytest.raises(EnrollmentError) as info:
            _cert_enroll(proof=proof, public_key=public_key, signed_at=signed_at)
        assert str(info.value) == (
            "proof of possession does not verify: the request was not signed by this key for"
            " this log and time"
        )
        assert isinstance(info.value.__cause__, SignatureError)
    assert (
        _cert_enroll(
            proof=certificate_enrollment_proof(other_key, LOG_KEY, SIGNED_AT),
            public_key=other_key.public_key,
        )
        == hashlib.sha256(other_key.public_key).digest()
    )


def test_a_certificate_enrollment_refuses_weak_keys_before_anything_else() -> None:
    for public_key in (SMALL_ORDER_KEY, b"short"):
        with pytest.raises(KeyMaterialError):
            check_certificate_enrollment(public_key, "", None, bytes(64), LOG_KEY, NOW)


def test_an_enrollment_again_with_the_same_chain_answers_the_device_as_it_stands() -> None:
    device = _device(label="cam", last_sequence=9)
    again = AlreadyEnrolledError("already enrolled", device, "CHAIN")
    assert answer_enrollment_again(again, "CHAIN") is device
    for stored, sent in (("CHAIN", "OTHER"), ("CHAIN", ""), ("", ""), ("", "CHAIN")):
        refused = AlreadyEnrolledError("already enrolled", device, stored)
        with pytest.raises(AlreadyEnrolledError) as info:
            answer_enrollment_again(refused, sent)
        assert info.value is refused
    revoked = _device(revoked_at=NOW, revocation_reason="stolen")
    for again, chain, by_token in (
        (AlreadyEnrolledError("already", revoked, "CHAIN"), "CHAIN", False),
        (AlreadyEnrolledError("already", revoked, "", token_spent_on_it=True), "", True),
    ):
        with pytest.raises(EnrollmentError) as err:
            answer_enrollment_again(again, chain, by_token=by_token)
        assert type(err.value) is EnrollmentError
        assert str(err.value) == (
            f"device {KEY.key_id.hex()} was enrolled at 2026-11-28 12:00:00 UTC and its key"
            " revoked at 2026-11-29 12:00:00 UTC: a revoked key cannot enroll again; enroll"
            " a new key"
        )


def test_a_token_enrollment_again_is_answered_only_when_its_token_enrolled_this_key() -> None:
    """by_token: the spent token decides, whatever chain is stored or sent."""
    device = _device(label="cam")
    for stored, sent in (("", ""), ("CHAIN", ""), ("CHAIN", "OTHER")):
        spent = AlreadyEnrolledError("already", device, stored, token_spent_on_it=True)
        assert answer_enrollment_again(spent, sent, by_token=True) is device
        other = AlreadyEnrolledError("already", device, stored, token_spent_on_it=False)
        with pytest.raises(AlreadyEnrolledError) as info:
            answer_enrollment_again(other, sent, by_token=True)
        assert info.value is other
    # a certificate enrollment is not answered by a spent token
    spent = AlreadyEnrolledError("already", device, "", token_spent_on_it=True)
    with pytest.raises(AlreadyEnrolledError):
        answer_enrollment_again(spent, "")


def test_a_well_formed_claim_passes_every_shape_rule() -> None:
    claim = _claim(metadata={"a": "x" * (MAX_METADATA_BYTES - 1)})
    check_claim_shape(_sign(claim), claim)
    frames = (PerceptualHash("pdq", bytes(32), 100),) * MAX_CLAIM_SOFT_BINDINGS
    many = _claim(media_type="video/mp4", duration_seconds=1.0, soft_bindings=frames)
    check_claim_shape(_sign(many), many)


@pytest.mark.parametrize(
    ("claim", "payload_type", "message"),
    [
        (_claim(), "application/other", "unexpected payload type"),
        (_claim(version=2), PAYLOAD_TYPE_CLAIM, "claim version 2 is not supported"),
        (_claim(version=0), PAYLOAD_TYPE_CLAIM, "claim version 0 is not supported"),
        (_claim(device_id=bytes(32)), PAYLOAD_TYPE_CLAIM, "device id differs"),
        (_claim(hard_binding=HardBinding(bytes(31))), PAYLOAD_TYPE_CLAIM, "32-byte SHA-256"),
        (_claim(hard_binding=HardBinding(bytes(33))), PAYLOAD_TYPE_CLAIM, "32-byte SHA-256"),
        (_claim(sequence=0), PAYLOAD_TYPE_CLAIM, "sequence numbers start at 1"),
        (
            _claim(metadata={"a": "x" * MAX_METADATA_BYTES}),
            PAYLOAD_TYPE_CLAIM,
            f"metadata is {MAX_METADATA_BYTES + 1} bytes; the limit is {MAX_METADATA_BYTES}",
        ),
        (
            # counted in UTF-8 bytes, keys included: 2 + 2 * 1024 + 2 * 1024 > 4096
            _claim(metadata={"ké": "é" * 1024, "k": "é" * 1024}),
            PAYLOAD_TYPE_CLAIM,
            "metadata is 4100 bytes",
        ),
        (
            _claim(
                soft_bindings=(PerceptualHash("pdq", bytes(32), 100),)
                * (MAX_CLAIM_SOFT_BINDINGS + 1)
            ),
            PAYLOAD_TYPE_CLAIM,
            f"{MAX_CLAIM_SOFT_BINDINGS + 1} soft bindings; the limit is {MAX_CLAIM_SOFT_BINDINGS}",
        ),
        (
            # once the padding of the largest entry (below); a media type is bounded now
            _claim(media_type="video/" + "x" * 65_535),
            PAYLOAD_TYPE_CLAIM,
            "the claim's media type is 65,541 characters; at most 255 (RFC 6838",
        ),
        (_claim(duration_seconds=float("nan")), PAYLOAD_TYPE_CLAIM, "duration_seconds is nan"),
        (
            _claim(prev_claim_hash=bytes(5)),
            PAYLOAD_TYPE_CLAIM,
            "prev_claim_hash is 5 bytes; it names the device's previous claim by its 32-byte",
        ),
        (_claim(orientation=9), PAYLOAD_TYPE_CLAIM, "orientation is 9; an EXIF orientation is"),
        (_claim(orientation=2**32 - 1), PAYLOAD_TYPE_CLAIM, "orientation is 4294967295"),
        (_claim(media_type=""), PAYLOAD_TYPE_CLAIM, "media type '' is not a media type"),
        (
            _claim(media_type="image/jpeg\u202egpj.exe"),
            PAYLOAD_TYPE_CLAIM,
            "'image/jpeg\\u202egpj.exe' is not",
        ),
        (_claim(media_type="video/mp4; codecs=avc1"), PAYLOAD_TYPE_CLAIM, "without parameters"),
        (_claim(media_type="image"), PAYLOAD_TYPE_CLAIM, "'image' is not a media type"),
        (_claim(duration_seconds=float("inf")), PAYLOAD_TYPE_CLAIM, "duration_seconds is inf"),
        (
            _claim(duration_seconds=-1.0),
            PAYLOAD_TYPE_CLAIM,
            "duration_seconds is -1; a time in a video is a finite number of seconds from 0",
        ),
        (_claim(frame_sample_rate=float("nan")), PAYLOAD_TYPE_CLAIM, "frame_sample_rate is nan"),
    ],
)
def test_claim_shape_rules(claim: Claim, payload_type: str, message: str) -> None:
    signed = SignedClaim(payload_type, wire.encode_claim(claim), KEY.key_id, bytes(64))
    with pytest.raises(ClaimError, match=re.escape(message)):
        check_claim_shape(signed, claim)


def _fields_bytes(signed: SignedClaim) -> int:
    """What a log entry holds of a signed claim besides its framing (claims.py's
    LOG_ENTRY_FRAMING_BYTES): payload type, claim, key id and signature, in bytes."""
    return (
        len(signed.payload_type.encode())
        + len(signed.claim_bytes)
        + len(signed.key_id)
        + len(signed.signature)
    )


def _unknown_field(size: int) -> bytes:
    """Field 1000 of the claim, length-delimited, holding ``size`` zero bytes (protobuf's
    encoding: a varint tag and a varint length)."""

    def varint(n: int) -> bytes:
        out = b""
        while n > 0x7F:
            out += bytes((0x80 | (n & 0x7F),))
            n >>= 7
        return out + bytes((n,))

    return varint(1000 << 3 | 2) + varint(size) + bytes(size)


def test_the_largest_claim_accepted_makes_a_log_entry_that_fits_a_tile_bundle() -> None:
    """The log entry's size bound is exact: fields plus framing of MAX_LOG_ENTRY_BYTES is
    accepted (and its real log entry fits), one byte more is refused."""
    room = MAX_LOG_ENTRY_BYTES - LOG_ENTRY_FRAMING_BYTES

    def padded(extra: int) -> tuple[SignedClaim, Claim]:
        # grow a field this server does not know (protobuf keeps it in the signed bytes)
        # until the fields take `room + extra` bytes: every known field is bounded below
        # it (a media type over 255 characters is refused now; this grew one)
        claim = _claim()
        pad = room - _fields_bytes(_sign(claim))
        for _ in range(8):
            data = wire.encode_claim(claim) + _unknown_field(pad)
            signed = SignedClaim(
                PAYLOAD_TYPE_CLAIM, data, KEY.key_id, sign_payload(KEY, PAYLOAD_TYPE_CLAIM, data)
            )
            missing = room + extra - _fields_bytes(signed)
            if missing == 0:
                return signed, claim
            pad += missing
        raise AssertionError(f"no unknown field makes the fields {room + extra} bytes")

    signed, claim = padded(0)
    check_claim_shape(signed, claim)
    entry = wire.encode_log_entry(signed, NOW)
    assert len(entry) <= MAX_LOG_ENTRY_BYTES
    assert wire.decode_log_entry(entry) == (signed, NOW)
    signed, claim = padded(1)
    with pytest.raises(ClaimError) as info:
        check_claim_shape(signed, claim)
    assert str(info.value).startswith(
        f"the claim would make a log entry of about {MAX_LOG_ENTRY_BYTES + 1:,} bytes; the"
        f" log holds entries of at most {MAX_LOG_ENTRY_BYTES:,}"
    )


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        (_claim(device_id=bytes(32)), "the claim's device id differs from the signing key id"),
        (
            _claim(hard_binding=HardBinding(bytes(31))),
            "the claim's hard binding is not a 32-byte SHA-256",
        ),
        (_claim(sequence=0), "claim sequence numbers start at 1"),
        (
            _claim(soft_bindings=(PerceptualHash("pdq", bytes(32), 100),) * 1001),
            "claim has 1001 soft bindings; the limit is 1000 (a video of more than 1,000 s"
            " signed by an older prov sign: sign it again, the frames are now sampled more"
            " sparsely)",
        ),
    ],
)
def test_claim_shape_refusals_say_exactly_what_is_wrong(claim: Claim, message: str) -> None:
    with pytest.raises(ClaimError) as info:
        check_claim_shape(_sign(claim), claim)
    assert str(info.value) == message


def test_claim_signature_is_checked_under_the_device_key() -> None:
    signed = _sign(_claim())
    check_signature(signed, _device())
    tampered = replace(signed, claim_bytes=signed.claim_bytes + b"\x00")
    with pytest.raises(SignatureError) as info:
        check_signature(tampered, _device())
    assert str(info.value) == (
        f"the claim's signature does not verify under device {KEY.key_id.hex()[:16]}…"
    )
    assert isinstance(info.value.__cause__, SignatureError)
    with pytest.raises(SignatureError):
        check_signature(signed, _device(DeviceKey.generate()))
    # the payload type is part of what is signed
    with pytest.raises(SignatureError):
        check_signature(replace(signed, payload_type=PAYLOAD_TYPE_ENROLL), _device())


def _other_thread_ran_during_the_check(signed: SignedClaim, **kw: bool) -> bool:
    """Whether another thread, waiting for the GIL, ran Python while check_claim_signature
    ran. The switch interval is raised so that the waiting thread only gets the GIL when
    this one gives it away (a blocking call, or C code that releases it)."""
    ran: list[int] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(100.0)

    def wait_then_run() -> None:
        time.sleep(0.02)  # gives the GIL away; then it waits for it
        ran.append(1)

    try:
        waiter = threading.Thread(target=wait_then_run)
        waiter.start()
        until = time.perf_counter() + 0.1  # busy, holding the GIL: the waiter now waits for it
        while time.perf_counter() < until:
            pass
        check_claim_signature(signed, KEY.public_key, **kw)
        seen = bool(ran)
    finally:
        sys.setswitchinterval(interval)
    waiter.join()
    return seen


def test_a_claim_signature_check_keeps_the_gil_unless_told_to_release_it() -> None:
    """The default keeps the GIL (an event loop's caller: no thread switch for a check of
    a small claim); release_gil=True (the writer's threads) lets other threads run Python
    during the check. The claim is 8 MB so that the check takes milliseconds."""
    data = bytes(8_000_000)
    signed = SignedClaim(
        PAYLOAD_TYPE_CLAIM, data, KEY.key_id, sign_payload(KEY, PAYLOAD_TYPE_CLAIM, data)
    )
    assert not _other_thread_ran_during_the_check(signed)
    assert not _other_thread_ran_during_the_check(signed, release_gil=False)
    # the waiter may be scheduled late on a loaded machine: a few tries
    assert any(_other_thread_ran_during_the_check(signed, release_gil=True) for _ in range(5))
    with pytest.raises(SignatureError, match="does not verify under device"):
        check_claim_signature(replace(signed, claim_bytes=data + b"\0"), KEY.public_key)


def test_revocation_is_in_force_from_its_time_on() -> None:
    check_not_revoked(_device(), NOW)
    revoked = _device(revoked_at=NOW, revocation_reason="lost phone")
    check_not_revoked(revoked, NOW - timedelta(microseconds=1))
    with pytest.raises(RevokedKeyError, match=r"revoked at 2026-11-29 12:00:00 UTC \(lost phone\)"):
        check_not_revoked(revoked, NOW)
    with pytest.raises(RevokedKeyError) as info:
        check_not_revoked(revoked, NOW + timedelta(days=3))
    assert str(info.value) == (
        f"device {KEY.key_id.hex()[:16]}… was revoked at 2026-11-29 12:00:00 UTC (lost phone);"
        " its claims are no longer accepted"
    )


def test_revoking_twice_keeps_the_earlier_time_with_its_reason() -> None:
    later = NOW + timedelta(hours=1)
    assert merged_revocation(_device(), NOW, "lost phone") == (NOW, "lost phone")
    revoked = _device(revoked_at=NOW, revocation_reason="lost phone")
    assert merged_revocation(revoked, later, "stolen") == (NOW, "lost phone")
    assert merged_revocation(revoked, NOW, "stolen") == (NOW, "lost phone")
    earlier = NOW - timedelta(microseconds=1)
    assert merged_revocation(revoked, earlier, "stolen") == (earlier, "stolen")


def test_chain_link_sequence_and_hash() -> None:
    prev = hashlib.sha256(b"previous claim").digest()
    assert chain_link(_claim(sequence=5, prev_claim_hash=prev), 4, prev) is True
    assert chain_link(_claim(sequence=6, prev_claim_hash=prev), 4, prev) is False  # gap
    assert chain_link(_claim(sequence=5, prev_claim_hash=bytes(32)), 4, prev) is False
    assert chain_link(_claim(sequence=1), 0, b"") is True
    for seq in (4, 3):
        with pytest.raises(SequenceError, match=f"sequence {seq} does not advance past .* 4"):
            chain_link(_claim(sequence=seq, prev_claim_hash=prev), 4, prev)


# ---------------------------------------------------------------- receipts


class _Log:
    """An in-memory log signed by SIGNER: entries, tree, signed notes of any prefix."""

    def __init__(self, entries: list[bytes]) -> None:
        self.entries: list[bytes] = []
        self.tree = merkle.MemoryTree()
        for e in entries:
            self.append(e)

    def append(self, entry: bytes) -> int:
        self.entries.append(entry)
        return self.tree.append(entry)

    def root(self, size: int) -> bytes:
        return merkle.root(size, self.tree.get_nodes)

    def note(self, size: int | None = None, signer: LogSigner = SIGNER) -> str:
        size = self.tree.size if size is None else size
        return signer.sign(Checkpoint(signer.name, size, self.root(size), NOW))


def _receipt_log(index: int = 3, size: int = 6) -> tuple[_Log, SignedClaim, Receipt]:
    signed = _sign(_claim())
    entry = wire.encode_log_entry(signed, NOW)
    log = _Log([entry if i == index else b"entry %d" % i for i in range(size)])
    proof = merkle.inclusion_proof(index, size, log.tree.get_nodes)
    return log, signed, Receipt(index, NOW, log.note(), tuple(proof), entry)


@pytest.mark.parametrize(("index", "size"), [(0, 1), (3, 6), (5, 6), (7, 8)])
def test_a_receipt_verifies_offline(index: int, size: int) -> None:
    log, signed, receipt = _receipt_log(index, size)
    checkpoint = verify_receipt(receipt, signed, VERIFIER)
    assert (checkpoint.size, checkpoint.root_hash, checkpoint.timestamp) == (
        size,
        log.root(size),
        NOW,
    )


def test_a_receipt_for_another_claim_is_refused() -> None:
    _, signed, receipt = _receipt_log()
    other = _sign(_claim(sequence=2))
    with pytest.raises(ProofError, match="holds a different claim"):
        verify_receipt(receipt, other, VERIFIER)


def test_a_receipt_whose_time_differs_from_its_entry_is_refused() -> None:
    _, signed, receipt = _receipt_log()
    with pytest.raises(ProofError, match="integration time differs"):
        verify_receipt(replace(receipt, integrated_at=NOW + timedelta(seconds=1)), signed, VERIFIER)


def test_a_receipt_outside_its_tree_is_refused() -> None:
    log, signed, receipt = _receipt_log(5, 6)
    small = replace(receipt, checkpoint=log.note(5))
    with pytest.raises(ProofError, match="leaf 5 is outside the checkpoint's tree of size 5"):
        verify_receipt(small, signed, VERIFIER)


@pytest.mark.parametrize("wrong_index", [2, 4, 5])
def test_a_receipt_with_a_wrong_index_or_path_is_refused(wrong_index: int) -> None:
    _, signed, receipt = _receipt_log(3, 6)
    with pytest.raises(ProofError):
        verify_receipt(replace(receipt, leaf_index=wrong_index), signed, VERIFIER)
    bad_path = (bytes(32),) + receipt.inclusion_proof[1:]
    with pytest.raises(ProofError):
        verify_receipt(replace(receipt, inclusion_proof=bad_path), signed, VERIFIER)


def test_a_receipt_is_rebuilt_from_the_store_byte_for_byte() -> None:
    log, signed, receipt = _receipt_log(3, 6)
    note = log.note()
    rebuilt = build_receipt(3, receipt.log_entry, NOW, (6, note), log.tree.get_nodes)
    assert rebuilt == receipt
    verify_receipt(rebuilt, signed, VERIFIER)
    # the first checkpoint whose tree holds the leaf: size 4 holds leaf 3
    early = build_receipt(3, receipt.log_entry, NOW, (4, log.note(4)), log.tree.get_nodes)
    assert early.inclusion_proof == tuple(merkle.inclusion_proof(3, 4, log.tree.get_nodes))
    assert verify_receipt(early, signed, VERIFIER).size == 4
    for covering in (None, (3, log.note(3))):
        with pytest.raises(
            LogIntegrityError, match="^no signed checkpoint covers log entry 3: the log database"
        ):
            build_receipt(3, receipt.log_entry, NOW, covering, log.tree.get_nodes)

    def missing(keys: object) -> list[bytes]:
        raise LogError("node (1, 0) is missing")

    with pytest.raises(
        LogIntegrityError,
        match=r"^the inclusion proof of log entry 3 cannot be read: node \(1, 0\) is missing$",
    ) as caught:
        build_receipt(3, receipt.log_entry, NOW, (6, note), missing)
    assert isinstance(caught.value.__cause__, LogError)


def test_a_receipt_signed_by_another_log_is_refused() -> None:
    log, signed, receipt = _receipt_log()
    other = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    with pytest.raises(SignatureError):
        verify_receipt(replace(receipt, checkpoint=log.note(signer=other)), signed, VERIFIER)


# ---------------------------------------------------------------- audit


def _entries(n: int, start: int = 0) -> list[bytes]:
    return [b"leaf %d" % i for i in range(start, start + n)]


VKEY = SIGNER.verifier_key()


def test_first_audit_checks_every_entry() -> None:
    log = _Log(_entries(5))
    state, checkpoint, checked = audit_step(None, VKEY, log.note(), [], log.entries)
    assert (checkpoint.size, checked) == (5, 5)
    assert state == AuditState(
        VKEY,
        log.note(),
        merkle.CompactRange.from_hashes(
            5,
            [
                log.tree.get_nodes([(2, 0)])[0],
                log.tree.get_nodes([(0, 4)])[0],
            ],
        ).hashes,
    )


def test_next_audit_checks_only_new_entries_with_a_consistency_proof() -> None:
    log = _Log(_entries(5))
    state, _, _ = audit_step(None, VKEY, log.note(), [], log.entries)
    for e in _entries(6, 5):
        log.append(e)
    proof = merkle.consistency_proof(5, 11, log.tree.get_nodes)
    new_state, checkpoint, checked = audit_step(state, VKEY, log.note(), proof, log.entries[5:])
    assert (checkpoint.size, checked) == (11, 6)
    assert new_state.checkpoint == log.note()
    # a full re-hash from the start checks all of them again
    _, _, checked = audit_step(state, VKEY, log.note(), proof, log.entries, from_start=True)
    assert checked == 11
    # nothing new: same size, same root, no entries
    _, _, checked = audit_step(new_state, VKEY, log.note(), [], [])
    assert checked == 0


def test_audit_from_an_empty_tree_needs_no_proof() -> None:
    log = _Log([])
    state, _, checked = audit_step(None, VKEY, log.note(0), [], [])
    assert (checked, state.frontier) == (0, ())
    for e in _entries(3):
        log.append(e)
    _, checkpoint, checked = audit_step(state, VKEY, log.note(), [], log.entries)
    assert (checkpoint.size, checked) == (3, 3)


def test_audit_detects_a_rollback() -> None:
    log = _Log(_entries(6))
    state, _, _ = audit_step(None, VKEY, log.note(), [], log.entries)
    with pytest.raises(
        LogIntegrityError, match="ROLLBACK: the log now claims 5 entries, fewer than the 6"
    ):
        audit_step(state, VKEY, log.note(5), [], [])


def test_audit_detects_a_fork_at_the_same_size() -> None:
    log = _Log(_entries(4))
    state, _, _ = audit_step(None, VKEY, log.note(), [], log.entries)
    forked = _Log(_entries(3) + [b"rewritten"])
    with pytest.raises(
        LogIntegrityError, match="FORK: two different signed roots for the same size 4"
    ):
        audit_step(state, VKEY, forked.note(), [], [])


def test_audit_detects_a_fork_by_its_consistency_proof() -> None:
    log = _Log(_entries(4))
    state, _, _ = audit_step(None, VKEY, log.note(), [], log.entries)
    forked = _Log([b"rewritten"] + _entries(7, 1))
    proof = merkle.consistency_proof(4, 8, forked.tree.get_nodes)
    with pytest.raises(
        LogIntegrityError, match="FORK: the tree of size 4 seen before is not a prefix"
    ) as info:
        audit_step(state, VKEY, forked.note(), proof, forked.entries[4:])
    assert isinstance(info.value.__cause__, ProofError)


def test_audit_detects_deleted_extra_and_edited_entries() -> None:
    log = _Log(_entries(6))
    with pytest.raises(LogIntegrityError, match="served 5 entries from index 0; .* there are 6"):
        audit_step(None, VKEY, log.note(), [], log.entries[:5])
    with pytest.raises(LogIntegrityError, match="more entries than its checkpoint's 6"):
        audit_step(None, VKEY, log.note(), [], [*log.entries, b"extra"])
    edited = [*log.entries[:2], b"edited", *log.entries[3:]]
    with pytest.raises(LogIntegrityError, match="do not hash to its signed root"):
        audit_step(None, VKEY, log.note(), [], edited)
    # edits to entries audited before are caught only by a re-hash from the start
    state, _, _ = audit_step(None, VKEY, log.note(), [], log.entries)
    log.append(b"leaf 6")
    proof = merkle.consistency_proof(6, 7, log.tree.get_nodes)
    edited.append(b"leaf 6")
    audit_step(state, VKEY, log.note(), proof, edited[6:])
    with pytest.raises(LogIntegrityError, match="do not hash"):
        audit_step(state, VKEY, log.note(), proof, edited, from_start=True)
    with pytest.raises(LogIntegrityError, match="served 0 entries from index 6; .* there are 1"):
        audit_step(state, VKEY, log.note(), proof, [])
    assert audit_step(state, VKEY, log.note(), proof, [b"leaf 6"])[2] == 1


def test_audit_trusts_only_the_log_key() -> None:
    log = _Log(_entries(3))
    other = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    with pytest.raises(LogIntegrityError, match="the newest checkpoint does not verify") as info:
        audit_step(None, VKEY, log.note(signer=other), [], log.entries)
    assert isinstance(info.value.__cause__, SignatureError)
    state, _, _ = audit_step(None, VKEY, log.note(), [], log.entries)
    forged = replace(state, checkpoint=log.note(signer=other))
    with pytest.raises(LogIntegrityError, match="the saved checkpoint does not verify"):
        audit_step(forged, VKEY, log.note(), [], [])
    with pytest.raises(LogIntegrityError, match="^x checkpoint"):
        open_trusted("not a note", VERIFIER, "x")


def test_audit_state_round_trips_and_refuses_damage() -> None:
    log = _Log(_entries(7))
    state, _, _ = audit_step(None, VKEY, log.note(), [], log.entries)
    text = state.to_json()
    assert text.endswith("}\n")
    assert AuditState.from_json(text) == state
    for damaged in (
        "{",
        "[]",
        '{"verifier_key": "k", "checkpoint": "c"}',
        '{"verifier_key": "k", "checkpoint": "c", "frontier": ["zz"]}',
    ):
        with pytest.raises(LogError, match="audit state file is damaged"):
            AuditState.from_json(damaged)


def test_an_audit_state_of_the_wrong_shape_is_damaged_in_words() -> None:
    """A state file that is JSON of another shape says what is wrong with it, not
    Python's words for the error it raised: "damaged: 'verifier_key'" (a KeyError's
    text), "'NoneType' object is not subscriptable", "maximum recursion depth exceeded
    while decoding a JSON array from a unicode string"."""
    log = _Log(_entries(3))
    state, _, _ = audit_step(None, VKEY, log.note(), [], log.entries)
    good = json.loads(state.to_json())
    cases = {
        "null": "it is not a JSON object",
        "[1]": "it is not a JSON object",
        "{}": "it has no verifier_key",
        json.dumps({**good, "checkpoint": 7}): "its checkpoint is not a string",
        json.dumps({**good, "frontier": "ab"}): "its frontier is not a list of hex strings",
        json.dumps({**good, "frontier": [1]}): "its frontier is not a list of hex strings",
        "[" * 100_000 + "]" * 100_000: "it is nested deeper than",
    }
    for text, words in cases.items():
        with pytest.raises(LogError) as info:
            AuditState.from_json(text)
        message = str(info.value)
        assert message.startswith(f"audit state file is damaged: {words}"), (text[:40], message)
        for python in ("'verifier_key'", "NoneType", "subscriptable", "recursion"):
            assert python not in message, message


def test_a_state_whose_key_or_checkpoint_was_changed_on_disk_is_damaged() -> None:
    """An audit saves only a checkpoint it verified, with the key that verified it. A
    state file whose key is no verifier key, or whose checkpoint no longer verifies with
    that key (a changed digit), was read and blamed on the log: "LOG INTEGRITY FAILURE:
    the server now presents log key ..., not the key saved in STATE, garbage" or "the
    saved checkpoint does not verify with the log key" (exit 3). Now it is a damaged
    state file (LogError, exit 1), saying to move it away."""
    log = _Log(_entries(7))
    state, _, _ = audit_step(None, VKEY, log.note(), [], log.entries)
    edited = state.checkpoint.replace("\n7\n", "\n6\n", 1)
    assert edited != state.checkpoint
    for damaged in (replace(state, verifier_key="garbage"), replace(state, checkpoint=edited)):
        with pytest.raises(LogError, match="audit state file is damaged.*move it away") as info:
            AuditState.from_json(damaged.to_json())
        assert not isinstance(info.value, LogIntegrityError), info.value


def test_a_damaged_saved_frontier_is_the_state_s_fault_not_the_log_s() -> None:
    """An incremental audit extends the saved frontier. One hash of it changed on the
    auditor's disk (a bit flip, a hand edit) made an honest log's next audit read "LOG
    INTEGRITY FAILURE: ... entries were edited behind the log's back" (exit 3), and a
    hash missing read "a frontier of size 5 has 2 hashes, got 1". Now the frontier is
    checked against the saved checkpoint's root first: the state file is damaged (a
    LogError, not a LogIntegrityError). A full re-hash does not use it, so it still runs
    and saves a good state."""
    log = _Log(_entries(5))
    state, _, _ = audit_step(None, VKEY, log.note(), [], log.entries)
    for e in _entries(3, 5):
        log.append(e)
    proof = merkle.consistency_proof(5, 8, log.tree.get_nodes)
    for frontier in ((bytes(32), *state.frontier[1:]), state.frontier[:1]):
        damaged = replace(state, frontier=frontier)
        with pytest.raises(LogError, match="audit state file is damaged") as info:
            audit_step(damaged, VKEY, log.note(), proof, log.entries[5:])
        assert not isinstance(info.value, LogIntegrityError), info.value
        assert "--full" in str(info.value), info.value  # what to do, a hash missing too
        repaired, _, checked = audit_step(damaged, VKEY, log.note(), proof, log.entries, True)
        assert checked == 8 and audit_step(repaired, VKEY, log.note(), [], [])[2] == 0


def test_key_history_is_read_out_of_the_audited_entries() -> None:
    admin = KeySigner.of(DeviceKey.from_private_bytes(hashlib.sha256(b"admin").digest()))
    ev = KeyEvent(KeyEventKind.REVOCATION, KEY.key_id, NOW, reason="lost phone")
    signed = sign_key_event(admin, wire.encode_key_event(ev))
    forged = SignedKeyEvent(signed.event_bytes, signed.signer_public_key, bytes(64))
    claim_entry = wire.encode_log_entry(_sign(_claim()), NOW)
    entries = [
        claim_entry,
        wire.encode_key_event_entry(signed, NOW),
        b"\xff not protobuf",
        wire.encode_key_event_entry(forged, NOW),
    ]
    reader = KeyHistoryReader()
    assert list(reader.tap(entries, start=10)) == entries  # passed through unchanged
    assert list(reader.logged_rows()) == [(11, KEY.key_id, int(KeyEventKind.REVOCATION))]
    assert reader.states == replay([LoggedKeyEvent(11, NOW, signed, ev)])
    assert (reader.enrollments, reader.revocations) == (0, 1)
    assert len(reader.problems) == 2
    assert reader.problems[0].startswith("log entry 12 is not a valid claim or key event: ")
    assert re.match(
        "log entry 13 is not a valid claim or key event: the key-history entry's signature",
        reader.problems[1],
    )
    fresh = KeyHistoryReader()
    list(fresh.tap(entries[1:2]))
    assert [row[0] for row in fresh.logged_rows()] == [0] and fresh.problems == []


def test_a_reader_told_to_keep_no_rows_keeps_nothing_an_event() -> None:
    """The online audit never compares ``key_events`` rows (only --db has the table), so
    its reader keeps no (leaf, device, kind) row an event: only the fold, the counts and
    the problems. Asking it for rows is refused, not answered with an empty list (which
    would read as "no key event logged"). Before (revkeymem60): no such reader; every
    online audit kept 17 bytes an event it never read (18.1 bytes an event retained for
    20,000 revocations of one device, tracemalloc; with ``rows=False`` 0.1)."""
    admin = KeySigner.of(DeviceKey.from_private_bytes(hashlib.sha256(b"admin").digest()))
    events = [
        KeyEvent(KeyEventKind.ENROLLMENT, KEY.key_id, NOW, public_key=KEY.public_key),
        KeyEvent(KeyEventKind.REVOCATION, KEY.key_id, NOW, reason="lost phone"),
    ]
    entries = [
        wire.encode_key_event_entry(sign_key_event(admin, wire.encode_key_event(ev)), NOW)
        for ev in events
    ]
    kept, lean = KeyHistoryReader(), KeyHistoryReader(rows=False)
    for reader in (kept, lean):
        assert list(reader.tap([b"\xff not protobuf", *entries])) == [
            b"\xff not protobuf",
            *entries,
        ]
    assert lean.states == kept.states and lean.problems == kept.problems
    assert (lean.enrollments, lean.revocations) == (kept.enrollments, kept.revocations) == (1, 1)
    assert [row[0] for row in kept.logged_rows()] == [1, 2]
    with pytest.raises(ValueError, match="kept no rows"):
        lean.logged_rows()


@pytest.mark.parametrize("unreadable", [1, MAX_PROBLEMS + 3])
def test_the_registry_compared_with_the_key_history_names_at_most_max_problems(
    unreadable: int,
) -> None:
    """Every device whose registry row is gone is one problem, after the entries that do
    not decode, each kind bounded apart: past `MAX_PROBLEMS` of a kind they are counted
    (h-keymem60: before, one sentence kept per device, of 10^6 on a national deployment).
    Unreadable entries leave room for the registry's sentences (before, 20 of them hid
    every deleted revocation or enrollment behind the count)."""
    admin = KeySigner.of(DeviceKey.from_private_bytes(hashlib.sha256(b"admin").digest()))
    entries = [b"\xff not protobuf"] * unreadable
    for i in range(MAX_PROBLEMS + 5):
        key = DeviceKey.from_private_bytes(hashlib.sha256(b"device %d" % i).digest())
        ev = KeyEvent(KeyEventKind.ENROLLMENT, key.key_id, NOW, public_key=key.public_key)
        entries.append(
            wire.encode_key_event_entry(sign_key_event(admin, wire.encode_key_event(ev)), NOW)
        )
    reader = KeyHistoryReader()
    list(reader.tap(entries))
    asked: list[bytes] = []

    def no_row(device_id: bytes) -> Device | None:
        asked.append(device_id)
        return None

    reader.compare_registry(no_row)
    assert asked == [row[1] for row in reader.logged_rows()]  # in log order
    assert reader.enrollments == MAX_PROBLEMS + 5
    listed = min(unreadable, MAX_PROBLEMS)
    assert len(reader.problems) == listed + MAX_PROBLEMS
    assert reader.problems[0].startswith("log entry 0 is not a valid claim or key event")
    assert reader.problems[listed].endswith(
        f"enrolled in log entry {unreadable}, but the registry row is gone (deleted behind the"
        " log's back)"
    )
    assert reader.more == (unreadable - listed) + 5


def test_audit_state_file_is_indented_json() -> None:
    log = _Log(_entries(1))
    state, _, _ = audit_step(None, VKEY, log.note(), [], log.entries)
    assert state.to_json().startswith('{\n  "verifier_key": ')


# ---------------------------------------------------------------- log key files


def test_log_key_file_errors_name_the_file_and_the_cause(tmp_path: Path) -> None:
    missing = tmp_path / "missing.key"
    with pytest.raises(ConfigError, match="cannot open log key file .*missing.key: No such file"):
        load_log_signer(missing, ORIGIN)
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"not a key")
    garbage.chmod(0o600)
    with pytest.raises(KeyMaterialError, match="garbage.key holds no readable private key"):
        load_log_signer(garbage, ORIGIN)
    with pytest.raises(ConfigError, match="cannot create log key file .*: No such file"):
        generate_log_key(tmp_path / "no" / "such" / "dir.key", ORIGIN)
    made = generate_log_key(tmp_path / "log.key", ORIGIN)
    with pytest.raises(ConfigError, match="already exists; not overwriting it"):
        generate_log_key(tmp_path / "log.key", ORIGIN)
    assert load_log_signer(tmp_path / "log.key", ORIGIN).public_key == made.public_key


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("sequence", {"sequence": 1 << 63}),
        ("size_bytes", {"size_bytes": 1 << 63}),
        (  # a chunk a byte: the file (a video's: chunked) is as many bytes as it has chunks
            "hard_binding.chunk_count",
            {
                "media_type": "video/mp4",
                "duration_seconds": 1.0,
                "size_bytes": MAX_STORED_INT,
                "hard_binding": HardBinding(bytes(32), 1, 1 << 63, bytes(32)),
            },
        ),
    ],
)
def test_integers_the_log_stores_must_fit_63_bits(field: str, changes: dict[str, object]) -> None:
    limit = MAX_STORED_INT
    at_limit = {
        k: (
            replace(v, chunk_count=limit)
            if isinstance(v, HardBinding)
            else limit
            if isinstance(v, int)
            else v
        )
        for k, v in changes.items()
    }
    fits = _claim(**at_limit)
    check_claim_shape(_sign(fits), fits)
    over = _claim(**changes)
    with pytest.raises(
        ClaimError,
        match=re.escape(f"the claim's {field} is {limit + 1}; the log stores at most {limit}"),
    ):
        check_claim_shape(_sign(over), over)


def test_audit_of_an_unchanged_tree_ignores_any_proof_and_forks_from_size_one() -> None:
    log = _Log(_entries(4))
    state, _, _ = audit_step(None, VKEY, log.note(), [], log.entries)
    assert audit_step(state, VKEY, log.note(), [b"\x00" * 32], [])[2] == 0
    one = _Log(_entries(1))
    state, _, _ = audit_step(None, VKEY, one.note(), [], one.entries)
    forked = _Log([b"rewritten"] + _entries(3, 1))
    proof = merkle.consistency_proof(1, 4, forked.tree.get_nodes)
    with pytest.raises(LogIntegrityError, match="FORK: the tree of size 1"):
        audit_step(state, VKEY, forked.note(), proof, forked.entries[1:])


# ---------------------------------------------------------------- checkpoints and notes

ROOT_B64 = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"o\n1\n{ROOT_B64}", "must end with a newline and have no control characters"),
        (f"o\n1\n{ROOT_B64}\x07\n", "must end with a newline and have no control characters"),
        ("o\n1\n\n", "needs origin, size and root lines, none empty"),
        (f"o\n01\n{ROOT_B64}\n", "size '01' is not a decimal without leading zeros"),
        ("o\n1\n@@@@\n", "checkpoint root is not base64"),
        ("o\n1\nAAE=\n", "checkpoint root is 2 bytes, want 32"),
        ("o\n1\nAAF=\n", "checkpoint root is not in canonical base64"),
        (f"o\n1\n{ROOT_B64}\nfoo\n", "unknown checkpoint extension lines \\['foo'\\]"),
        (
            f"o\n1\n{ROOT_B64}\ntime 2026-11-29T12:00:00Z\ntime 2026-11-29T12:00:00Z\n",
            "unknown checkpoint extension lines",
        ),
        (f"o\n1\n{ROOT_B64}\ntime 2026-11-29 12:00:00\n", "is not RFC 3339 UTC"),
        (f"o\n1\n{ROOT_B64}\ntime 2026-02-30T12:00:00Z\n", "is not a valid date and time"),
        (f"o\n1\n{ROOT_B64}\ntime 2026-11-29T12:00:00.000000Z\n", "is not in canonical form"),
    ],
)
def test_checkpoint_bodies_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(LogError, match=message):
        Checkpoint.parse_body(text)


def test_checkpoint_fields_are_checked_with_the_reason() -> None:
    with pytest.raises(LogError, match="origin '' is empty or has control characters"):
        Checkpoint("", 1, bytes(32))
    with pytest.raises(LogError, match="size -1 is negative"):
        Checkpoint("o", -1, bytes(32))
    with pytest.raises(LogError, match="root is 31 bytes, want 32"):
        Checkpoint("o", 1, bytes(31))


def test_checkpoint_times_are_written_in_utc_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        body = Checkpoint("o", 1, bytes(32), NOW).body().decode()
    finally:
        monkeypatch.undo()
        time.tzset()
    assert body.endswith("time 2026-11-29T12:00:00Z\n")


def _foreign_line(name: str, raw: bytes) -> str:
    return f"\u2014 {name} {base64.b64encode(raw).decode()}\n"


def test_notes_open_at_their_last_blank_line_and_edge_sizes() -> None:
    for text in ("\n", "a\n\nb\n"):
        assert VERIFIER.open(SIGNER.sign_text(text)) == text
    note = SIGNER.sign_text("body\n")
    # a five-byte signature (key id and one byte) of another key is a signature line
    short = note + _foreign_line("other", b"\x01\x02\x03\x04\x05")
    assert VERIFIER.open(short) == "body\n"
    with pytest.raises(LogError, match="signature of other is 4 bytes, too short"):
        VERIFIER.open(note + _foreign_line("other", b"\x01\x02\x03\x04"))
    # exactly MAX_SIGNATURES lines are accepted, one more is refused
    full = note + _foreign_line("other", bytes(68)) * 99
    assert VERIFIER.open(full) == "body\n"
    with pytest.raises(LogError, match="101 signatures, more than 100"):
        VERIFIER.open(full + _foreign_line("other", bytes(68)))


@pytest.mark.parametrize(
    ("note", "message"),
    [
        ("body\n\n\u2014 n AAAA\n\x07", "signed note has control characters"),
        ("body\n\u2014 n AAAA\n", "no blank line before its signatures"),
        ("body\n\n\u2014 n AAAA", "must end with a signature line and a newline"),
        ("body\n\n- n AAAA\n", "does not start with '\u2014 '"),
        ("body\n\n\u2014 nAAAA\n", "is not '\u2014 <name> <base64>'"),
        ("body\n\n\u2014 n AAAA BBBB\n", "signature of n is not base64"),
    ],
)
def test_malformed_notes_are_refused_with_the_reason(note: str, message: str) -> None:
    with pytest.raises(LogError, match=re.escape(message)):
        VERIFIER.open(note)


def test_a_raw_signature_is_the_log_key_s_ed25519_signature_of_the_message() -> None:
    # for the signed messages of other note formats (witness cosignatures)
    signature = SIGNER.sign_message(b"cosignature/v1\ntime 1\n")
    assert len(signature) == 64
    Ed25519PublicKey.from_public_bytes(SIGNER.public_key).verify(
        signature, b"cosignature/v1\ntime 1\n"
    )


def test_note_text_must_end_with_a_newline() -> None:
    for text in ("no newline", "bell\x07\n"):
        with pytest.raises(LogError, match="must end with a newline and have no control"):
            SIGNER.sign_text(text)


def test_verifier_keys_are_refused_with_the_reason() -> None:
    good = SIGNER.verifier_key()
    name, kid, material = good.split("+")
    assert NoteVerifier.from_vkey(good).public_key == SIGNER.public_key
    assert NoteVerifier(ORIGIN, SIGNER.public_key).public_key == SIGNER.public_key
    other_type = base64.b64encode(b"\x02" + SIGNER.public_key).decode()
    cases = [
        ("nokey", "is not <name>\\+<key id>\\+<key>"),
        (f"{name}+XYZ+{material}", "key id 'XYZ' is not 8 lowercase hex digits"),
        (f"{name}+{kid}+@@@@", "verifier key material is not base64"),
        (f"{name}+{kid}+{other_type}", "is not an Ed25519 key \\(type 0x01 and 32 bytes\\)"),
        (f"{name}+00000000+{material}", f"key id 00000000 does not match the key \\({kid}\\)"),
    ]
    for vkey, message in cases:
        with pytest.raises(LogError, match=message):
            NoteVerifier.from_vkey(vkey)


# ---------------------------------------------------------------- Ed25519 strictness


def test_a_signature_whose_s_is_exactly_the_group_order_is_non_canonical() -> None:
    sig = KEY.sign(b"m")
    order = 2**252 + 27742317777372353535851937790883648493
    with pytest.raises(SignatureError, match="non-canonical S"):
        verify_strict(KEY.public_key, b"m", sig[:32] + order.to_bytes(32, "little"))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_strict(KEY.public_key, b"m", sig[:32] + (order - 1).to_bytes(32, "little"))


def test_point_doubling_stays_on_the_curve() -> None:
    """The small-order check doubles points; a wrong addition law would leave the curve
    (-x^2 + y^2 = 1 + d x^2 y^2, RFC 8032 section 5.1)."""
    p, d = 2**255 - 19, (-121665 * pow(121666, -1, 2**255 - 19)) % (2**255 - 19)
    for i in range(8):
        point = keys_module._decode_point(
            DeviceKey.from_private_bytes(hashlib.sha256(b"%d" % i).digest()).public_key
        )
        for _ in range(3):
            point = keys_module._add(point, point)
            x, y = point
            assert (-x * x + y * y) % p == (1 + d * x * x * y * y) % p


#: The flags of Scotland and Wales: WAVING BLACK FLAG, the tags "gbsct" or "gbwls" (U+E0020
#: plus the ASCII letter) and CANCEL TAG (UTS #51 §2.3.3).
SCOTLAND = "\U0001f3f4" + "".join(chr(0xE0000 + ord(c)) for c in "gbsct") + "\U000e007f"
WALES = "\U0001f3f4" + "".join(chr(0xE0000 + ord(c)) for c in "gbwls") + "\U000e007f"


def _tagged(text: str) -> str:
    """WAVING BLACK FLAG, ``text`` (ASCII) as tag characters, CANCEL TAG."""
    return "\U0001f3f4" + "".join(chr(0xE0000 + ord(c)) for c in text) + "\U000e007f"


@pytest.mark.parametrize(
    "label",
    [
        "\u062f\u0648\u0631\u0628\u06cc\u0646\u200c\u0647\u0627",  # Persian 'cameras': ZWNJ
        "\u0915\u094d\u200d\u0937 \u0915\u0948\u092e\u0930\u093e",  # Devanagari half form: ZWJ
        "studio \U0001f469\u200d\U0001f4bb 2",  # an emoji ZWJ sequence (woman technologist)
        "\u0643\u0627\u0645\u064a\u0631\u0627 \u0627\u0644\u0645\u0643\u062a\u0628",  # Arabic
        "\u30ab\u30e1\u30e9\uff13",  # Japanese, a full-width digit
        f"{SCOTLAND} camera",  # an emoji tag sequence (UTS #51 §2.3.3)
        f"{SCOTLAND}{WALES}\U0001f3f4",  # two, and a flag with no tags
        _tagged("ustx") + _tagged("fr75c") + _tagged("123ab"),  # CLDR ids
    ],
    ids=[
        "persian-zwnj",
        "devanagari-zwj",
        "emoji-zwj",
        "arabic",
        "japanese",
        "flag",
        "flags",
        "subdivisions",
    ],
)
def test_labels_in_scripts_that_join_with_zwj_or_zwnj_are_kept(label: str) -> None:
    """ZERO WIDTH NON-JOINER and JOINER (U+200C, U+200D, category Cf) are part of how
    Persian and Indic words and emoji sequences are written (Unicode 15, section 23.2);
    they reorder nothing, and the terminal and the web pages show them as they are
    (`provenance.terminal.UNSAFE` leaves them), so a label holding one is kept."""
    check_label(label)


@pytest.mark.parametrize(
    ("label", "words"),
    [
        ("cam\u200bera", "a format character (U+200B) at character 4"),
        ("cam\u202eera", "a format character (U+202E) at character 4"),
        ("cam\x1bera", "a control character (U+001B) at character 4"),
        ("\u200dcamera", "a format character (U+200D) at character 1"),
        ("camera\u200c", "a format character (U+200C) at character 7"),
        ("cam\U000e0041era", "a format character (U+E0041) at character 4"),
        ("\U0001f3f4\U000e0067\U000e0062 cam", "a format character (U+E0067) at character 2"),
        ("\U0001f3f4\U000e007f cam", "a format character (U+E007F) at character 2"),
        ("x\U000e0067\U000e0062\U000e007f", "a format character (U+E0067) at character 2"),
        (f"{SCOTLAND}\U000e0067\U000e007f", "a format character (U+E0067) at character 8"),
        ("\U0001f3f4\U000e0067\u200d\U000e007f", "a format character (U+E0067) at character 2"),
        # tags that are no subdivision code: hidden text ("ASCII smuggling"), upper case,
        # too short or too long
        (
            f"cam {_tagged('IGNORE THE OTHER DEVICES')}",
            "a format character (U+E0049) at character 6",
        ),
        (f"cam {_tagged('gb sct')}", "a format character (U+E0067) at character 6"),
        (_tagged("GBSCT"), "a format character (U+E0047) at character 2"),
        (_tagged("gb"), "a format character (U+E0067) at character 2"),
        (_tagged("gbabcde"), "a format character (U+E0067) at character 2"),
        (_tagged("12ab"), "a format character (U+E0031) at character 2"),
    ],
    ids=[
        "zwsp",
        "bidi-override",
        "escape",
        "leading-zwj",
        "trailing-zwnj",
        "stray-tag",
        "tags-not-cancelled",
        "cancel-tag-alone",
        "tags-after-no-flag",
        "tags-after-a-sequence",
        "tags-broken-by-a-joiner",
        "tags-hiding-text",
        "tags-with-a-space",
        "tags-upper-case",
        "tags-too-short",
        "tags-too-long",
        "tags-region-of-two-digits",
    ],
)
def test_labels_with_other_invisible_characters_are_refused_saying_which(
    label: str, words: str
) -> None:
    """Other format characters (a zero-width space, a bidirectional override), controls,
    a joiner at either end, where it joins nothing, and tag characters but in a
    valid emoji tag sequence (after WAVING BLACK FLAG, a subdivision code such as
    "gbsct", then CANCEL TAG) are refused, the message naming the kind of character and
    where it is. Before, any tags after the flag were kept, hidden text included."""
    with pytest.raises(ClaimError, match=re.escape(words)):
        check_label(label)
