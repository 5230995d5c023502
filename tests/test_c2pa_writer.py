"""Captures signed with a device key read back as Trusted under our authority."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from provenance.c2pa import C2paTrust, ReaderPool, content_sha256, read_c2pa
from provenance.c2pa.authority import Authority, init_authority, issue_device_certificate
from provenance.c2pa.writer import DIGITAL_CAPTURE, embed_manifest
from provenance.core.errors import KeyMaterialError, MediaError, SignatureError
from provenance.core.keys import DeviceKey

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "c2pa"
EVIDENCE = {"payloadType": "application/vnd.provenance.claim.v1+protobuf", "receipt": "AAEC"}
CHECKPOINT = "provenance.example/log\n42\nqUuB1pZ8xw5bxmhUdHWDDrvl1fj2PYzSUjVeZaZ0Qqg=\n"
MEDIA = [("jpg", "image/jpeg"), ("png", "image/png"), ("mp4", "video/mp4")]


@pytest.fixture(scope="module")
def pool() -> Iterator[ReaderPool]:
    with ReaderPool() as p:
        yield p


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    # Certificates are checked against the real clock by the C2PA validator.
    return init_authority(tmp_path_factory.mktemp("ca"), now=datetime.now(UTC))


@pytest.fixture(scope="module")
def device() -> DeviceKey:
    return DeviceKey.generate()


@pytest.fixture(scope="module")
def chain(authority: Authority, device: DeviceKey) -> bytes:
    return issue_device_certificate(
        authority, device.public_key, device.key_id.hex(), now=datetime.now(UTC)
    )


def make_capture(directory: Path, ext: str) -> Path:
    """A small real capture: a 160x120 gradient as JPEG or PNG, or 10 frames of MP4."""
    y, x = np.mgrid[0:120, 0:160]
    rgb = np.stack([x * 255 // 159, y * 255 // 119, (x + y) % 256], axis=-1).astype(np.uint8)
    path = directory / f"capture.{ext}"
    if ext == "mp4":
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10, (160, 120))
        for i in range(10):
            writer.write(np.roll(rgb, 4 * i, axis=1)[:, :, ::-1].copy())
        writer.release()
    else:
        Image.fromarray(rgb).save(path, quality=90)
    assert path.stat().st_size > 0
    return path


@pytest.mark.parametrize(("ext", "media_type"), MEDIA)
def test_signed_capture_reads_back_trusted(
    tmp_path: Path,
    pool: ReaderPool,
    authority: Authority,
    device: DeviceKey,
    chain: bytes,
    ext: str,
    media_type: str,
) -> None:
    src = make_capture(tmp_path, ext)
    dst = tmp_path / f"signed.{ext}"
    binding = embed_manifest(src, dst, media_type, device, chain, EVIDENCE, CHECKPOINT)

    original = hashlib.sha256(src.read_bytes()).digest()
    assert binding == original
    assert content_sha256(dst.read_bytes(), media_type) == original
    assert dst.read_bytes() != src.read_bytes()

    result = read_c2pa(dst, media_type, C2paTrust(authority.certificate_pem), pool=pool)
    assert (result.validation_state, result.validation_codes) == ("Trusted", ())
    assert result.trusted_anchor is True
    assert result.signer == device.key_id.hex()
    assert (result.signer_org, result.signing_alg) == ("Media Provenance", "Ed25519")
    assert result.claim_generator is not None
    assert result.claim_generator.startswith("media-provenance")
    assert [(a.action, a.digital_source_type) for a in result.actions] == [
        ("c2pa.created", DIGITAL_CAPTURE)
    ]
    assert result.provenance_assertion == {"evidence": EVIDENCE, "checkpoint": CHECKPOINT}

    untrusted = read_c2pa(dst, media_type, None, pool=pool)
    assert untrusted.validation_state == "Valid"
    assert untrusted.validation_codes == ("signingCredential.untrusted",)
    assert untrusted.trusted_anchor is False


@pytest.mark.parametrize(
    ("ext", "media_type", "code"),
    [
        ("jpg", "image/jpeg", "assertion.dataHash.mismatch"),
        ("png", "image/png", "assertion.dataHash.mismatch"),
        ("mp4", "video/mp4", "assertion.bmffHash.mismatch"),
    ],
)
def test_one_flipped_media_byte_breaks_both_bindings(
    tmp_path: Path,
    pool: ReaderPool,
    authority: Authority,
    device: DeviceKey,
    chain: bytes,
    ext: str,
    media_type: str,
    code: str,
) -> None:
    src = make_capture(tmp_path, ext)
    dst = tmp_path / f"signed.{ext}"
    binding = embed_manifest(src, dst, media_type, device, chain, EVIDENCE, None)
    data = bytearray(dst.read_bytes())
    # A byte of pixel/sample data: in the JPEG scan, the last IDAT, the mdat.
    if ext == "jpg":
        at = len(data) - 200
    elif ext == "png":
        at = data.rindex(b"IDAT") + 20
    else:
        at = data.index(b"mdat") + 100
    data[at] ^= 0x01
    tampered = bytes(data)

    assert content_sha256(tampered, media_type) != binding
    result = read_c2pa(tampered, media_type, C2paTrust(authority.certificate_pem), pool=pool)
    assert (result.validation_state, result.validation_codes) == ("Invalid", (code,))


def test_edited_manifest_breaks_c2pa_but_not_the_content_hash(
    tmp_path: Path,
    pool: ReaderPool,
    authority: Authority,
    device: DeviceKey,
    chain: bytes,
) -> None:
    # Our hash leaves the manifest store out; the store is covered by its own signature.
    src = make_capture(tmp_path, "jpg")
    dst = tmp_path / "signed.jpg"
    binding = embed_manifest(src, dst, "image/jpeg", device, chain, EVIDENCE, CHECKPOINT)
    data = bytearray(dst.read_bytes())
    at = data.index(b"provenance.example/log\n42")
    data[at + 23] = ord("9")
    assert content_sha256(bytes(data), "image/jpeg") == binding
    result = read_c2pa(bytes(data), "image/jpeg", C2paTrust(authority.certificate_pem), pool=pool)
    assert result.validation_state == "Invalid"
    assert "assertion.hashedURI.mismatch" in result.validation_codes


def test_refuses_a_source_that_already_carries_a_manifest(
    tmp_path: Path, device: DeviceKey, chain: bytes
) -> None:
    with pytest.raises(MediaError, match="already carries"):
        embed_manifest(
            FIXTURES / "generated/gen_ed25519_capture.jpg",
            tmp_path / "x.jpg",
            "image/jpeg",
            device,
            chain,
            EVIDENCE,
            None,
        )
    assert not (tmp_path / "x.jpg").exists()


def test_refuses_unsupported_media_and_a_foreign_certificate(
    tmp_path: Path, device: DeviceKey, chain: bytes
) -> None:
    src = make_capture(tmp_path, "png")
    with pytest.raises(MediaError, match="cannot embed C2PA in 'image/gif'"):
        embed_manifest(src, tmp_path / "x.gif", "image/gif", device, chain, EVIDENCE, None)
    with pytest.raises(KeyMaterialError, match="does not certify this device key"):
        embed_manifest(
            src, tmp_path / "x.png", "image/png", DeviceKey.generate(), chain, EVIDENCE, None
        )


def test_expired_certificate_fails_to_sign(
    tmp_path: Path, authority: Authority, device: DeviceKey
) -> None:
    old = issue_device_certificate(
        authority,
        device.public_key,
        "old",
        now=datetime.now(UTC) - timedelta(days=30),
        validity=timedelta(days=1),
    )
    with pytest.raises(SignatureError, match="C2PA signing failed"):
        embed_manifest(
            make_capture(tmp_path, "jpg"),
            tmp_path / "x.jpg",
            "image/jpeg",
            device,
            old,
            EVIDENCE,
            None,
        )
    assert not (tmp_path / "x.jpg").exists()


class _BrokenKey:
    def __init__(self, public_key: bytes) -> None:
        self.public_key = public_key

    def sign(self, message: bytes) -> bytes:
        raise RuntimeError("secure element unavailable")


def test_key_failure_is_a_signature_error(tmp_path: Path, device: DeviceKey, chain: bytes) -> None:
    with pytest.raises(SignatureError, match="secure element unavailable"):
        embed_manifest(
            make_capture(tmp_path, "png"),
            tmp_path / "x.png",
            "image/png",
            _BrokenKey(device.public_key),
            chain,
            EVIDENCE,
            None,
        )


def test_a_link_is_refused_never_replaced_by_a_regular_file(
    tmp_path: Path, device: DeviceKey, chain: bytes
) -> None:
    """`embed_manifest` writes a new file and renames it over ``dst_path``: over a symbolic
    link that replaced the link with a regular file (the file it points to left without
    the manifest), over a name with other hard links it left those with the old bytes.
    Called directly (not only through `prov sign --c2pa`, which checks first), it refuses
    both, saying why, and changes nothing. Before: the link became a regular file."""
    src = make_capture(tmp_path, "jpg")
    before = src.read_bytes()
    link = tmp_path / "link.jpg"
    link.symlink_to(src)
    elsewhere = tmp_path / "elsewhere.jpg"
    elsewhere.symlink_to(tmp_path / "missing.jpg")  # a link to nothing yet, as destination
    hard = tmp_path / "hard.jpg"
    os.link(src, hard)
    other = tmp_path / "other"
    other.mkdir()
    cases = [
        (link, link, f"link.jpg is a symbolic link \\(to {src}\\)"),
        (make_capture(other, "jpg"), elsewhere, "elsewhere.jpg is a symbolic link"),
        (hard, hard, "hard.jpg has 2 hard links"),
    ]
    for source, dst, words in cases:
        with pytest.raises(MediaError, match=words):
            embed_manifest(source, dst, "image/jpeg", device, chain, EVIDENCE, None)
    assert link.is_symlink() and elsewhere.is_symlink() and not (tmp_path / "missing.jpg").exists()
    assert src.read_bytes() == before and os.stat(src).st_nlink == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "capture.jpg",
        "elsewhere.jpg",
        "hard.jpg",
        "link.jpg",
        "other",
    ]  # no temporary file left
