"""Passphrase-encrypted PKCS#8 PEM with a PBKDF2 work factor chosen here.

`cryptography`'s ``BestAvailableEncryption`` writes PKCS#8 as PBES2 with
PBKDF2-HMAC-SHA256 at 2,048 iterations: a copied key file then costs an attacker about
a microsecond per guessed passphrase on one CPU core. This writes the same standard
structure (RFC 8018 PBES2: PBKDF2-HMAC-SHA256, AES-256-CBC; RFC 5958
EncryptedPrivateKeyInfo) with `PBKDF2_ITERATIONS`, OWASP's figure for PBKDF2-HMAC-SHA256
(2023), so any PKCS#8 reader (`cryptography`, ``openssl pkey``) still loads it; older
files with fewer iterations load as before.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

#: PBKDF2-HMAC-SHA256 iterations of a key file written here (about 0.2 s on one core).
PBKDF2_ITERATIONS = 600_000
#: Bytes of the PBKDF2 salt and of the AES-CBC initialisation vector.
SALT_BYTES = 16
IV_BYTES = 16

# DER encodings of the object identifiers used (RFC 8018, NIST CSOR)
_PBES2 = bytes.fromhex("06092a864886f70d01050d")  # 1.2.840.113549.1.5.13
_PBKDF2 = bytes.fromhex("06092a864886f70d01050c")  # 1.2.840.113549.1.5.12
_HMAC_SHA256 = bytes.fromhex("06082a864886f70d0209")  # 1.2.840.113549.2.9
_AES256_CBC = bytes.fromhex("060960864801650304012a")  # 2.16.840.1.101.3.4.1.42
_NULL = bytes.fromhex("0500")


def _tlv(tag: int, body: bytes) -> bytes:
    """One DER element: tag, definite length, body."""
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _seq(*parts: bytes) -> bytes:
    return _tlv(0x30, b"".join(parts))


def _int(value: int) -> bytes:
    """A DER INTEGER of a non-negative ``value``."""
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def encrypt_pkcs8_pem(
    private_key_info: bytes, passphrase: bytes, iterations: int = PBKDF2_ITERATIONS
) -> bytes:
    """``private_key_info`` (an unencrypted PKCS#8 PrivateKeyInfo, DER) encrypted under
    ``passphrase`` as an ``ENCRYPTED PRIVATE KEY`` PEM: PBES2 with PBKDF2-HMAC-SHA256 at
    ``iterations`` (a fresh 16-byte salt) and AES-256-CBC (a fresh IV). The caller
    refuses an empty passphrase."""
    salt, iv = os.urandom(SALT_BYTES), os.urandom(IV_BYTES)
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations)
    padder = padding.PKCS7(algorithms.AES.block_size).padder()
    plain = padder.update(private_key_info) + padder.finalize()
    enc = Cipher(algorithms.AES(kdf.derive(passphrase)), modes.CBC(iv)).encryptor()
    sealed = enc.update(plain) + enc.finalize()
    params = _seq(
        _seq(_PBKDF2, _seq(_tlv(0x04, salt), _int(iterations), _seq(_HMAC_SHA256, _NULL))),
        _seq(_AES256_CBC, _tlv(0x04, iv)),
    )
    der = _seq(_seq(_PBES2, params), _tlv(0x04, sealed))
    text = base64.encodebytes(der).decode().replace("\n", "")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return (
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
        + "".join(f"{line}\n" for line in lines)
        + "-----END ENCRYPTED PRIVATE KEY-----\n"
    ).encode()
