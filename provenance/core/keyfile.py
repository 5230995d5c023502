"""Passphrase-encrypted PKCS#8 PEM with a PBKDF2 work factor chosen here.

`cryptography`'s ``BestAvailableEncryption`` writes PKCS#8 as PBES2 with
PBKDF2-HMAC-SHA256 at 2,048 iterations: a copied key file then costs an attacker about
a microsecond per guessed passphrase on one CPU core. This writes the same standard
structure (RFC 8018 PBES2: PBKDF2-HMAC-SHA256, AES-256-CBC; RFC 5958
EncryptedPrivateKeyInfo) with `PBKDF2_ITERATIONS`, OWASP's figure for PBKDF2-HMAC-SHA256
(2023), so any PKCS#8 reader (`cryptography`, ``openssl pkey``) still loads it; older
files with fewer iterations load as before.

`check_kdf_cost` reads the work factor a key file asks for before any reader derives a
key from it: the count is the file's to choose, and OpenSSL runs whatever it says (a
crafted file asking 2**31 PBKDF2 iterations holds a core for about ten minutes, in C,
where Ctrl-C does not reach), so a count or scrypt cost past the caps here is refused.
"""

from __future__ import annotations

import base64
import binascii
import os
import re

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from provenance.core.errors import KeyMaterialError

#: PBKDF2-HMAC-SHA256 iterations of a key file written here (about 0.2 s on one core).
PBKDF2_ITERATIONS = 600_000
#: Bytes of the PBKDF2 salt and of the AES-CBC initialisation vector.
SALT_BYTES = 16
IV_BYTES = 16
#: The most PBKDF2 (or PKCS#5 v1.5 / PKCS#12 PBE) iterations a key file may ask for when
#: it is opened: ten times what is written here, about 2 s of one core.
MAX_PBKDF2_ITERATIONS = 10 * PBKDF2_ITERATIONS
#: The most scrypt work (N * r * p) and memory (128 * N * r bytes, 256 MiB) a key file
#: may ask for: OpenSSL's own -scrypt default is N=16384, r=8, p=1 (N * r * p = 2**17).
MAX_SCRYPT_WORK = 2**22
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024

# DER encodings of the object identifiers used (RFC 8018, NIST CSOR)
_PBES2 = bytes.fromhex("06092a864886f70d01050d")  # 1.2.840.113549.1.5.13
_PBKDF2 = bytes.fromhex("06092a864886f70d01050c")  # 1.2.840.113549.1.5.12
_HMAC_SHA256 = bytes.fromhex("06082a864886f70d0209")  # 1.2.840.113549.2.9
_AES256_CBC = bytes.fromhex("060960864801650304012a")  # 2.16.840.1.101.3.4.1.42
_NULL = bytes.fromhex("0500")
_SCRYPT = bytes.fromhex("06092b06010401da47040b")  # 1.3.6.1.4.1.11591.4.11
# PKCS#5 v1.5 PBES1 (1.2.840.113549.1.5.x) and PKCS#12 PBE (1.2.840.113549.1.12.1.x):
# both take SEQUENCE { OCTET STRING salt, INTEGER iterations }
_PBES1_PREFIX = bytes.fromhex("06092a864886f70d0105")
_PKCS12_PBE_PREFIX = bytes.fromhex("060a2a864886f70d010c01")
_HMAC_SHA1 = bytes.fromhex("06082a864886f70d0207")  # 1.2.840.113549.2.7, PBKDF2's default PRF

