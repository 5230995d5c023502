"""The enrollment authority issues device certificates C2PA validators accept."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provenance.c2pa.authority import (
    C2PA_SIGNING_EKU,
    CERT_FILE,
    KEY_FILE,
    Authority,
    accept_device_certificate,
    init_authority,
    issue_device_certificate,
    load_authority,
)
from provenance.core.errors import ConfigError, EnrollmentError, KeyMaterialError
from provenance.core.keyfile import PBKDF2_ITERATIONS
from provenance.core.keys import DeviceKey
from tests.conftest import pbkdf2_iterations

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return init_authority(tmp_path / "ca", now=NOW)


def test_init_writes_a_private_key_and_a_ca_certificate(tmp_path: Path) -> None:
    created = init_authority(tmp_path / "ca", now=NOW, name="Test CA", organization="Org")
    assert stat.S_IMODE((tmp_path / "ca" / KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate((tmp_path / "ca" / CERT_FILE).read_bytes())
    assert cert == created.certificate
    assert cert.subject == cert.issuer
    assert cert.subject.rfc4514_string() == "O=Org,CN=Test CA"
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    cert.verify_directly_issued_by(cert)
    loaded = load_authority(tmp_path / "ca")
    assert loaded.certificate == created.certificate


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    init_authority(tmp_path, now=NOW)
    with pytest.raises(ConfigError, match="already exists"):
        init_authority(tmp_path, now=NOW)


def test_encrypted_key_needs_its_passphrase(tmp_path: Path) -> None:
    init_authority(tmp_path, now=NOW, passphrase=b"secret")
    assert b"ENCRYPTED" in (tmp_path / KEY_FILE).read_bytes()
    assert load_authority(tmp_path, b"secret").certificate is not None
    with pytest.raises(KeyMaterialError):
        load_authority(tmp_path, b"wrong")
    with pytest.raises(ConfigError):
        load_authority(tmp_path / "absent")


def test_an_authority_key_file_costs_600000_pbkdf2_iterations_per_guess(
    tmp_path: Path,
) -> None:
    """`admin ca init --passphrase` wrote the authority key with BestAvailableEncryption
    (PBKDF2 at 2,048 iterations); it is written as a device key is, at 600,000, and a file
    written the old way still loads."""
    auth = init_authority(tmp_path, now=NOW, passphrase=b"secret")
    pem = (tmp_path / KEY_FILE).read_bytes()
    assert pbkdf2_iterations(pem) == PBKDF2_ITERATIONS == 600_000
    assert load_authority(tmp_path, b"secret").certificate == auth.certificate
    with pytest.raises(KeyMaterialError):
        load_authority(tmp_path, b"wrong")
    old = auth.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    assert pbkdf2_iterations(old) == 2048
    (tmp_path / KEY_FILE).write_bytes(old)
    assert load_authority(tmp_path, b"secret").certificate == auth.certificate


def test_issued_leaf_has_the_c2pa_profile(authority: Authority) -> None:
    device = DeviceKey.generate()
    chain = x509.load_pem_x509_certificates(
        issue_device_certificate(authority, device.public_key, "device-7", now=NOW)
    )
    leaf, root = chain
    assert root == authority.certificate
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "device-7"
    assert (
        leaf.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        == device.public_key
    )
    ext = leaf.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = ext.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.EMAIL_PROTECTION,
        C2PA_SIGNING_EKU,
    ]
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski.digest != root_ski.digest and aki.key_identifier == root_ski.digest
    assert leaf.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert leaf.not_valid_after_utc == NOW + timedelta(days=365)
    leaf.verify_directly_issued_by(root)


def test_small_order_key_is_refused(authority: Authority) -> None:
    with pytest.raises(KeyMaterialError):
        issue_device_certificate(authority, bytes(32), "bad", now=NOW)


def test_leaf_never_outlives_the_root(tmp_path: Path) -> None:
    short = init_authority(tmp_path, now=NOW, validity=timedelta(days=30))
    pem = issue_device_certificate(short, DeviceKey.generate().public_key, "d", now=NOW)
    leaf = x509.load_pem_x509_certificates(pem)[0]
    assert leaf.not_valid_after_utc == short.certificate.not_valid_after_utc
    with pytest.raises(ConfigError, match="expired"):
        issue_device_certificate(
            short, DeviceKey.generate().public_key, "d", now=NOW + timedelta(days=31)
        )


def test_accept_checks_key_time_and_issuer(authority: Authority, tmp_path: Path) -> None:
    device = DeviceKey.generate()
    pem = issue_device_certificate(authority, device.public_key, "d", now=NOW)
    anchors = [authority.certificate]
    leaf = accept_device_certificate(pem, device.public_key, anchors, now=NOW)
    assert leaf == x509.load_pem_x509_certificates(pem)[0]
    leaf_only = pem[: pem.index(b"-----END CERTIFICATE-----") + 26]
    assert accept_device_certificate(leaf_only, device.public_key, anchors, now=NOW) == leaf

    with pytest.raises(EnrollmentError, match="another key"):
        accept_device_certificate(pem, DeviceKey.generate().public_key, anchors, now=NOW)
    with pytest.raises(EnrollmentError, match="not valid now"):
        accept_device_certificate(pem, device.public_key, anchors, now=NOW + timedelta(days=400))
    other = init_authority(tmp_path / "other", now=NOW, name="Other CA")
    with pytest.raises(EnrollmentError, match="no trust anchor issued"):
        accept_device_certificate(pem, device.public_key, [other.certificate], now=NOW)
    impostor = init_authority(tmp_path / "impostor", now=NOW)  # same name, other key
    with pytest.raises(EnrollmentError, match="not signed by"):
        accept_device_certificate(pem, device.public_key, [impostor.certificate], now=NOW)


def _leaf(authority: Authority, device: DeviceKey, **ext: bool) -> bytes:
    """A leaf like the authority's, with some extensions left out or changed."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "d")]))
        .issuer_name(authority.certificate.subject)
        .public_key(Ed25519PublicKey.from_public_bytes(device.public_key))
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ext.get("ca", False), path_length=None), True)
    )
    if not ext.get("no_eku"):
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [
                    ExtendedKeyUsageOID.CLIENT_AUTH
                    if ext.get("wrong_eku")
                    else ExtendedKeyUsageOID.EMAIL_PROTECTION
                ]
            ),
            False,
        )
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=not ext.get("no_signing", False),
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        ),
        True,
    )
    cert = builder.sign(authority.private_key, None)
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"no_eku": True}, "lacks a required extension"),
        ({"wrong_eku": True}, "no extended key usage valid for C2PA"),
        ({"ca": True}, "is a CA certificate"),
        ({"no_signing": True}, "lacks digitalSignature"),
    ],
)
def test_accept_refuses_leaves_outside_the_profile(
    authority: Authority, change: dict[str, bool], message: str
) -> None:
    device = DeviceKey.generate()
    assert accept_device_certificate(
        _leaf(authority, device), device.public_key, [authority.certificate], now=NOW
    )
    with pytest.raises(EnrollmentError, match=message):
        accept_device_certificate(
            _leaf(authority, device, **change),
            device.public_key,
            [authority.certificate],
            now=NOW,
        )


def test_self_signed_leaf_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, None)
    )
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    with pytest.raises(EnrollmentError, match="self-signed"):
        accept_device_certificate(
            cert.public_bytes(serialization.Encoding.PEM), raw, [cert], now=NOW
        )


def test_garbage_chain_is_refused(authority: Authority) -> None:
    with pytest.raises(EnrollmentError, match="not PEM"):
        accept_device_certificate(
            b"-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n",
            bytes(32),
            [authority.certificate],
            now=NOW,
        )
