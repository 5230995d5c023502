"""Sniffing media types and decoding untrusted images within limits."""

from __future__ import annotations

import csv
import io
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from provenance.core.binding import hamming, pdq_hash
from provenance.core.errors import MediaError, MediaTooLargeError
from provenance.media.assets import AssetLimits, inspect_image
from provenance.media.image import (
    DEFAULT_MAX_PIXELS,
    PDQ_MIN_SIDE,
    SNIFF_BYTES,
    DecodedImage,
    decode_image,
    image_soft_binding,
    pdq_scale,
    sniff_media_type,
)

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
PHASH = FIXTURES / "phash"
C2PA = FIXTURES / "c2pa"
CAPTURE_JPG = C2PA / "generated" / "gen_ed25519_capture.jpg"

with (PHASH / "README.tsv").open(newline="") as f:
    PYPI_HASHES = {
        row["file"]: row["pdqhash_0.2.8+Pillow13_hex"]
        for row in csv.DictReader(f, delimiter="\t")
        if len(row["pdqhash_0.2.8+Pillow13_hex"]) == 64
    }


def png_header(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR claiming width x height RGB8, and one tiny IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64)))


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def gradient(width: int = 96, height: int = 64) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=2))


def video_head(tmp_path: Path, name: str, fourcc: str) -> bytes:
    """First bytes of a real container written by OpenCV's FFmpeg backend."""
    path = tmp_path / name
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), 10, (64, 48))
    assert writer.isOpened()
    for i in range(3):
        writer.write(np.full((48, 64, 3), 60 * i, np.uint8))
    writer.release()
    return path.read_bytes()[:SNIFF_BYTES]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (CAPTURE_JPG, "image/jpeg"),
        (C2PA / "generated" / "gen_ed25519_capture.png", "image/png"),
        (C2PA / "third_party" / "c2pa-rs" / "malformed" / "tiff_poc.tiff", "image/tiff"),
        (C2PA / "third_party" / "c2pa-python" / "C.dng", "image/tiff"),
        (C2PA / "generated" / "gen_ed25519_capture.mp4", "video/mp4"),
        (C2PA / "third_party" / "c2pa-rs" / "legacy.mp4", "video/mp4"),
        (C2PA / "third_party" / "c2pa-rs" / "dashinit.mp4", "video/mp4"),
        (C2PA / "generated" / "gen_ed25519_capture.mov", "video/quicktime"),
        (C2PA / "third_party" / "c2pa-python" / "sample1_signed.wav", None),
        (
            C2PA / "third_party" / "public-testfiles" / "adobe-20240110-single_manifest_store.pdf",
            None,
        ),
        (PHASH / "README.tsv", None),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else str(v),
)
def test_sniff_fixture_files(path: Path, expected: str | None) -> None:
    with path.open("rb") as f:
        assert sniff_media_type(f.read(SNIFF_BYTES)) == expected


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("WEBP", "image/webp"), ("GIF", "image/gif"), ("TIFF", "image/tiff"), ("BMP", None)],
)
def test_sniff_images_written_by_pillow(fmt: str, expected: str | None) -> None:
    assert sniff_media_type(encode(gradient(), fmt)[:SNIFF_BYTES]) == expected


def test_sniff_webm_and_matroska(tmp_path: Path) -> None:
    assert sniff_media_type(video_head(tmp_path, "clip.webm", "VP80")) == "video/webm"
    assert sniff_media_type(video_head(tmp_path, "clip.mkv", "XVID")) == "video/x-matroska"
    # The EBML magic alone: DocType defaults to "matroska".
    assert sniff_media_type(b"\x1a\x45\xdf\xa3") == "video/x-matroska"


@pytest.mark.parametrize(
    ("brand", "expected"),
    [
        (b"heic", "image/heic"),
        (b"heix", "image/heic"),
        (b"mif1", "image/heic"),
        (b"avif", "image/avif"),
        (b"isom", "video/mp4"),
        (b"mp42", "video/mp4"),
        (b"avc1", "video/mp4"),
        (b"qt  ", "video/quicktime"),
        (b"M4A ", None),
    ],
)
def test_sniff_iso_bmff_brands(brand: bytes, expected: str | None) -> None:
    ftyp = struct.pack(">I", 24) + b"ftyp" + brand + bytes(4) + brand + b"mif1"
    assert sniff_media_type(ftyp) == expected


