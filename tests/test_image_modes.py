"""Every pixel layout Pillow opens a still image in gets a meaningful PDQ soft binding,
the same on the signing and the verifying side, or a clear refusal naming the layout:
never a hash of an all-black or all-white picture, never a traceback.

Before, a 32-bit floating-point TIFF (Pillow mode "F") of samples in 0..1, the usual
range, hashed as all black (quality 0, matched to nothing), as did one of any range
beyond 0..255; signed 16-bit and 32-bit integer TIFFs (mode "I") lost their negative
samples and those over 65535; a 16-bit WhiteIsZero TIFF hashed as its negative; and a
TIFF of a sample layout Pillow cannot read was "truncated or corrupt".

Real files: made with Pillow where it can write the layout, else written here byte by
byte (a TIFF header, one IFD and one uncompressed strip), and decoded by the real
decoder; the end-to-end test signs, verifies and scans with the real `prov` and a real
server."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clients.scan.sources import FileItem
from clients.scan.worker import ScanConfig, process_batch
from provenance.core.binding import PDQ_MIN_QUALITY, PerceptualHash, hamming, pdq_hash
from provenance.core.errors import MediaError
from provenance.media.image import decode_image, image_soft_binding
from tests.conftest import SAMPLES, Cli

#: The most bits a layout's hash may differ from the 8-bit picture's: 8-bit rounding
#: of a rescaled picture moves a few bits (the match threshold is 31).
NEAR = 8


def _grey8() -> np.ndarray:
    """A real photo in 8-bit grey (Grace Hopper, 512x600)."""
    with Image.open(SAMPLES / "grace_hopper.jpg") as im:
        return np.asarray(im.convert("L"))


GREY8 = _grey8()


def _hash(grey: np.ndarray) -> PerceptualHash:
    return pdq_hash(np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2)))


def _save(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def raw_tiff(samples: np.ndarray, sample_format: int, photometric: int = 1) -> bytes:
    """A little-endian TIFF of one uncompressed strip holding ``samples`` ((H, W) grey or
    (H, W, N)) as they are in memory: SampleFormat ``sample_format`` (1 unsigned, 2
    signed, 3 floating point), BitsPerSample from the dtype, PhotometricInterpretation
    ``photometric`` (0 WhiteIsZero, 1 BlackIsZero, 2 RGB)."""
    data = np.ascontiguousarray(samples.astype(samples.dtype.newbyteorder("<"))).tobytes()
    height, width = samples.shape[:2]
    per_pixel = samples.shape[2] if samples.ndim == 3 else 1
    bits = samples.dtype.itemsize * 8
    shorts = 2 * per_pixel
    tags = [  # (tag, type, count, value): type 3 SHORT, 4 LONG
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, per_pixel, bits),
        (259, 3, 1, 1),
        (262, 3, 1, photometric),
        (273, 4, 1, 0),  # StripOffsets: set below
        (277, 3, 1, per_pixel),
        (278, 4, 1, height),
        (279, 4, 1, len(data)),
        (339, 3, per_pixel, sample_format),
    ]
    ifd_end = 8 + 2 + 12 * len(tags) + 4
    extra = b""  # the values of BitsPerSample and SampleFormat that do not fit 4 bytes
    entries = b""
    for tag, kind, count, value in tags:
        if count > 1 and shorts > 4:
            entries += struct.pack("<HHII", tag, kind, count, ifd_end + len(extra))
            extra += struct.pack(f"<{count}H", *[value] * count)
            continue
        if tag == 273:
            value = ifd_end + 2 * shorts * (shorts > 4)
        payload = (
            struct.pack(f"<{count}H", *[value] * count) if kind == 3 else struct.pack("<I", value)
        )
        entries += struct.pack("<HHI", tag, kind, count) + payload.ljust(4, b"\0")
    assert len(extra) in (0, 2 * shorts)
    return b"II*\x00" + struct.pack("<IH", 8, len(tags)) + entries + b"\0" * 4 + extra + data


def png16(samples: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG of ``samples`` (uint16, (H, W, N)): colour type 2 (RGB) or 4 (grey
    with alpha), written here (Pillow writes 16 bits only for grey)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    height, width = samples.shape[:2]
    rows = samples.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _rgb() -> Image.Image:
    return Image.fromarray(GREY8).convert("RGB")


def _float01() -> np.ndarray:
    return (GREY8 / np.float32(255)).astype(np.float32)


#: name -> (file bytes, the Pillow mode it opens in, the 8-bit grey picture it shows).
LAYOUTS: dict[str, tuple[bytes, str, np.ndarray]] = {
    "F 0..1 (Pillow)": (_save(Image.fromarray(_float01(), "F"), "TIFF"), "F", GREY8),
    "F 0..255 (Pillow)": (_save(Image.fromarray(GREY8).convert("F"), "TIFF"), "F", GREY8),
    "F -1000..1000": (raw_tiff(_float01() * 2000 - 1000, 3), "F", GREY8),
    "F huge": (raw_tiff(_float01() * np.float32(6e37) - np.float32(3e37), 3), "F", GREY8),
    "I;16 PNG": (_save(Image.fromarray(GREY8.astype(np.uint16) * 257), "PNG"), "I;16", GREY8),
    "I;16 TIFF": (_save(Image.fromarray(GREY8.astype(np.uint16) * 257), "TIFF"), "I;16", GREY8),
    "I;16 WhiteIsZero": (raw_tiff((255 - GREY8).astype(np.uint16) * 257, 1, 0), "I;16", GREY8),
    "I 0..255": (_save(Image.fromarray(GREY8.astype(np.int32), "I"), "TIFF"), "I", GREY8),
    "I 0..65535": (_save(Image.fromarray(GREY8.astype(np.int32) * 257, "I"), "TIFF"), "I", GREY8),
    "I signed 16-bit": (raw_tiff((GREY8.astype(np.int16) - 128) * 200, 2), "I", GREY8),
    "I signed 32-bit": (raw_tiff((GREY8.astype(np.int32) - 128) * 8_000_000, 2), "I", GREY8),
    "I unsigned 32-bit": (raw_tiff(GREY8.astype(np.uint32) * 16_843_009, 1), "I", GREY8),
    "RGB 16-bit PNG": (png16(np.stack([GREY8.astype(np.uint16) * 257] * 3, -1), 2), "RGB", GREY8),
    "LA 16-bit PNG": (
        png16(np.stack([GREY8.astype(np.uint16) * 257, np.full_like(GREY8, 9, np.uint16)], -1), 4),
        "RGBA",
        GREY8,
    ),
    "L": (_save(Image.fromarray(GREY8), "PNG"), "L", GREY8),
    "LA": (_save(Image.fromarray(GREY8).convert("LA"), "PNG"), "LA", GREY8),
    "PA": (_save(Image.fromarray(GREY8).convert("P").convert("PA"), "TIFF"), "PA", GREY8),
    "P": (_save(Image.fromarray(GREY8).convert("P"), "PNG"), "P", GREY8),
    "RGBA": (_save(_rgb().convert("RGBA"), "PNG"), "RGBA", GREY8),
    "CMYK TIFF": (_save(_rgb().convert("CMYK"), "TIFF"), "CMYK", GREY8),
    "CMYK JPEG": (_save(_rgb().convert("CMYK"), "JPEG"), "CMYK", GREY8),
    "YCbCr TIFF": (_save(_rgb().convert("YCbCr"), "TIFF"), "YCbCr", GREY8),
    "LAB TIFF": (_save(_rgb().convert("LAB"), "TIFF"), "LAB", GREY8),
    "1 PNG": (
        _save(Image.fromarray(GREY8).convert("1"), "PNG"),
        "1",
        np.asarray(Image.fromarray(GREY8).convert("1").convert("L")),
    ),
    "1 TIFF": (
        _save(Image.fromarray(GREY8).convert("1"), "TIFF"),
        "1",
        np.asarray(Image.fromarray(GREY8).convert("1").convert("L")),
    ),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_each_layout_hashes_as_the_picture_it_shows(name: str) -> None:
    data, mode, shown = LAYOUTS[name]
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == mode, (name, im.mode)  # the layout the test means to try
    image = decode_image(data)
    soft = image_soft_binding(image)
    expected = _hash(shown)
    assert soft.quality >= PDQ_MIN_QUALITY, (name, soft.quality)
    assert hamming(soft.hash, expected.hash) <= NEAR, (name, hamming(soft.hash, expected.hash))
    # the signing and the verifying side decode the same bytes to the same hash
    assert image_soft_binding(decode_image(data)) == soft


#: Layouts handled before whose hashes must stay bit for bit what they were: 8-bit ones
#: through Pillow's own conversion to RGB, 16-bit through ``value >> 8``.
BIT_IDENTICAL = [
    "L",
    "LA",
    "PA",
    "P",
    "RGBA",
    "CMYK TIFF",
    "CMYK JPEG",
    "YCbCr TIFF",
    "LAB TIFF",
    "1 PNG",
    "1 TIFF",
    "RGB 16-bit PNG",
    "LA 16-bit PNG",
    "I;16 PNG",
    "I;16 TIFF",
    "I 0..255",
    "I 0..65535",
]


@pytest.mark.parametrize("name", BIT_IDENTICAL)
def test_layouts_handled_before_keep_their_hashes_bit_for_bit(name: str) -> None:
    data, _, _ = LAYOUTS[name]
    with Image.open(io.BytesIO(data)) as im:
        if im.mode.startswith("I"):  # the rule before: clipped to 0..65535, >> 8
            grey = np.asarray(im)
            old = np.clip(grey, 0, 255) if grey.max() <= 255 else np.clip(grey, 0, 65535) >> 8
            rgb = np.asarray(Image.fromarray(old.astype(np.uint8), "L").convert("RGB"))
        else:
            rgb = np.asarray(im.convert("RGB"))
    assert image_soft_binding(decode_image(data)) == pdq_hash(np.ascontiguousarray(rgb))


def test_a_float_tiff_of_0_to_1_is_not_hashed_as_all_black() -> None:
    """The attacker's report: a float TIFF of samples in 0..1 hashed as all black."""
    data = LAYOUTS["F 0..1 (Pillow)"][0]
    image = decode_image(data)
    assert (image.rgb.min(), image.rgb.max()) == (0, 255)  # black to white, not all black
    assert image_soft_binding(image).quality >= PDQ_MIN_QUALITY


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_float_tiff_with_nan_or_infinity_is_refused_naming_the_mode(bad: float) -> None:
    samples = _float01().copy()
    samples[10, 10] = bad
    with pytest.raises(MediaError) as e:
        decode_image(_save(Image.fromarray(samples, "F"), "TIFF"))
    said = str(e.value)
    assert said.startswith(
        "a 32-bit floating-point grey image (Pillow mode F) holding NaN or infinite samples"
    ), said


