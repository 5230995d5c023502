"""The enrollment authority: an Ed25519 root CA that certifies device keys for C2PA.

C2PA signers need an X.509 chain (C2PA 2.1, section 14.5 "X.509 certificates"). The
operator runs this authority (`prov admin ca init`); at enrollment it issues each
device key a leaf certificate that C2PA validators accept: CA:false, key usage
digitalSignature, subject and authority key identifiers, and the extended key usages
emailProtection (accepted by c2pa-rs's default list) and C2PA signing
(1.3.6.1.4.1.62558.2.1, accepted where a trust configuration lists it). Its root
certificate is the anchor a verifier configures (`C2paTrust`). Certificates made
elsewhere are checked with `accept_device_certificate`. Certificates and keys come from
`cryptography`; times are passed in, never read from the clock.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from provenance.cli.files import read_capped
from provenance.core.errors import ConfigError, EnrollmentError, KeyMaterialError
from provenance.core.keyfile import check_kdf_cost, encrypt_pkcs8_pem, unsupported_encryption
from provenance.core.keys import check_public_key

KEY_FILE = "ca.key.pem"
CERT_FILE = "ca.cert.pem"
#: Most bytes read of either file: both PEMs are under 1 KiB (a device, ``/dev/zero`` or
#: a disk image named by mistake is refused, not read into memory without end).
MAX_AUTHORITY_FILE_BYTES = 64 * 1024
#: What a PEM certificate starts with (RFC 7468, section 5.1).
CERT_MARKER = b"-----BEGIN CERTIFICATE-----"
#: C2PA signing extended key usage (C2PA 2.1, section 14.5.1).
C2PA_SIGNING_EKU = ObjectIdentifier("1.3.6.1.4.1.62558.2.1")
#: id-kp-documentSigning (RFC 9336).
DOCUMENT_SIGNING_EKU = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
#: Extended key usages a device certificate may carry for us to accept it.
ACCEPTED_EKUS = frozenset(
    {ExtendedKeyUsageOID.EMAIL_PROTECTION, C2PA_SIGNING_EKU, DOCUMENT_SIGNING_EKU}
)
#: Issued certificates start this long before `now`, to absorb device clock skew.
BACKDATE = timedelta(minutes=5)
#: Longest chain accepted below an anchor (leaf plus intermediates).
MAX_CHAIN = 4
#: Most bytes of PEM a device certificate chain may be (`accept_device_certificate`, and
#: the file `prov device enroll --certificate` reads): a chain of a few certificates is a
#: few KiB, and a longer one is refused before a certificate of it is parsed.
MAX_CHAIN_PEM_BYTES = 256 * 1024


@dataclass(frozen=True)
class Authority:
    """The CA's private key and its self-signed root certificate."""

    private_key: Ed25519PrivateKey
    certificate: x509.Certificate

    @property
    def certificate_pem(self) -> bytes:
        """The root certificate in PEM: what verifiers configure as a trust anchor."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def init_authority(
    directory: Path,
    *,
    now: datetime,
    name: str = "Media Provenance Enrollment CA",
    organization: str = "Media Provenance",
    validity: timedelta = timedelta(days=3650),
    passphrase: bytes | None = None,
) -> Authority:
    """Create a new root CA in directory: ca.key.pem (mode 0600) and ca.cert.pem.

    now: timezone-aware UTC time; validity: lifetime of the root; passphrase: encrypts
    the key file when given (PKCS#8 PBES2: PBKDF2-HMAC-SHA256 at
    `keyfile.PBKDF2_ITERATIONS`, AES-256-CBC, as a device key). Raises ConfigError if
    the folder cannot be created (a file in its place or on the way), an authority
    already exists there, or the files cannot be written.
    """
    key = Ed25519PrivateKey.generate()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, None)
    )
    if passphrase:  # PBKDF2 at keyfile.PBKDF2_ITERATIONS, as a device key (not 2,048)
        info = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        key_pem = encrypt_pkcs8_pem(info, passphrase)
    else:
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    try:  # a file or FIFO in its place, or on the way: FileExistsError, NotADirectoryError
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"cannot create the folder {directory} for the authority: {e.strerror or e}"
        ) from e
    try:
        fd = os.open(directory / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        (directory / CERT_FILE).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    except FileExistsError as e:
        raise ConfigError(f"an authority already exists in {directory}") from e
    except OSError as e:
        raise ConfigError(f"cannot write the authority to {directory}: {e}") from e
    return Authority(key, certificate)


def key_is_encrypted(pem: bytes) -> bool:
    """Whether a private key PEM is passphrase-encrypted: PKCS#8 ``ENCRYPTED PRIVATE
    KEY``, or the traditional OpenSSL format's ``Proc-Type: 4,ENCRYPTED`` header."""
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem or b"Proc-Type: 4,ENCRYPTED" in pem


