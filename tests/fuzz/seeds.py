"""Build the seed corpus of every fuzz target into a folder (git-ignored ``.fuzz/``).

Seeds are real inputs, made deterministically: sidecars, claims, receipts and signed
checkpoints made with the fixed keys of `targets`, C2PA-carrying files and media from
``../shared/fixtures`` and ``clients/samples`` (shrunk: pixel payloads cut short, so the
fuzzer spends its time on the structure the parsers walk), and small archives of them.
Each seed's file name is its SHA-1, so building again adds nothing twice.

Usage: python -m tests.fuzz.seeds OUT_DIR
"""

from __future__ import annotations

import hashlib
import io
import struct
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from PIL import Image

from provenance.core.binding import PerceptualHash
from provenance.core.claims import Claim, HardBinding
from provenance.log.checkpoint import Checkpoint
from provenance.wire import convert as wire
from provenance.wire.sidecar import Sidecar, encode_sidecar

from . import targets as t

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "clients" / "samples"
C2PA = ROOT.parent / "shared" / "fixtures" / "c2pa"

#: Largest input each target is fuzzed with, in bytes (libFuzzer -max_len).
MAX_LEN = {
    "sidecar": 16384,
    "wire": 4096,
    "checkpoint": 2048,
    "c2pa_strip": 32768,
    "media": 8192,
    "archive": 16384,
    "multipart": 4096,
}


def _sidecars() -> Iterator[bytes]:
    signed = t.SIGNED
    receipt = t.sample_receipt(signed)
    pk = t.DEVICE_KEY.public_key
    yield encode_sidecar(Sidecar(signed, pk))
    yield encode_sidecar(Sidecar(signed, pk, receipt, t.LOG_SIGNER.verifier_key()))
    yield encode_sidecar(Sidecar(signed, pk, t.sample_receipt(signed, 1, 0)))
    video = t.sample_signed_claim(2, "video/mp4")
    chunks = tuple(hashlib.sha256(b"chunk %d" % i).digest() for i in range(3))
    yield encode_sidecar(Sidecar(video, pk, chunk_hashes=chunks))


def _claims() -> Iterator[bytes]:
    yield t.SIGNED.claim_bytes
    yield t.sample_signed_claim(7, "video/mp4").claim_bytes
    frames = tuple(
        PerceptualHash("pdq", hashlib.sha256(b"%d" % i).digest(), 100, float(i)) for i in range(3)
    )
    video = Claim(
        device_id=t.DEVICE_KEY.key_id,
        sequence=9,
        captured_at=t.WHEN,
        media_type="video/mp4",
        size_bytes=99999,
        hard_binding=HardBinding(hashlib.sha256(b"v").digest(), 65536, 2, bytes(32)),
        soft_bindings=frames,
        duration_seconds=2.5,
        frame_sample_rate=1.0,
        metadata={"app": "fuzz/1", "k": "v"},
    )
    yield wire.encode_claim(video)


def _wire() -> Iterator[bytes]:
    for claim in _claims():
        yield b"\x00" + claim
    yield b"\x01" + wire.encode_log_entry(t.SIGNED, t.WHEN)
    for receipt in (t.sample_receipt(t.SIGNED), t.sample_receipt(t.SIGNED, 1, 0)):
        yield b"\x02" + wire.encode_receipt(receipt)
    yield b"\x02" + wire.encode_receipt(t.sample_receipt(t.SIGNED, 8, 7))


def _checkpoints() -> Iterator[bytes]:
    root = hashlib.sha256(b"root").digest()
    for cp in (
        Checkpoint(t.LOG_ORIGIN, 5, root, t.WHEN),
        Checkpoint(t.LOG_ORIGIN, 0, root),
        Checkpoint(t.LOG_ORIGIN, 123456789, root, t.WHEN.replace(microsecond=0)),
    ):
        yield cp.body()
        yield t.LOG_SIGNER.sign(cp).encode()
    yield t.sample_receipt(t.SIGNED).checkpoint.encode()
    yield t.LOG_SIGNER.verifier_key().encode()


def _jpeg_head(data: bytes) -> bytes:
    """A JPEG cut 64 bytes after its first start-of-scan (the manifest lies before it)."""
    sos = data.find(b"\xff\xda")
    return data if sos < 0 else data[: sos + 64]


def _png_small(data: bytes) -> bytes:
    """A PNG with every IDAT chunk cut to 16 bytes (CRCs are not checked by the stripper)."""
    out, pos = bytearray(data[:8]), 8
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if kind == b"IDAT":
            out += struct.pack(">I4s", 16, kind) + data[pos + 8 : pos + 24] + b"\0\0\0\0"
        else:
            out += data[pos:end]
        pos = end
    return bytes(out + data[pos:])


def _bmff_small(data: bytes) -> bytes:
    """An MP4 with its top-level mdat payload cut to 16 bytes."""
    out, pos = bytearray(), 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size < 8:
            break
        if kind == b"mdat":
            out += struct.pack(">I4s", 24, kind) + data[pos + 8 : pos + 24]
        else:
            out += data[pos : pos + size]
        pos += size
    return bytes(out)