def test_a_flat_float_tiff_is_flat_not_an_error() -> None:
    image = decode_image(_save(Image.fromarray(np.full((64, 64), 0.5, np.float32), "F"), "TIFF"))
    assert not image.rgb.any()
    assert image_soft_binding(image).quality < PDQ_MIN_QUALITY  # matched to nothing


@pytest.mark.parametrize(
    ("samples", "sample_format", "photometric", "words"),
    [
        (_float01().astype(np.float64), 3, 1, "64-bit floating-point samples, 1 per pixel"),
        (_float01().astype(np.float16), 3, 1, "16-bit floating-point samples, 1 per pixel"),
        (np.stack([_float01()] * 3, -1), 3, 2, "32-bit floating-point samples, 3 per pixel"),
    ],
)
def test_a_tiff_layout_pillow_cannot_read_is_named_not_called_corrupt(
    samples: np.ndarray, sample_format: int, photometric: int, words: str
) -> None:
    with pytest.raises(MediaError) as e:
        decode_image(raw_tiff(samples, sample_format, photometric))
    assert str(e.value) == (
        f"a TIFF of {words}, which the TIFF decoder here cannot read (it reads 1, 8 and"
        " 16-bit integer samples and 32-bit grey ones, integer or floating point), or a"
        " corrupt TIFF"
    )