def _read_pem(directory: Path, name: str, noun: str, marker: bytes) -> bytes:
    """The bytes of ``directory / name``, the authority's ``noun`` ("private key",
    "certificate"), at most MAX_AUTHORITY_FILE_BYTES, holding PEM text with ``marker``.
    Raises ConfigError naming the file and what to do when it does not exist, cannot be
    read or holds no such PEM."""
    path = directory / name
    if not os.path.lexists(path):
        raise ConfigError(
            f"no enrollment authority in {directory}: {path} does not exist (an authority"
            f" is the folder `prov admin ca init --dir {directory}` makes, holding {KEY_FILE}"
            f" and {CERT_FILE}: give that folder, or restore the file from a backup)"
        )
    data = read_capped(path, MAX_AUTHORITY_FILE_BYTES, f"the enrollment authority {noun}")
    if marker not in data:
        raise ConfigError(
            f"{path} is not a PEM {noun}: the file is damaged or not the one"
            " `prov admin ca init` wrote; restore it from a backup"
        )
    return data


def _read_files(directory: Path) -> tuple[bytes, bytes]:
    """The key and the certificate PEM of the authority in ``directory`` (`_read_pem`)."""
    key_pem = _read_pem(directory, KEY_FILE, "private key", b"-----BEGIN")
    return key_pem, _read_pem(directory, CERT_FILE, "certificate", CERT_MARKER)


def authority_key_encrypted(directory: Path) -> bool:
    """Whether the authority key in ``directory`` (`KEY_FILE`) is passphrase-encrypted,
    so that `load_authority` needs its passphrase. Raises ConfigError, naming the file and
    what to do, if either file of the authority is missing, cannot be read or holds no
    PEM key or certificate."""
    return key_is_encrypted(_read_files(directory)[0])


def load_authority(directory: Path, passphrase: bytes | None = None) -> Authority:
    """Load an authority written by `init_authority`.

    passphrase: decrypts an encrypted key; not used for a key written unencrypted (an
    authority made before `prov admin ca init` encrypted its key keeps working). Raises
    ConfigError, naming the file and what to do, if a file is missing, cannot be read or
    holds no PEM key or certificate; KeyMaterialError if the key is encrypted and no
    passphrase is given, the passphrase is wrong (or the file damaged), it is encrypted
    with an algorithm this program does not decrypt (`keyfile.unsupported_encryption`
    names it), the file asks for more key derivation work than `keyfile.check_kdf_cost`
    allows, or the key is not Ed25519 or does not match the certificate.
    """
    key_pem, cert_pem = _read_files(directory)
    encrypted = key_is_encrypted(key_pem)
    if encrypted and not passphrase:
        raise KeyMaterialError(
            f"the enrollment authority key in {directory} is encrypted: its passphrase is needed"
        )
    if encrypted:
        check_kdf_cost(key_pem)  # KeyMaterialError before a crafted count is run
    try:
        key = serialization.load_pem_private_key(
            key_pem, password=passphrase if encrypted else None
        )
    except ValueError as e:  # a wrong passphrase and a damaged file look the same
        if not encrypted:
            raise ConfigError(
                f"{directory / KEY_FILE} is damaged: it holds no private key that can be"
                " read; restore it from a backup"
            ) from e
        problem = unsupported_encryption(key_pem) or (
            "the passphrase is wrong, or the key file is damaged"
        )
        raise KeyMaterialError(
            f"cannot decrypt the enrollment authority key in {directory}: {problem}"
        ) from e
    except (TypeError, UnsupportedAlgorithm) as e:
        raise KeyMaterialError(f"cannot load the authority in {directory}: {e}") from e
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        raise ConfigError(
            f"{directory / CERT_FILE} is damaged: it holds no certificate that can be read;"
            " restore it from a backup"
        ) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyMaterialError(f"the authority key is {type(key).__name__}, not Ed25519")
    if _raw(key.public_key()) != _raw(certificate.public_key()):
        raise KeyMaterialError("the authority key does not match its certificate")
    return Authority(key, certificate)


def issue_device_certificate(
    authority: Authority,
    device_public_key: bytes,
    device_id: str,
    *,
    now: datetime,
    validity: timedelta = timedelta(days=365),
) -> bytes:
    """Certify a device's raw 32-byte Ed25519 key; return the PEM chain (leaf, root).

    device_id: the subject common name (e.g. the hex device id). The leaf is valid from
    now - BACKDATE to now + validity, cut at the root's own expiry. Raises
    KeyMaterialError if the key is malformed or of small order, ConfigError if the
    authority has expired.
    """
    check_public_key(device_public_key)
    if now >= authority.certificate.not_valid_after_utc:
        raise ConfigError("the enrollment authority's certificate has expired")
    public = Ed25519PublicKey.from_public_bytes(device_public_key)
    ca_public = authority.private_key.public_key()
    organizations = authority.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, device_id)] + [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, str(o.value)) for o in organizations
    ]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(authority.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + validity, authority.certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, C2PA_SIGNING_EKU]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False
        )
        .sign(authority.private_key, None)
    )
    return leaf.public_bytes(serialization.Encoding.PEM) + authority.certificate_pem