#: What `cryptography` (50) decrypts, measured with a file of each (openssl pkcs8 -topk8):
#: the schemes, and within PBES2 the key derivations, PBKDF2's PRFs and the ciphers.
_SCHEMES_READ = {
    _PBES2,
    bytes.fromhex("06092a864886f70d010503"),  # pbeWithMD5AndDES-CBC
    bytes.fromhex("060a2a864886f70d010c0101"),  # pbeWithSHAAnd128BitRC4
    bytes.fromhex("060a2a864886f70d010c0103"),  # pbeWithSHAAnd3-KeyTripleDES-CBC
    bytes.fromhex("060a2a864886f70d010c0106"),  # pbeWithSHAAnd40BitRC2-CBC
}
_KDFS_READ = {_PBKDF2, _SCRYPT}
_PRFS_READ = {_HMAC_SHA1, *(bytes.fromhex(f"06082a864886f70d02{n:02x}") for n in (8, 9, 10, 11))}
_CIPHERS_READ = {
    bytes.fromhex("0609608648016503040102"),  # aes-128-cbc
    bytes.fromhex("0609608648016503040116"),  # aes-192-cbc
    _AES256_CBC,
    bytes.fromhex("06082a864886f70d0307"),  # des-ede3-cbc
    bytes.fromhex("06082a864886f70d0302"),  # rc2-cbc
}
#: Names of the algorithms `openssl pkcs8 -topk8` offers that are not read (others are
#: named by their OID alone).
_UNREAD_NAMES = (
    {
        bytes.fromhex("060b2a83088c9a4b3d010101") + bytes([n]): f"camellia-{bits}-cbc"
        for n, bits in ((2, 128), (3, 192), (4, 256))
    }
    | {
        bytes.fromhex("06092a831a8c9a6e0101") + bytes([n]): f"aria-{bits}-cbc"
        for n, bits in ((2, 128), (7, 192), (12, 256))
    }
    | {
        bytes.fromhex("06082a811ccf55016802"): "sm4-cbc",
        bytes.fromhex("06082a864886f70d0206"): "hmacWithMD5",
        bytes.fromhex("06082a864886f70d020c"): "hmacWithSHA512-224",
        bytes.fromhex("06082a864886f70d020d"): "hmacWithSHA512-256",
        bytes.fromhex("06092a864886f70d01050a"): "pbeWithSHA1AndDES-CBC",
        bytes.fromhex("060a2a864886f70d010c0104"): "pbeWithSHAAnd2-KeyTripleDES-CBC",
    }
)
#: What `unsupported_encryption` says this program decrypts.
ENCRYPTION_READ = (
    "PBES2: PBKDF2 with HMAC-SHA1, -SHA224, -SHA256, -SHA384 or -SHA512, or scrypt, and"
    " AES-128/192/256-CBC, DES-EDE3-CBC or RC2-CBC; and the older pbeWithMD5AndDES-CBC and"
    " PKCS#12 pbeWithSHAAnd3-KeyTripleDES-CBC, -40BitRC2-CBC and -128BitRC4"
)
#: The longest OID body `_oid_text` decodes (the longest registered are about 40 bytes).
_MAX_OID_BYTES = 128
_ENCRYPTED_PEM = re.compile(
    rb"-----BEGIN ENCRYPTED PRIVATE KEY-----(.*?)-----END ENCRYPTED PRIVATE KEY-----", re.S
)


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


def _read_tlv(der: bytes, at: int, end: int) -> tuple[int, int, int]:
    """The DER element at ``der[at:end]``: (tag, body start, body end); ValueError if
    it is cut short or its length is not definite."""
    if at + 2 > end:
        raise ValueError("truncated")
    tag, first = der[at], der[at + 1]
    at += 2
    if first < 0x80:
        size = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or at + count > end:
            raise ValueError("bad length")
        size = int.from_bytes(der[at : at + count], "big")
        at += count
    if at + size > end:
        raise ValueError("truncated")
    return tag, at, at + size


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """The elements inside a constructed body: (tag, element start, body start, body end)."""
    out = []
    at = start
    while at < end:
        tag, body, stop = _read_tlv(der, at, end)
        out.append((tag, at, body, stop))
        at = stop
    return out


def _block_der(match: re.Match[bytes]) -> bytes:
    """The DER inside one ``ENCRYPTED PRIVATE KEY`` PEM block (header lines dropped);
    binascii.Error if it is not base64."""
    lines = [ln for ln in match.group(1).splitlines() if b":" not in ln]
    return base64.b64decode(b"".join(b"".join(ln.split()) for ln in lines))


def _pbes2_kdf(der: bytes) -> tuple[bytes, list[tuple[int, int, int, int]]] | None:
    """The key derivation of one EncryptedPrivateKeyInfo encrypted with PBES2 (RFC 8018
    appendix A.4): its OID (DER, tag and length included) and its parameters' elements;
    None for another scheme. ValueError or IndexError if it cannot be read."""
    _, body, end = _read_tlv(der, 0, len(der))
    algorithm = _children(der, _children(der, body, end)[0][2], end)
    if der[algorithm[0][1] : algorithm[0][3]] != _PBES2:
        return None
    kdf = _children(der, _children(der, algorithm[1][2], algorithm[1][3])[0][2], end)
    return der[kdf[0][1] : kdf[0][3]], _children(der, kdf[1][2], kdf[1][3])


