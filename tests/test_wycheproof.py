"""Strict Ed25519 verification against Wycheproof, and refusal of small-order keys."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

from provenance.core.errors import KeyMaterialError, SignatureError
from provenance.core.keys import DeviceKey, check_public_key, checked_public_key, verify_strict

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


@pytest.mark.parametrize("release_gil", [False, True], ids=["gil-held", "gil-released"])
@pytest.mark.parametrize(("public_key", "case"), CASES, ids=[f"tc{t['tcId']}" for _, t in CASES])
def test_wycheproof_vector(public_key: bytes, case: dict[str, Any], release_gil: bool) -> None:
    # libsodium called holding the GIL (the event loop) or giving it away (the log writer)
    message = bytes.fromhex(case["msg"])
    signature = bytes.fromhex(case["sig"])
    if case["result"] == "valid":
        verify_strict(public_key, message, signature, release_gil=release_gil)
    else:
        with pytest.raises((SignatureError, KeyMaterialError)):
            verify_strict(public_key, message, signature, release_gil=release_gil)


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


L = 2**252 + 27742317777372353535851937790883648493


@pytest.mark.parametrize(("public_key", "case"), CASES, ids=[f"tc{t['tcId']}" for _, t in CASES])
def test_libsodium_alone_agrees_with_wycheproof(public_key: bytes, case: dict[str, Any]) -> None:
    # verify_strict uses libsodium (crypto_sign_open) for the equation: it must give every
    # vector's answer by itself, not only through our key and S checks in front of it.
    message = bytes.fromhex(case["msg"])
    signature = bytes.fromhex(case["sig"])
    if case["result"] == "valid":
        assert crypto_sign_open(signature + message, public_key) == message
    else:
        with pytest.raises((BadSignatureError, ValueError)):
            crypto_sign_open(signature + message, public_key)


def _small_order_r_signature(seed: bytes, message: bytes) -> bytes:
    # A signature only the key's owner can make: R = identity, S = k * a mod L, so that
    # [S]B = [k]A = R + [k]A holds (RFC 8032 section 5.1.7, cofactorless).
    key = DeviceKey.from_private_bytes(seed)
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    r = SMALL_ORDER[0]
    k = int.from_bytes(hashlib.sha512(r + key.public_key + message).digest(), "little") % L
    return r + (k * a % L).to_bytes(32, "little")


def test_small_order_r_is_judged_as_openssl_judges_it() -> None:
    # libsodium refuses an R of small order; OpenSSL accepts it when the equation holds.
    # verify_strict re-checks exactly those with OpenSSL, so its accepted set is OpenSSL's.
    seed = os.urandom(32)
    key = DeviceKey.from_private_bytes(seed)
    signature = _small_order_r_signature(seed, b"capture")
    Ed25519PublicKey.from_public_bytes(key.public_key).verify(signature, b"capture")
    with pytest.raises(BadSignatureError):
        crypto_sign_open(signature + b"capture", key.public_key)
    verify_strict(key.public_key, b"capture", signature)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_strict(key.public_key, b"capture!", signature)


def test_a_key_is_checked_once_then_remembered() -> None:
    key = DeviceKey.generate()
    before = checked_public_key.cache_info()
    for i in range(5):
        verify_strict(key.public_key, b"m%d" % i, key.sign(b"m%d" % i))
    after = checked_public_key.cache_info()
    assert after.misses - before.misses == 1
    assert after.hits - before.hits == 4
    # A refused key is never remembered: every use raises again.
    for _ in range(2):
        with pytest.raises(KeyMaterialError, match="small order"):
            verify_strict(SMALL_ORDER[4], b"m", bytes(64))


# Affine edwards25519 arithmetic (RFC 8032 section 5.1), written out here so that the
# signature below does not depend on the module under test.
D = -121665 * pow(121666, -1, P) % P


def _point(encoded: bytes) -> tuple[int, int]:
    raw = int.from_bytes(encoded, "little")
    y = raw & ((1 << 255) - 1)
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    if v * x * x % P != u:
        x = x * pow(2, (P - 1) // 4, P) % P
    if x & 1 != raw >> 255:
        x = P - x
    return x, y


def _encode(point: tuple[int, int]) -> bytes:
    x, y = point
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _plus(p1: tuple[int, int], p2: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = p1, p2
    t = D * x1 * x2 * y1 * y2 % P
    return (x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P


@pytest.mark.parametrize("r", [SMALL_ORDER[4], SMALL_ORDER[7]], ids=["sign-0", "sign-1"])
def test_small_order_r_of_order_8_is_judged_as_openssl_judges_it(r: bytes) -> None:
    # The key A = [a]B + T, T of order 8, is not of small order ([8]A = [8a]B), so it is
    # accepted; with S = k * a, [S]B - [k]A = -[k]T, which is T itself when k = 7 mod 8.
    # Such an R (of order 8, sign bit either way) goes to the OpenSSL re-check as the
    # identity does, whatever its last byte.
    seed = bytes(range(32))
    h = hashlib.sha512(seed).digest()
    a = (int.from_bytes(h[:32], "little") & ((1 << 254) - 8)) | 1 << 254
    public_key = _encode(_plus(_point(DeviceKey.from_private_bytes(seed).public_key), _point(r)))
    check_public_key(public_key)
    for i in range(200):
        message = b"capture %d" % i
        k = int.from_bytes(hashlib.sha512(r + public_key + message).digest(), "little") % L
        if k % 8 == 7:
            break
    signature = r + (k * a % L).to_bytes(32, "little")
    Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    with pytest.raises(BadSignatureError):
        crypto_sign_open(signature + message, public_key)
    verify_strict(public_key, message, signature)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_strict(public_key, message + b"!", signature)
