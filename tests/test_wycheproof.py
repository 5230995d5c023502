"""Strict Ed25519 verification against Wycheproof, and refusal of small-order keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from provenance.errors import KeyMaterialError, SignatureError
from provenance.keys import DeviceKey, check_public_key, verify_strict

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
WYCHEPROOF = json.loads((FIXTURES / "wycheproof" / "ed25519_test.json").read_text())
CASES: list[tuple[bytes, dict[str, Any]]] = [
    (bytes.fromhex(group["publicKey"]["pk"]), test)
    for group in WYCHEPROOF["testGroups"]
    for test in group["tests"]
]

P = 2**255 - 19

# The eight points of order dividing 8 on edwards25519, canonically encoded: the identity,
# the point of order 2, two of order 4 and four of order 8 (the y values of libsodium's
# ge25519_has_small_order blocklist, each with both signs of x where x != 0).
SMALL_ORDER = [
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    )
]
# Non-canonical encodings: x = 0 with the sign bit set (identity, order 2), and every
# y >= p with either sign bit (y = p and y = p + 1 alias the small-order points y = 0, 1).
NON_CANONICAL = [
    bytes.fromhex("0100000000000000000000000000000000000000000000000000000000000080"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
] + [(y | sign << 255).to_bytes(32, "little") for y in range(P, 2**255) for sign in (0, 1)]


def test_fixture_has_151_cases() -> None:
    assert len(CASES) == WYCHEPROOF["numberOfTests"] == 151
    assert sum(t["result"] == "valid" for _, t in CASES) == 88


@pytest.mark.parametrize(("public_key", "case"), CASES, ids=[f"tc{t['tcId']}" for _, t in CASES])
def test_wycheproof_vector(public_key: bytes, case: dict[str, Any]) -> None:
    message = bytes.fromhex(case["msg"])
    signature = bytes.fromhex(case["sig"])
    if case["result"] == "valid":
        verify_strict(public_key, message, signature)
    else:
        with pytest.raises((SignatureError, KeyMaterialError)):
            verify_strict(public_key, message, signature)


@pytest.mark.parametrize("public_key", SMALL_ORDER, ids=lambda k: k.hex()[:8] + k.hex()[-2:])
def test_small_order_keys_are_refused(public_key: bytes) -> None:
    with pytest.raises(KeyMaterialError, match="small order"):
        check_public_key(public_key)


@pytest.mark.parametrize("public_key", NON_CANONICAL, ids=lambda k: k.hex()[:4] + k.hex()[-2:])
def test_non_canonical_encodings_are_refused(public_key: bytes) -> None:
    with pytest.raises(KeyMaterialError, match="non-canonical"):
        check_public_key(public_key)


@pytest.mark.parametrize("public_key", SMALL_ORDER, ids=lambda k: k.hex()[:8] + k.hex()[-2:])
def test_small_order_keys_admit_forgeries_that_verify_strict_refuses(public_key: bytes) -> None:
    # With R = identity and S = 0, [S]B = R + [k]A holds whenever [k]A = identity, i.e. for
    # about one message in ord(A) <= 8, without any private key. OpenSSL accepts such a
    # universal forgery; verify_strict must not.
    forged = SMALL_ORDER[0] + bytes(32)
    verifier = Ed25519PublicKey.from_public_bytes(public_key)
    forged_messages = []
    for i in range(200):
        message = b"claim %d" % i
        try:
            verifier.verify(forged, message)
        except InvalidSignature:
            continue
        forged_messages.append(message)
    assert forged_messages
    for message in forged_messages:
        with pytest.raises(KeyMaterialError, match="small order"):
            verify_strict(public_key, message, forged)


def test_encoding_off_the_curve_is_refused() -> None:
    # y = 2: (y^2 - 1) / (d y^2 + 1) has no square root mod p.
    with pytest.raises(KeyMaterialError, match="not a point"):
        check_public_key((2).to_bytes(32, "little"))


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_length_key_is_refused(length: int) -> None:
    with pytest.raises(KeyMaterialError, match=f"got {length}"):
        check_public_key(bytes(length))


def test_ordinary_keys_are_accepted() -> None:
    for public_key in {pk for pk, _ in CASES}:
        check_public_key(public_key)
    for _ in range(20):
        check_public_key(DeviceKey.generate().public_key)