@pytest.mark.parametrize("head", [b"", b"\xff\xd8", b"GIF8", b"hello", bytes(64)])
def test_sniff_short_or_unknown_is_none(head: bytes) -> None:
    assert sniff_media_type(head) is None


def test_decode_valid_jpeg_fixture() -> None:
    image = decode_image(CAPTURE_JPG.read_bytes())
    assert (image.width, image.height, image.media_type) == (320, 240, "image/jpeg")
    assert image.rgb.shape == (240, 320, 3)
    assert image.rgb.dtype == np.uint8
    assert not image.rgb.flags.writeable


# I16.png is 16-bit grey: Pillow's own RGB conversion (which the reference used) clips it
# to near white (quality 36); decode_image scales 16 bits to 8 and hashes the real
# picture (tests/test_hostile_media.py).
@pytest.mark.parametrize("relative", sorted(set(PYPI_HASHES) - {"python-threatexchange/I16.png"}))
def test_soft_binding_of_decoded_fixture_equals_reference(relative: str) -> None:
    image = decode_image((PHASH / relative).read_bytes())
    assert image_soft_binding(image).hex == PYPI_HASHES[relative]


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "GIF", "WEBP"])
def test_lossless_formats_decode_to_the_same_pixels(fmt: str) -> None:
    source = gradient().convert("P").convert("RGB") if fmt == "GIF" else gradient()
    params = {"lossless": True} if fmt == "WEBP" else {}
    image = decode_image(encode(source, fmt, **params))
    assert image.media_type == f"image/{fmt.lower()}"
    np.testing.assert_array_equal(image.rgb, np.asarray(source))


def test_alpha_and_sixteen_bit_images_become_rgb() -> None:
    for relative in ("pdq/misc-images/c.png", "python-threatexchange/I16.png"):
        image = decode_image((PHASH / relative).read_bytes())
        assert image.rgb.shape == (image.height, image.width, 3)


def test_pillow_warnings_on_valid_files_do_not_escape() -> None:
    # A palette PNG with tRNS transparency: Pillow warns when converting it to RGB.
    data = (C2PA / "third_party" / "c2pa-rs" / "libpng-test.png").read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = decode_image(data)
    assert image.media_type == "image/png"
    assert image.rgb.shape == (image.height, image.width, 3)


