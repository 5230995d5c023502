"""The decode budget counts an 8-bit image at what it was measured to take (h-files51).

Every format but WebP was counted at 30 bytes a pixel, so a 24 MP phone photo (an iPhone
15's default 5712x4284 saved as HEIC, PNG or TIFF: 700 MiB by that count) was looked up
by SHA-256 only under the default 384 MiB. Measured on `inspect_image` (peak RSS growth,
bench/bench_decode_formats.py, Pillow 13, pillow-heif 1.9 / libheif 1.23): 8-bit images
peak at 10.9-14.5 bytes a pixel (PNG RGB, RGBA, palette, 16-bit and EXIF-turned; TIFF
RGB, CMYK, 16-bit RGB; HEIC single image, grid of tiles, alpha, 10-bit; GIF; APNG), and
are counted at 16 now; wide grey ("I", "F": 32-bit and float TIFFs, made 8-bit in NumPy
through float64) peak at 21-21.5 and stay at 30, as does WebP (22.0-22.9). Real files
made with Pillow, and a real `prov serve` on loopback."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image

from clients.api import ProvenanceClient
from clients.scan.hashing import measure
from clients.scan.sources import EntryItem, ScanLimits
from provenance.core.errors import DecodeBudgetError
from provenance.media.budget import decode_budget_problem
from provenance.media.image import decode_image
from tests.conftest import ADMIN_TOKEN, ServerProc

_MIB = 1 << 20
#: An iPhone 15's default photo size (24 MP).
PHONE = (5712, 4284)


def _phone_png(path: Path) -> Path:
    Image.new("RGB", PHONE, (90, 120, 150)).save(path, "PNG")
    return path


def test_a_24_megapixel_phone_photo_is_hashed_under_the_default_budget(tmp_path: Path) -> None:
    """Before: "image is 5712x4284: decoding it needs about 700 MiB", looked up by SHA-256
    only by `prov scan`, and `prov sign` noted the server would not decode it."""
    path = _phone_png(tmp_path / "IMG_0001.png")
    assert decode_budget_problem(path, "image/png") == ""
    m = measure(EntryItem("x.zip!IMG_0001.png", path.read_bytes(), "x.zip"), ScanLimits().assets)
    assert m.kind == "media" and len(m.soft) == 1, m


def test_wide_grey_images_keep_their_higher_count() -> None:
    """A 1000x1000 float TIFF is counted at 30 bytes a pixel (28.6 MiB) and refused under
    a 20 MiB budget; the same picture as 8-bit grey, 15.3 MiB, is hashed."""
    grey = np.linspace(0, 1, 1_000_000, dtype=np.float32).reshape(1000, 1000)
    wide, narrow = io.BytesIO(), io.BytesIO()
    Image.fromarray(grey, "F").save(wide, "TIFF")
    Image.fromarray((grey * 255).astype(np.uint8), "L").save(narrow, "TIFF")
    assert decode_image(narrow.getvalue(), max_decode_bytes=20 * _MIB).width == 1000
    try:
        decode_image(wide.getvalue(), max_decode_bytes=20 * _MIB)
    except DecodeBudgetError as e:
        assert "needs about 28 MiB" in str(e), e
    else:
        raise AssertionError("a float TIFF over the budget was decoded")


def test_server_hashes_a_24_megapixel_phone_photo(server: ServerProc, tmp_path: Path) -> None:
    """VerifyFile under the default budget: UNSIGNED with a perceptual hash made (before:
    RESOURCE_EXHAUSTED, "decoding it needs about 700 MiB")."""
    path = _phone_png(tmp_path / "IMG_0001.png")
    with ProvenanceClient(server.address, ADMIN_TOKEN) as c:
        report = c.verify_file(path)
    assert report.status.name == "UNSIGNED", report
    assert not any("not decoded" in r for r in report.reasons), report.reasons


def _heic(bits: int) -> bytes:
    """A 1000x1000 HEIC of ``bits`` bits a sample (8 or 10)."""
    ramp = np.linspace(0, 255, 1000, dtype=np.uint8)
    rgb = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], ramp[None, ::-1]), -1)
    if bits == 8:
        heif = pillow_heif.from_bytes("RGB", (1000, 1000), np.ascontiguousarray(rgb).tobytes())
    else:
        wide = np.ascontiguousarray(rgb.astype(np.uint16) * 257)
        heif = pillow_heif.from_bytes("RGB;16", (1000, 1000), wide.tobytes())
    buf = io.BytesIO()
    heif.save(buf, quality=60)
    return buf.getvalue()


def test_a_heic_of_more_than_8_bits_is_counted_higher() -> None:
    """A 10-bit HEIC is decoded to 16-bit samples first: 15.3 bytes a pixel measured,
    counted at 18 (17.2 MiB for 1000x1000, refused under 17 MiB); an 8-bit one of the
    same size at 16 (15.3 MiB, hashed)."""
    assert decode_image(_heic(8), max_decode_bytes=17 * _MIB).width == 1000
    try:
        decode_image(_heic(10), max_decode_bytes=17 * _MIB)
    except DecodeBudgetError as e:
        assert "needs about 17 MiB" in str(e), e
    else:
        raise AssertionError("a 10-bit HEIC over the budget was decoded")


def test_a_heic_with_alpha_is_counted_higher() -> None:
    """A HEIC with an alpha plane peaked at 15.8 bytes a pixel in a fresh process (25 MP,
    EXIF-turned) and about 395 MiB a decode with two at once in a real `prov serve`,
    over the 384 MiB the 8-bit count gave (h-revfiles51): counted at 18 like a deep HEIC,
    its 4 MP is 68.7 MiB (refused under 65 MiB) where an opaque one is 61.0 (decoded)."""
    ramp = np.linspace(0, 255, 2000, dtype=np.uint8)
    rgba = np.stack(
        np.broadcast_arrays(ramp[None, :], ramp[:, None], ramp[None, ::-1], ramp[::-1, None]), -1
    )
    made = {}
    for mode, planes in (("RGB", rgba[..., :3]), ("RGBA", rgba)):
        buf = io.BytesIO()
        pixels = np.ascontiguousarray(planes).tobytes()
        pillow_heif.from_bytes(mode, (2000, 2000), pixels).save(buf, quality=60)
        made[mode] = buf.getvalue()
    assert decode_image(made["RGB"], max_decode_bytes=65 * _MIB).width == 2000
    try:
        decode_image(made["RGBA"], max_decode_bytes=65 * _MIB)
    except DecodeBudgetError as e:
        assert "needs about 68 MiB" in str(e), e
    else:
        raise AssertionError("a HEIC with alpha over the budget was decoded")