def weaker_than_written_here(pem: bytes) -> bool:
    """Whether a passphrase-encrypted key file costs a guesser less than one this module
    writes: anything but a single PKCS#8 ``ENCRYPTED PRIVATE KEY`` block with PBES2 and
    either PBKDF2 at `PBKDF2_ITERATIONS` or more, or scrypt (left as it is). Weaker:
    `cryptography`'s own files (PBKDF2 at 2,048), PBES1 and PKCS#12 schemes, the
    traditional OpenSSL format (one MD5 round). ``pem`` has passed `check_kdf_cost` and
    been decrypted; a block that cannot be read counts as weaker (rewriting it is
    harmless)."""
    blocks = list(_ENCRYPTED_PEM.finditer(pem))
    if len(blocks) != 1:
        return True
    try:
        der = _block_der(blocks[0])
        kdf = _pbes2_kdf(der)
        if kdf is not None and kdf[0] == _PBKDF2:
            return _integer(der, kdf[1][1]) < PBKDF2_ITERATIONS
    except (ValueError, IndexError, binascii.Error):
        return True
    return kdf is None or kdf[0] != _SCRYPT


def _integer(der: bytes, element: tuple[int, int, int, int]) -> int:
    tag, _, body, stop = element
    if tag != 0x02 or body == stop:
        raise ValueError("not an INTEGER")
    return int.from_bytes(der[body:stop], "big", signed=True)


def _kdf_cost_problem(der: bytes) -> str | None:
    """What is wrong with the work factor of one EncryptedPrivateKeyInfo (RFC 5958), or
    None; ValueError if its structure cannot be read."""
    tag, body, end = _read_tlv(der, 0, len(der))
    top = _children(der, body, end) if tag == 0x30 else []
    if not top or top[0][0] != 0x30:
        raise ValueError("not an EncryptedPrivateKeyInfo")
    algorithm = _children(der, top[0][2], top[0][3])
    if len(algorithm) < 2 or algorithm[0][0] != 0x06:
        return None
    oid = der[algorithm[0][1] : algorithm[0][3]]
    params = _children(der, algorithm[1][2], algorithm[1][3]) if algorithm[1][0] == 0x30 else []
    if oid == _PBES2:
        if not params or params[0][0] != 0x30:
            raise ValueError("PBES2 without a key derivation")
        kdf = _children(der, params[0][2], params[0][3])
        if len(kdf) < 2 or kdf[1][0] != 0x30:
            raise ValueError("PBES2 key derivation without parameters")
        kdf_oid = der[kdf[0][1] : kdf[0][3]]
        kdf_params = _children(der, kdf[1][2], kdf[1][3])
        if kdf_oid == _PBKDF2:
            return _iterations_problem(_integer(der, kdf_params[1]), "PBKDF2")
        if kdf_oid == _SCRYPT:
            n, r, p = (_integer(der, kdf_params[i]) for i in (1, 2, 3))
            if n < 1 or r < 1 or p < 1:
                return f"it asks for scrypt with N={n}, r={r}, p={p}"
            if n * r * p > MAX_SCRYPT_WORK or 128 * n * r > MAX_SCRYPT_MEMORY:
                return (
                    f"it asks for scrypt with N={n}, r={r}, p={p}, more work or memory than"
                    f" the most this program runs (N*r*p {MAX_SCRYPT_WORK:,},"
                    f" 128*N*r {MAX_SCRYPT_MEMORY // 2**20} MiB)"
                )
        return None
    if oid.startswith((_PBES1_PREFIX, _PKCS12_PBE_PREFIX)) and len(params) >= 2:
        return _iterations_problem(_integer(der, params[1]), "password-based encryption")
    return None


def _iterations_problem(count: int, kdf: str) -> str | None:
    if count < 1:
        return f"it asks for {count} {kdf} iterations"
    if count > MAX_PBKDF2_ITERATIONS:
        return (
            f"it asks for {count:,} {kdf} iterations, over the most this program runs"
            f" ({MAX_PBKDF2_ITERATIONS:,}; a key written here uses {PBKDF2_ITERATIONS:,})"
        )
    return None


def check_kdf_cost(pem: bytes) -> None:
    """Refuse a passphrase-encrypted PEM whose key derivation would cost more than this
    program runs, before anything derives a key from it: PBKDF2 (or PBES1 / PKCS#12 PBE)
    over `MAX_PBKDF2_ITERATIONS` iterations, or scrypt over `MAX_SCRYPT_WORK` /
    `MAX_SCRYPT_MEMORY`. Each ``ENCRYPTED PRIVATE KEY`` block in ``pem`` is read; other
    PEM (unencrypted, or the traditional format, one MD5 round) passes unread.

    Raises KeyMaterialError naming the count asked for and the cap, or saying that the
    block's structure cannot be read (no reader could load it either)."""
    for match in _ENCRYPTED_PEM.finditer(pem):
        try:
            problem = _kdf_cost_problem(_block_der(match))
        except (ValueError, IndexError, binascii.Error) as e:
            raise KeyMaterialError(
                f"the private key file is damaged: its encrypted key cannot be read ({e})"
            ) from e
        if problem is not None:
            raise KeyMaterialError(
                f"the private key file is refused unopened: {problem} (a file made to hold"
                " a CPU for minutes when opened)"
            )


