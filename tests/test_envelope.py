"""DSSE pre-authentication encoding and domain-separated signatures."""

from __future__ import annotations

import pytest

from provenance.core.envelope import (
    PAYLOAD_TYPE_CLAIM,
    PAYLOAD_TYPE_ENROLL,
    pae,
    sign_payload,
    verify_payload,
)
from provenance.core.errors import SignatureError
from provenance.core.keys import DeviceKey, verify_strict
from tests.gil import holds_the_gil

KEY = DeviceKey.from_private_bytes(bytes(range(32)))
CLAIM = b"\x08\x01\x12\x20" + bytes(range(32)) + b"\x18\x07"


def test_pae_matches_dsse_spec_example() -> None:
    # DSSE protocol.md, "Test Vectors".
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_lengths_are_utf8_byte_counts() -> None:
    assert pae("", b"") == b"DSSEv1 0  0 "
    assert pae("\u00e9", b"\x00\xff") == b"DSSEv1 2 \xc3\xa9 2 \x00\xff"
    assert pae(PAYLOAD_TYPE_ENROLL, b"x" * 1000).startswith(
        b"DSSEv1 36 application/vnd.provenance.enroll.v1 1000 x"
    )


def test_pae_is_unambiguous_where_spaces_move() -> None:
    assert pae("a b", b"c") != pae("a", b"b c")
    assert pae("a", b"1 b") != pae("a 1", b"b")


def test_sign_and_verify_claim() -> None:
    signature = sign_payload(KEY, PAYLOAD_TYPE_CLAIM, CLAIM)
    assert len(signature) == 64
    verify_payload(KEY.public_key, PAYLOAD_TYPE_CLAIM, CLAIM, signature)
    # The signature is over the PAE, exactly.
    verify_strict(KEY.public_key, pae(PAYLOAD_TYPE_CLAIM, CLAIM), signature)


def test_signature_for_one_payload_type_never_verifies_as_another() -> None:
    claim_signature = sign_payload(KEY, PAYLOAD_TYPE_CLAIM, CLAIM)
    enroll_signature = sign_payload(KEY, PAYLOAD_TYPE_ENROLL, CLAIM)
    with pytest.raises(SignatureError):
        verify_payload(KEY.public_key, PAYLOAD_TYPE_ENROLL, CLAIM, claim_signature)
    with pytest.raises(SignatureError):
        verify_payload(KEY.public_key, PAYLOAD_TYPE_CLAIM, CLAIM, enroll_signature)
    with pytest.raises(SignatureError):
        verify_payload(KEY.public_key, PAYLOAD_TYPE_CLAIM.upper(), CLAIM, claim_signature)


def test_raw_signature_over_payload_alone_does_not_verify() -> None:
    with pytest.raises(SignatureError):
        verify_payload(KEY.public_key, PAYLOAD_TYPE_CLAIM, CLAIM, KEY.sign(CLAIM))


def test_every_flipped_signature_bit_fails() -> None:
    signature = sign_payload(KEY, PAYLOAD_TYPE_CLAIM, CLAIM)
    for bit in range(len(signature) * 8):
        flipped = bytearray(signature)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(SignatureError):
            verify_payload(KEY.public_key, PAYLOAD_TYPE_CLAIM, CLAIM, bytes(flipped))


def test_every_flipped_payload_bit_fails() -> None:
    signature = sign_payload(KEY, PAYLOAD_TYPE_CLAIM, CLAIM)
    for bit in range(len(CLAIM) * 8):
        flipped = bytearray(CLAIM)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(SignatureError):
            verify_payload(KEY.public_key, PAYLOAD_TYPE_CLAIM, bytes(flipped), signature)


def test_flipped_public_key_bit_fails() -> None:
    signature = sign_payload(KEY, PAYLOAD_TYPE_CLAIM, CLAIM)
    for bit in range(0, 256, 7):
        flipped = bytearray(KEY.public_key)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(SignatureError):
            verify_payload(bytes(flipped), PAYLOAD_TYPE_CLAIM, CLAIM, signature)


def test_small_order_key_is_refused_as_signature_error() -> None:
    identity = bytes([1]) + bytes(31)
    with pytest.raises(SignatureError, match="public key refused: .*small order"):
        verify_payload(identity, PAYLOAD_TYPE_CLAIM, CLAIM, identity + bytes(32))


def test_verification_holds_the_gil_unless_told_to_release_it() -> None:
    """As `verify_strict`: the GIL is kept through the check by default (an event loop's
    thread) and given away with ``release_gil`` (the log writer's thread). A 32 MiB
    payload takes tens of milliseconds to verify, long enough to see which."""
    payload = bytes(32 << 20)
    signature = sign_payload(KEY, PAYLOAD_TYPE_CLAIM, payload)

    def verify(**release: bool) -> None:
        verify_payload(KEY.public_key, PAYLOAD_TYPE_CLAIM, payload, signature, **release)

    assert holds_the_gil(verify)
    assert holds_the_gil(lambda: verify(release_gil=False))
    assert not holds_the_gil(lambda: verify(release_gil=True))