def test_exif_orientation_is_applied() -> None:
    source = gradient(96, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    data = encode(source, "PNG", exif=exif)
    image = decode_image(data)
    assert (image.width, image.height) == (64, 96)
    np.testing.assert_array_equal(
        image.rgb, np.asarray(source.transpose(Image.Transpose.ROTATE_270))
    )


def test_empty_file() -> None:
    with pytest.raises(MediaError, match="^empty file$"):
        decode_image(b"")


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_jpeg(keep: float) -> None:
    data = CAPTURE_JPG.read_bytes()
    with pytest.raises(MediaError, match="truncated or corrupt image") as caught:
        decode_image(data[: int(len(data) * keep)])
    assert not isinstance(caught.value, MediaTooLargeError)


def test_jpeg_cut_inside_its_header() -> None:
    with pytest.raises(MediaError, match="truncated or corrupt image"):
        decode_image(CAPTURE_JPG.read_bytes()[:200])


def test_random_bytes() -> None:
    data = np.random.default_rng(1).bytes(4096)
    with pytest.raises(MediaError, match=r"unrecognized format \(first bytes "):
        decode_image(data)


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "holiday.jpg"
    path.write_text("<html><body>Not really a photo</body></html>\n")
    with pytest.raises(MediaError, match="looks like text"):
        decode_image(path.read_bytes())


def test_video_is_not_a_still_image() -> None:
    data = (C2PA / "generated" / "gen_ed25519_capture.mp4").read_bytes()
    with pytest.raises(MediaError, match="looks like video/mp4"):
        decode_image(data)


def test_avif_without_decoder_names_the_type() -> None:
    ftyp = struct.pack(">I", 24) + b"ftypavif" + bytes(4) + b"mif1avif"
    with pytest.raises(MediaError, match="looks like image/avif"):
        decode_image(ftyp + bytes(100))


def test_hostile_tiff_is_a_media_error() -> None:
    data = (C2PA / "third_party" / "c2pa-rs" / "malformed" / "tiff_poc.tiff").read_bytes()
    with pytest.raises(MediaError, match="truncated or corrupt image"):
        decode_image(data)


def test_png_header_claiming_50000x50000_pixels() -> None:
    with pytest.raises(MediaTooLargeError, match="2500000000 pixels.*100000000 pixels"):
        decode_image(png_header(50_000, 50_000))


def test_pixel_limit_is_checked_before_decoding() -> None:
    # 108 megapixels claimed, 64 bytes of pixel data: refused by size, not by truncation.
    data = png_header(12_000, 9_000)
    with pytest.raises(
        MediaTooLargeError, match=r"12000x9000 = 108000000 pixels, over the limit of 100000000"
    ):
        decode_image(data)
    assert DEFAULT_MAX_PIXELS == 100_000_000
    # Above the limit the same bytes reach the decoder, which finds them truncated; and
    # Pillow's decompression-bomb warning (this is over its 89.5 MP) does not escape.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(MediaError, match="truncated or corrupt image"):
            decode_image(data, max_pixels=200_000_000)


def test_custom_pixel_limit_on_a_real_image() -> None:
    data = CAPTURE_JPG.read_bytes()
    decode_image(data, max_pixels=320 * 240)
    with pytest.raises(MediaTooLargeError, match="76800 pixels, over the limit of 76799"):
        decode_image(data, max_pixels=320 * 240 - 1)


def test_decoded_image_checks_its_shape() -> None:
    with pytest.raises(MediaError, match="do not match"):
        DecodedImage(np.zeros((4, 5, 3), np.uint8), width=4, height=5, media_type="image/png")


# ------------------------------------------------------------ downscale-first PDQ


@pytest.mark.parametrize(
    ("size", "scale"),
    [((4000, 3000), 4), ((3000, 4000), 4), ((1600, 1004), 1), ((2000, 1404), 2), ((9000, 4100), 8)],
)
def test_pdq_scale_keeps_the_shorter_side(size: tuple[int, int], scale: int) -> None:
    assert pdq_scale(*size) == scale
    assert min(size) // scale >= PDQ_MIN_SIDE


def _upscaled_jpeg(relative: str, long_side: int) -> bytes:
    im = Image.open(PHASH / relative).convert("RGB")
    k = long_side / max(im.size)
    big = im.resize((round(im.width * k), round(im.height * k)), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("relative", "long_side", "scale"),
    [
        ("python-threatexchange/letterboxed_sample-b.jpg", 0, 2),
        ("pdq/bridge-mods/aaa-orig.jpg", 3300, 4),
    ],
)
def test_large_jpeg_is_hashed_at_a_reduced_scale_within_bits_of_full_size(
    relative: str, long_side: int, scale: int
) -> None:
    """Downscale-first PDQ stays within 12 bits of the full-size hash (the worst of the
    shared vectors, bench/bench_image.py); width, height and the detector's pixels stay
    full size."""
    data = _upscaled_jpeg(relative, long_side) if long_side else (PHASH / relative).read_bytes()
    asset = inspect_image(b"\0" * 32, data, AssetLimits())
    full = decode_image(data)
    assert asset.hashed.scale == scale
    assert asset.hashed.width == -(-full.width // scale)
    assert (asset.width, asset.height) == (full.width, full.height)
    assert asset.rgb.shape == full.rgb.shape
    assert hamming(asset.soft.hash, pdq_hash(full.rgb).hash) <= 12
    # the same bytes always give the same hash: signer and verifier agree exactly
    assert inspect_image(b"\0" * 32, data, AssetLimits()).soft == asset.soft


def test_small_jpeg_and_png_are_hashed_at_full_size() -> None:
    data = (PHASH / "pdq/bridge-mods/aaa-orig.jpg").read_bytes()
    asset = inspect_image(b"\0" * 32, data, AssetLimits())
    assert asset.hashed.scale == 1
    assert asset.rgb is asset.hashed.rgb
    assert asset.soft == pdq_hash(decode_image(data).rgb)


def test_rotated_large_jpeg_reports_its_displayed_size() -> None:
    im = Image.new("RGB", (2400, 1200), (90, 140, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    asset = inspect_image(b"\0" * 32, buf.getvalue(), AssetLimits())
    assert asset.hashed.scale == 2
    assert (asset.width, asset.height) == (1200, 2400)
    assert (asset.hashed.width, asset.hashed.height) == (600, 1200)