def _oid_text(oid: bytes) -> str:
    """A DER OBJECT IDENTIFIER (tag and length included) as its name where `_UNREAD_NAMES`
    has one and its dotted form: ``camellia-256-cbc (OID 1.2.392.200011.61.1.1.1.4)``
    (X.690 8.19: the first subidentifier, of one byte or more, holds the first two arcs).
    An OID body over `_MAX_OID_BYTES` is named by its size alone (``an OID of N bytes``:
    decoding a crafted one of a megabyte would take minutes); ValueError or IndexError if
    ``oid`` is not an OBJECT IDENTIFIER."""
    tag, body_at, end = _read_tlv(oid, 0, len(oid))
    body = oid[body_at:end]
    if tag != 0x06 or not body or body[-1] & 0x80:
        raise ValueError("not an OBJECT IDENTIFIER")
    if len(body) > _MAX_OID_BYTES:
        return f"an OID of {len(body):,} bytes"
    values, value = [], 0
    for byte in body:
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            values.append(value)
            value = 0
    first = min(values[0] // 40, 2)
    dotted = "OID " + ".".join(map(str, [first, values[0] - 40 * first, *values[1:]]))
    name = _UNREAD_NAMES.get(oid)
    return f"{name} ({dotted})" if name else dotted


def _first_oid(der: bytes, element: tuple[int, int, int, int]) -> bytes:
    """The first element inside the AlgorithmIdentifier ``element`` (DER, tag and length
    included: its OID); ValueError or IndexError if there is none."""
    first = _children(der, element[2], element[3])[0]
    return der[first[1] : first[3]]


def _unread_part(der: bytes) -> str | None:
    """The part of one EncryptedPrivateKeyInfo's encryption that is not read (`_oid_text`,
    PBKDF2's PRF as ``PBKDF2 with ...``), or None; ValueError or IndexError if its
    structure cannot be read that far."""
    _, body, end = _read_tlv(der, 0, len(der))
    algorithm = _children(der, body, end)[0]
    scheme = _first_oid(der, algorithm)
    if scheme not in _SCHEMES_READ:
        return _oid_text(scheme)
    if scheme != _PBES2:
        return None
    params = _children(der, algorithm[2], algorithm[3])[1]
    kdf, cipher = _children(der, params[2], params[3])[:2]
    kdf_oid = _first_oid(der, kdf)
    if kdf_oid not in _KDFS_READ:
        return "the key derivation " + _oid_text(kdf_oid)
    if kdf_oid == _PBKDF2:
        kdf_params = _children(der, kdf[2], kdf[3])[1]
        # salt, iterationCount, keyLength (optional), prf (default hmacWithSHA1)
        prfs = [e for e in _children(der, kdf_params[2], kdf_params[3])[2:] if e[0] == 0x30]
        prf = _first_oid(der, prfs[0]) if prfs else _HMAC_SHA1
        if prf not in _PRFS_READ:
            return "PBKDF2 with " + _oid_text(prf)
    cipher_oid = _first_oid(der, cipher)
    return None if cipher_oid in _CIPHERS_READ else _oid_text(cipher_oid)


def unsupported_encryption(pem: bytes) -> str | None:
    """Why a passphrase-encrypted key file that did not decrypt cannot be decrypted here
    whatever the passphrase, or None: ``it is encrypted with camellia-256-cbc (OID ...),
    which this program does not decrypt (it decrypts ...; ...)``, naming the first part of
    its scheme (the scheme, PBES2's key derivation, PBKDF2's PRF, the cipher) that
    `cryptography` does not read and `ENCRYPTION_READ`, with the openssl command that
    re-encrypts it. None when each part is one it reads (then the passphrase is wrong or
    the file damaged), for a file with no ``ENCRYPTED PRIVATE KEY`` block, and for a block
    that cannot be read that far (damaged). Ask only after the reader failed: the sets
    here only tell a failure's cause, never refuse a file the reader could open."""
    for match in _ENCRYPTED_PEM.finditer(pem):
        try:
            part = _unread_part(_block_der(match))
        except (ValueError, IndexError, binascii.Error):
            return None
        if part is not None:
            return (
                f"it is encrypted with {part}, which this program does not decrypt (it"
                f" decrypts {ENCRYPTION_READ}; `openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf"
                f" hmacWithSHA256 -iter {PBKDF2_ITERATIONS} -in OLD -out NEW` re-encrypts it"
                " so)"
            )
    return None