def test_a_float_tiff_is_signed_verified_found_by_its_8bit_copy_and_scanned(
    enrolled: Cli, tmp_path: Path
) -> None:
    """End to end: `prov sign` of a 0..1 float TIFF, `prov verify` of it
    (SIGNED_ORIGINAL) and of an 8-bit PNG made from it (DERIVED: its soft binding found
    the signed capture; before, the capture's hash was all black and the copy UNSIGNED),
    and `prov scan`'s row of the copy (DERIVED, by the server's Lookup)."""
    tiff = tmp_path / "float.tif"
    tiff.write_bytes(LAYOUTS["F 0..1 (Pillow)"][0])
    rc, out, err = enrolled("sign", str(tiff))
    assert rc == 0, (out, err)
    rc, out, err = enrolled("verify", str(tiff), "--json", "--no-detect")
    assert (rc, json.loads(out)["status"]) == (0, "SIGNED_ORIGINAL"), (out, err)
    copy = tmp_path / "copy.png"
    copy.write_bytes(_save(Image.fromarray(GREY8), "PNG"))
    rc, out, err = enrolled("verify", str(copy), "--json", "--no-detect")
    report = json.loads(out)
    assert (rc, report["status"]) == (10, "DERIVED"), (out, err)
    assert report["evidence"]["pdq_distance"] <= NEAR
    scanned = tmp_path / "scan" / "copy.png"
    scanned.parent.mkdir()
    shutil.copy(copy, scanned)
    (row,) = process_batch(
        [FileItem(str(scanned), str(scanned), scanned.stat().st_size)],
        ScanConfig(enrolled.server),
    )
    assert (row["status"], row["error"]) == ("DERIVED", None), row