def accept_device_certificate(
    chain_pem: bytes,
    device_public_key: bytes,
    anchors: Sequence[x509.Certificate],
    *,
    now: datetime,
) -> x509.Certificate:
    """Check a device certificate chain made elsewhere; return the leaf if acceptable.

    chain_pem: leaf first, then any intermediates (the root may follow). Accepted when
    the leaf certifies exactly device_public_key (raw 32-byte Ed25519), is CA:false
    with digitalSignature usage and an EKU in ACCEPTED_EKUS, every certificate is
    within its validity at now, each is signed by the next, and the last is an anchor
    or signed by one. Raises EnrollmentError naming the first rule broken; a chain over
    `MAX_CHAIN_PEM_BYTES` is refused before it is parsed (any key's proof of possession
    reaches this: before, 8 MiB of PEM, 24,767 certificates, were parsed in 0.2 s
    holding the GIL only to be refused for their number).
    """
    if len(chain_pem) > MAX_CHAIN_PEM_BYTES:
        raise EnrollmentError(
            f"the device certificate chain is {len(chain_pem):,} bytes of PEM; at most"
            f" {MAX_CHAIN_PEM_BYTES:,} are read (a leaf and at most {MAX_CHAIN - 1}"
            " intermediates are a few KiB): send the chain the enrollment authority issued"
        )
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as e:
        raise EnrollmentError(f"the device certificate chain is not PEM: {e}") from e
    if not chain:
        raise EnrollmentError("the device certificate chain is empty")
    anchor_ders = {a.public_bytes(serialization.Encoding.DER) for a in anchors}
    while len(chain) > 1 and chain[-1].public_bytes(serialization.Encoding.DER) in anchor_ders:
        chain.pop()
    if len(chain) > MAX_CHAIN:
        raise EnrollmentError(f"the chain has {len(chain)} certificates; at most {MAX_CHAIN}")
    leaf = chain[0]
    _check_leaf(leaf, device_public_key)
    for cert in chain:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise EnrollmentError(f"certificate {cert.subject.rfc4514_string()} is not valid now")
    for child, parent in zip(chain, chain[1:], strict=False):
        _check_issued_by(child, parent)
    last = chain[-1]
    refusals = []
    for anchor in anchors:
        if anchor.subject != last.issuer:
            continue
        if not anchor.not_valid_before_utc <= now <= anchor.not_valid_after_utc:
            refusals.append("the matching trust anchor is not valid now")
            continue
        try:
            _check_issued_by(last, anchor)
        except EnrollmentError as e:
            refusals.append(str(e))
            continue
        return leaf
    raise EnrollmentError(
        f"no trust anchor issued {last.issuer.rfc4514_string()}"
        + (f" ({'; '.join(refusals)})" if refusals else "")
    )


def _check_leaf(leaf: x509.Certificate, device_public_key: bytes) -> None:
    public = leaf.public_key()
    if not isinstance(public, Ed25519PublicKey):
        raise EnrollmentError(f"the leaf key is {type(public).__name__}, not Ed25519")
    if _raw(public) != device_public_key:
        raise EnrollmentError("the leaf certificate is for another key")
    if leaf.issuer == leaf.subject:
        raise EnrollmentError("a self-signed leaf is not accepted")
    try:
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        ekus = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound as e:
        raise EnrollmentError(f"the leaf lacks a required extension: {e}") from e
    if constraints.ca:
        raise EnrollmentError("the leaf is a CA certificate")
    if not usage.digital_signature:
        raise EnrollmentError("the leaf's key usage lacks digitalSignature")
    if not ekus & ACCEPTED_EKUS:
        raise EnrollmentError("the leaf has no extended key usage valid for C2PA signing")


def _check_issued_by(child: x509.Certificate, parent: x509.Certificate) -> None:
    """Parent is a CA certificate whose key signed child and whose subject is its issuer."""
    try:
        constraints = parent.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise EnrollmentError(f"{parent.subject.rfc4514_string()} is not a CA certificate")
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise EnrollmentError(
            f"{child.subject.rfc4514_string()} is not signed by "
            f"{parent.subject.rfc4514_string()}: {e}"
        ) from e


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _raw(public: object) -> bytes:
    if not isinstance(public, Ed25519PublicKey):
        raise KeyMaterialError(f"expected an Ed25519 key, got {type(public).__name__}")
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