def _c2pa_strip() -> Iterator[bytes]:
    gen, rs = C2PA / "generated", C2PA / "third_party" / "c2pa-rs"
    for name in ("gen_ed25519_capture.jpg", "gen_edited_with_parent.jpg", "gen_sidecar_asset.jpg"):
        yield b"\x00" + _jpeg_head((gen / name).read_bytes())
    yield b"\x00" + _jpeg_head((SAMPLES / "grace_hopper.jpg").read_bytes())
    for path in (gen / "gen_ed25519_capture.png", rs / "libpng-test.png"):
        yield b"\x01" + _png_small(path.read_bytes())
    for path in (gen / "gen_ed25519_capture.mp4", gen / "gen_ed25519_capture.mov"):
        yield b"\x02" + _bmff_small(path.read_bytes())
    yield b"\x02" + (rs / "dashinit.mp4").read_bytes()


def _small_images() -> Iterator[bytes]:
    """Small images of every decodable format (and EXIF orientation), from the samples."""
    with Image.open(SAMPLES / "rocket.jpg") as im:
        rgb = im.convert("RGB").resize((24, 16))
    for fmt, extra in (
        ("JPEG", {"quality": 70}),
        ("PNG", {}),
        ("WEBP", {"quality": 50}),
        ("GIF", {}),
        ("TIFF", {}),
    ):
        buf = io.BytesIO()
        rgb.save(buf, fmt, **extra)
        yield buf.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", exif=exif.tobytes())
    yield buf.getvalue()
    buf = io.BytesIO()
    rgb.convert("RGBA").save(buf, "PNG")
    yield buf.getvalue()
    buf = io.BytesIO()
    rgb.convert("P").save(buf, "GIF", save_all=True, append_images=[rgb.convert("P")])
    yield buf.getvalue()


def _media() -> Iterator[bytes]:
    yield from _small_images()
    for path in (
        SAMPLES / "fabric_pattern.mp4",
        C2PA / "generated" / "gen_ed25519_capture.mov",
        C2PA / "third_party" / "c2pa-python" / "C.dng",
    ):
        yield path.read_bytes()[:512]
    yield b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm\x42\x87\x81\x02"
    yield b"plain text, not an image\n"


def _zip(entries: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name, (2026, 1, 1, 0, 0, 0)), data, compression)
    return buf.getvalue()


def _tar(
    entries: list[tuple[str, bytes]], mode: Literal["w", "w:gz", "w:bz2", "w:xz"] = "w"
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "../etc/passwd"
        tf.addfile(link)
    return buf.getvalue()


def _archives() -> Iterator[bytes]:
    images = list(_small_images())
    side = next(_sidecars())
    entries = [("a.jpg", images[0]), ("a.jpg.prov", side), ("dir/b.png", images[1])]
    yield _zip(entries)
    yield _zip(entries + [("../evil.jpg", images[0]), ("inner.zip", _zip(entries[:1]))])
    # a look-alike: an entry named as the nested archive's entry's ref would be
    yield _zip(entries + [("inner.zip", _zip(entries[:1])), ("inner.zip!a.jpg", images[1])])
    yield _zip(entries, zipfile.ZIP_STORED)
    yield _zip(entries[:1], zipfile.ZIP_BZIP2)
    yield _zip(entries[:1], zipfile.ZIP_LZMA)
    yield _tar(entries)
    yield _tar(entries + [("inner.tar", _tar(entries[:1]))], "w:gz")
    yield _tar(entries[:1], "w:bz2")
    yield _tar(entries[:1], "w:xz")


def _form_part(disposition: bytes, value: bytes, *headers: bytes) -> bytes:
    head = b"".join(
        h + b"\r\n" for h in (b"Content-Disposition: form-data; " + disposition, *headers)
    )
    return b"--XyZ\r\n" + head + b"\r\n" + value + b"\r\n"


def _forms() -> Iterator[bytes]:
    """Multipart bodies (boundary `targets.FORM_BOUNDARY`) as browsers, curl and other
    senders write them; each with a first byte choosing the piece size."""
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256))[:96]
    file = _form_part(b'name="file"; filename="photo.jpg"', jpeg)
    end = b"--XyZ--\r\n"
    bodies = [
        file + end,
        b"A preamble.\r\n" + file + end,
        b"\r\n" + file + end + b"an epilogue\r\n",
        _form_part(b'name="detect"', b"false") + _form_part(b'name="sidecar"', b"{}") + file + end,
        _form_part(b"name=\"file\"; filename*=UTF-8''caf%C3%A9.jpg", jpeg) + end,
        _form_part(b'name="file"; filename="a%22b.jpg"', jpeg, b"Content-Type: image/jpeg") + end,
        _form_part(b'name="file"; filename="x.jpg"', jpeg, b"Content-Transfer-Encoding: base64")
        + end,
        _form_part(b'name="photo"; filename="h.jpg"', b"tiny") + end,
        file,  # truncated
    ]
    for i, body in enumerate(bodies):
        yield bytes([i * 5]) + body


SEEDS = {
    "sidecar": _sidecars,
    "wire": _wire,
    "checkpoint": _checkpoints,
    "c2pa_strip": _c2pa_strip,
    "media": _media,
    "archive": _archives,
    "multipart": _forms,
}


def build(out: Path, names: list[str] | None = None) -> dict[str, int]:
    """Write the seeds of ``names`` (default: all) to ``out/NAME/``; return seed counts."""
    counts = {}
    for name in names or list(SEEDS):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        seeds = list(SEEDS[name]())
        too_long = [len(s) for s in seeds if len(s) > MAX_LEN[name]]
        if too_long:
            raise ValueError(f"{name}: seeds of {too_long} bytes exceed {MAX_LEN[name]}")
        for seed in seeds:
            (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
        counts[name] = len(seeds)
    return counts


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