def test_a_refused_layout_is_said_by_sign_verify_and_scan(enrolled: Cli, tmp_path: Path) -> None:
    """A float TIFF holding NaN and a 64-bit float TIFF: `prov sign` refuses each (exit
    1) naming what is wrong; `prov verify` and `prov scan` look them up by SHA-256 alone
    and say why. No traceback anywhere."""
    samples = _float01().copy()
    samples[3, 3] = np.nan
    nan = tmp_path / "nan.tif"
    nan.write_bytes(_save(Image.fromarray(samples, "F"), "TIFF"))
    wide = tmp_path / "f64.tif"
    wide.write_bytes(raw_tiff(_float01().astype(np.float64), 3))
    said = {
        nan: "a 32-bit floating-point grey image (Pillow mode F) holding NaN or infinite samples",
        wide: "a TIFF of 64-bit floating-point samples, 1 per pixel, which the TIFF decoder here",
    }
    for path, why in said.items():
        rc, out, err = enrolled("sign", str(path))
        assert rc == 1 and f"{path}: not signed: {why}" in err, (out, err)
        rc, out, err = enrolled("verify", str(path), "--json", "--no-detect")
        report = json.loads(out)
        assert (rc, report["status"]) == (11, "UNSIGNED"), (out, err)
        assert any(why in reason for reason in report["reasons"]), report["reasons"]
        assert "Traceback" not in out + err
    rows = process_batch(
        [FileItem(str(p), str(p), p.stat().st_size) for p in said], ScanConfig(enrolled.server)
    )
    for row, why in zip(rows, said.values(), strict=True):
        assert (row["status"], row["error"]) == ("UNSIGNED", None), row
        assert why in row["note"], row
