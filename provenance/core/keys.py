"""Ed25519 device keys and strict signature verification.

Signing uses `cryptography` (OpenSSL); verifying uses libsodium (the copy PyNaCl
ships), about twice as fast, with OpenSSL as the reference for the one case where their
rules differ (see `verify_strict`). libsodium is called holding the GIL (`_sodium_verify`):
a verification takes about 60 µs, while giving the GIL away and taking it back costs a
busy server's event loop up to the 5 ms switch interval. Both accept public keys of
small order, for which a signature exists that verifies for every message, so keys are
checked here first: the encoding is decoded as in RFC 8032 section 5.1.3 with a few
lines of Edwards-curve arithmetic (RFC 8032 section 5.1.4) and refused unless it is
canonical, on the curve, and not of small order. Verification additionally requires a
canonical S (S < L, RFC 8032 section 5.1.7), which together give the "strict"
verification rules tested by the Wycheproof Ed25519 vectors.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
from functools import lru_cache

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from provenance.core.errors import KeyMaterialError, SignatureError, WrongPassphraseError
from provenance.core.keyfile import check_kdf_cost, encrypt_pkcs8_pem, unsupported_encryption

PUBLIC_KEY_SIZE = 32
PRIVATE_KEY_SIZE = 32
SIGNATURE_SIZE = 64

# Curve constants of edwards25519, RFC 8032 section 5.1.
_P = 2**255 - 19
_D = (-121665 * pow(121666, -1, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
#: Order of the prime-order subgroup (the group order L of RFC 8032).
_L = 2**252 + 27742317777372353535851937790883648493

_Point = tuple[int, int]
_IDENTITY: _Point = (0, 1)

#: How many checked public keys `verify_strict` remembers (about 100 bytes each).
CHECKED_KEYS_CACHED = 65536

# libsodium's ge25519_has_small_order refuses a signature whose R (sign bit ignored) is
# one of these encodings: y of the small-order points, canonical and y = p, p + 1.
_SODIUM_SMALL_ORDER_R = frozenset(
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
)


def _sodium_function(name: str, release_gil: bool) -> ctypes._NamedFuncPointer:
    """A function of the libsodium inside PyNaCl, called through ctypes.PyDLL: unlike
    PyNaCl's own bindings (cffi), the call keeps the GIL; through ctypes.CDLL with
    ``release_gil``, it gives the GIL away while it runs."""
    spec = importlib.util.find_spec("nacl._sodium")
    assert spec is not None and spec.origin is not None  # PyNaCl is a dependency
    lib = ctypes.CDLL(spec.origin) if release_gil else ctypes.PyDLL(spec.origin)
    return getattr(lib, name)  # type: ignore[no-any-return]


def _sodium_verifier(release_gil: bool) -> ctypes._NamedFuncPointer:
    """crypto_sign_ed25519_verify_detached(sig, m, mlen, pk): 0 when the signature
    verifies (the check crypto_sign_open makes; libsodium's sign/ed25519/ref10/open.c)."""
    fn = _sodium_function("crypto_sign_ed25519_verify_detached", release_gil)
    fn.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p)
    fn.restype = ctypes.c_int
    return fn


_sodium_verify = _sodium_verifier(release_gil=False)
_sodium_verify_released = _sodium_verifier(release_gil=True)


#: Length of a key id (a device id), bytes: a SHA-256.
KEY_ID_BYTES = 32


def key_id(public_key: bytes) -> bytes:
    """Return the `KEY_ID_BYTES`-byte key id of a raw 32-byte Ed25519 public key: its
    SHA-256."""
    return hashlib.sha256(public_key).digest()


def _decode_point(encoded: bytes) -> _Point:
    """Decode a 32-byte point encoding to affine (x, y), RFC 8032 section 5.1.3.

    Raises KeyMaterialError if y >= p, if x = 0 with the sign bit set (the two
    non-canonical encodings), or if no x satisfies the curve equation.
    """
    raw = int.from_bytes(encoded, "little")
    sign = raw >> 255
    y = raw & ((1 << 255) - 1)
    if y >= _P:
        raise KeyMaterialError("public key is a non-canonical encoding (y >= p)")
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x = (u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P)) % _P
    vxx = (v * x * x) % _P
    if vxx == (-u) % _P:
        x = (x * _SQRT_M1) % _P
    elif vxx != u:
        raise KeyMaterialError("public key is not a point on edwards25519")
    if x == 0 and sign == 1:
        raise KeyMaterialError("public key is a non-canonical encoding (x = 0, sign bit 1)")
    if x & 1 != sign:
        x = _P - x
    return x, y


def _add(p1: _Point, p2: _Point) -> _Point:
    """Add two affine points with the complete twisted Edwards formula (a = -1)."""
    x1, y1 = p1
    x2, y2 = p2
    t = (_D * x1 * x2 * y1 * y2) % _P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, -1, _P)
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, _P)
    return x3 % _P, y3 % _P


def check_public_key(public_key: bytes) -> None:
    """Accept only a strict Ed25519 public key: 32 bytes, canonical, on the curve, [8]A != 0.

    Raises KeyMaterialError naming the first rule the key breaks. The small-order test
    doubles the point three times; the eight points of order dividing 8 are exactly
    those that map to the identity.
    """
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise KeyMaterialError(f"public key must be {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")
    point = _decode_point(public_key)
    for _ in range(3):
        point = _add(point, point)
    if point == _IDENTITY:
        raise KeyMaterialError("public key has small order")


@lru_cache(maxsize=CHECKED_KEYS_CACHED)
def checked_public_key(public_key: bytes) -> Ed25519PublicKey:
    """Return the OpenSSL verifier of a key that passed `check_public_key`, checked once.

    The check (pure-Python curve arithmetic, a few hundred µs) is a function of the 32
    bytes alone, so its result is kept for the last `CHECKED_KEYS_CACHED` keys: a device
    key is checked when it enrolls and not again on each submission. Raises
    KeyMaterialError (never cached) if the key fails the check.
    """
    check_public_key(public_key)
    return Ed25519PublicKey.from_public_bytes(public_key)


def verify_strict(
    public_key: bytes, message: bytes, signature: bytes, *, release_gil: bool = False
) -> None:
    """Verify an Ed25519 signature under the strict rules; return None or raise.

    public_key: raw 32 bytes; signature: 64 bytes R || S. Raises SignatureError if the
    signature has the wrong length, a non-canonical S (S >= L) or does not verify, and
    KeyMaterialError if the key fails `check_public_key`.

    The equation [S]B = R + [k]A (cofactorless, R compared as bytes, RFC 8032 section
    5.1.7) is checked by libsodium (crypto_sign_ed25519_verify_detached, the check of
    crypto_sign_open), without releasing the GIL; with ``release_gil`` (a thread other
    than an event loop's, such as the log writer's) it is released meanwhile, so other
    threads run Python during the check. libsodium also refuses an R of
    small order, which OpenSSL accepts when the equation holds (only a key's owner can
    make one: R = identity, S = k * a); such a signature is re-checked with OpenSSL so the
    accepted set stays exactly OpenSSL's. Proven on Wycheproof in tests/test_wycheproof.py.
    """
    if len(signature) != SIGNATURE_SIZE:
        raise SignatureError(f"signature must be {SIGNATURE_SIZE} bytes, got {len(signature)}")
    if int.from_bytes(signature[32:], "little") >= _L:
        raise SignatureError("signature has a non-canonical S (S >= L)")
    verifier = checked_public_key(public_key)
    verify = _sodium_verify_released if release_gil else _sodium_verify
    if verify(signature, message, len(message), public_key) == 0:
        return
    r = signature[:31] + bytes([signature[31] & 0x7F])
    if r not in _SODIUM_SMALL_ORDER_R:
        raise SignatureError("signature does not verify")
    try:
        verifier.verify(signature, message)
    except InvalidSignature as e:
        raise SignatureError("signature does not verify") from e


class DeviceKey:
    """An Ed25519 private key held by a device (or by the log server for checkpoints)."""

    __slots__ = ("_private", "_public")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self._public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> DeviceKey:
        """Create a new random key from the operating system's CSPRNG."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> DeviceKey:
        """Load a key from its raw 32-byte seed; KeyMaterialError on a wrong length."""
        if len(raw) != PRIVATE_KEY_SIZE:
            raise KeyMaterialError(f"private key must be {PRIVATE_KEY_SIZE} bytes, got {len(raw)}")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def from_encrypted_pem(cls, pem: bytes, passphrase: bytes) -> DeviceKey:
        """Load a key written by `to_encrypted_pem`.

        Raises WrongPassphraseError (a KeyMaterialError) if the passphrase does not decrypt
        it (wrong, or the file damaged), KeyMaterialError if the passphrase is empty, the
        PEM is corrupt
        or not encrypted, the key is not an Ed25519 key, it is encrypted with an algorithm
        this program does not decrypt (`keyfile.unsupported_encryption` names it and those
        it does), or the file asks for more key derivation work than
        `keyfile.check_kdf_cost` allows (refused before any is done).
        """
        if not passphrase:
            raise KeyMaterialError("a non-empty passphrase is required to decrypt the key")
        check_kdf_cost(pem)
        # one sentence each, without cryptography's own text: "Incorrect password, could
        # not decrypt key" only said again what the wrong passphrase had already said
        try:
            private = serialization.load_pem_private_key(pem, password=passphrase)
        except TypeError as e:  # "Password was given but private key is not encrypted."
            raise KeyMaterialError(
                "the private key file is not encrypted; a passphrase-protected key is expected"
            ) from e
        except UnsupportedAlgorithm as e:  # a kind of key it cannot load (a curve: SM2)
            raise KeyMaterialError(
                f"the private key uses an algorithm this program does not support ({e})"
            ) from e
        except ValueError as e:  # a wrong passphrase and a damaged file look the same
            if problem := unsupported_encryption(pem):
                raise KeyMaterialError(f"cannot decrypt the private key: {problem}") from e
            raise WrongPassphraseError(
                "cannot decrypt the private key: the passphrase is wrong, or the key file is"
                " damaged"
            ) from e
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyMaterialError(f"expected an Ed25519 private key, got {type(private).__name__}")
        return cls(private)

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self._public

    @property
    def key_id(self) -> bytes:
        """SHA-256 of the raw public key (32 bytes)."""
        return key_id(self._public)

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of message (RFC 8032, deterministic)."""
        return self._private.sign(message)

    def to_encrypted_pem(self, passphrase: bytes) -> bytes:
        """Serialize as PKCS#8 PEM encrypted under passphrase (PBES2, PBKDF2-HMAC-SHA256
        at `keyfile.PBKDF2_ITERATIONS`, AES-256-CBC: about 0.2 s to write or load);
        KeyMaterialError if empty."""
        if not passphrase:
            raise KeyMaterialError("refusing to write a private key with an empty passphrase")
        info = self._private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return encrypt_pkcs8_pem(info, passphrase)

    def __repr__(self) -> str:
        return f"DeviceKey(key_id={self.key_id.hex()})"
