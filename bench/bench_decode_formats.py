"""Peak memory and time of the still-image decode + PDQ path (`inspect_image` under the
server's default limits) on unusual and hostile files, against what the decode budget
(`provenance.media.budget`) counted for them.

Each file is made in memory, then measured in a fresh child process: the child imports
the decoders, decodes a small image once (libraries loaded), reads the file, and reports
its peak RSS (VmHWM) before and after `inspect_image`, and the seconds it took. "B/px measured" is
the peak growth over the pixels the budget counted (the header's width x height); a JPEG
decoded at a reduced DCT scale is shown with the scale it was decoded at.

Usage: PYTHONPATH=. .venv/bin/python bench/bench_decode_formats.py [NAME ...]
(names: the keys of FILES; none: all).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image

pillow_heif.register_heif_opener()

_MIB = 1 << 20


def _noise(width: int, height: int, mode: str = "RGB", seed: int = 1) -> Image.Image:
    """A textured picture (noise at 1/8 size, scaled up: compresses like a photo)."""
    rng = np.random.default_rng(seed)
    bands = len(mode) if mode in ("RGB", "CMYK", "RGBA") else 1
    small = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), bands), np.uint8)
    im = Image.fromarray(small[:, :, 0] if bands == 1 else small, None)
    if bands == 4 and mode == "CMYK":
        im = Image.frombytes("CMYK", im.size, im.tobytes())
    return im.resize((width, height), Image.Resampling.BILINEAR)


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def cmyk_jpeg() -> bytes:
    return _save(_noise(6000, 4000, "CMYK"), "JPEG", quality=90)


def cmyk_jpeg_progressive() -> bytes:
    return _save(_noise(6000, 4000, "CMYK"), "JPEG", quality=90, progressive=True)


def tiff_rgb_12mp() -> bytes:
    return _save(_noise(4000, 3000), "TIFF", compression="tiff_deflate")


def tiff_cmyk_12mp() -> bytes:
    return _save(_noise(4000, 3000, "CMYK"), "TIFF", compression="tiff_deflate")


def tiff_rgb16_12mp() -> bytes:
    """A 16-bit RGB TIFF (48 bits a pixel), uncompressed, made by hand."""
    width, height = 4000, 3000
    rgb = np.asarray(_noise(width, height), np.uint16) * 257
    pixels = rgb.astype("<u2").tobytes()
    return _tiff(width, height, pixels, bits=(16, 16, 16), photometric=2)


def tiff_10000_pages() -> bytes:
    """A 4000x3000 first page and 9,999 more of 16x16."""
    first = _noise(4000, 3000)
    rest = [Image.new("RGB", (16, 16), (9, 0, 0))] * 9_999  # one picture, 9,999 pages
    return _save(first, "TIFF", compression="tiff_deflate", save_all=True, append_images=rest)


def _tiff(width: int, height: int, pixels: bytes, bits: tuple[int, ...], photometric: int) -> bytes:
    """A little-endian one-strip TIFF of ``pixels`` (uncompressed)."""
    n = len(bits)
    entries: list[tuple[int, int, int, int | bytes]] = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, n, b"".join(struct.pack("<H", b) for b in bits)),
        (259, 3, 1, 1),
        (262, 3, 1, photometric),
        (273, 4, 1, 0),  # strip offset, filled below
        (277, 3, 1, n),
        (278, 4, 1, height),
        (279, 4, 1, len(pixels)),
    ]
    ifd_at = 8
    extra_at = ifd_at + 2 + 12 * len(entries) + 4
    extra = b""
    body = b""
    for tag, kind, count, value in entries:
        if isinstance(value, bytes):
            if len(value) <= 4:
                field = value.ljust(4, b"\0")
            else:
                field = struct.pack("<I", extra_at + len(extra))
                extra += value
        else:
            field = struct.pack(
                "<I" if kind == 4 else "<HH", *([value] if kind == 4 else [value, 0])
            )
        body += struct.pack("<HHI", tag, kind, count) + field
    data_at = extra_at + len(extra)
    body = body.replace(
        struct.pack("<HHI", 273, 4, 1) + struct.pack("<I", 0),
        struct.pack("<HHII", 273, 4, 1, data_at),
    )
    return (
        b"II*\0"
        + struct.pack("<I", ifd_at)
        + struct.pack("<H", len(entries))
        + body
        + b"\0\0\0\0"
        + extra
        + pixels
    )


def png16_rgb_12mp() -> bytes:
    width, height = 4000, 3000
    rgb = (np.asarray(_noise(width, height), np.uint16) * 257).astype(">u2")
    return _png_raw(width, height, rgb.tobytes(), bit_depth=16, colour=2, bands=3)


def png16_grey_12mp() -> bytes:
    return _save(Image.fromarray(np.asarray(_noise(4000, 3000, "L"), np.uint16) * 257), "PNG")


def png16_grey_40mp() -> bytes:
    return _save(Image.fromarray(np.asarray(_noise(8000, 5000, "L"), np.uint16) * 257), "PNG")


def _png_raw(width: int, height: int, raw: bytes, bit_depth: int, colour: int, bands: int) -> bytes:
    stride = width * bands * bit_depth // 8
    rows = b"".join(b"\0" + raw[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows, 6))
        + chunk(b"IEND", b"")
    )


def png_palette_12mp() -> bytes:
    return _save(_noise(4000, 3000).quantize(256), "PNG")


def apng_500_frames() -> bytes:
    frames = [Image.new("P", (3000, 3000), k % 256) for k in range(500)]
    return _save(frames[0], "PNG", save_all=True, append_images=frames[1:])


def gif_500_frames() -> bytes:
    first = _noise(3000, 3000).quantize(256)
    frames = [Image.new("P", (3000, 3000), k % 256) for k in range(499)]
    return _save(first, "GIF", save_all=True, append_images=frames)


def gif_screen_10k_tiny_frame() -> bytes:
    data = bytearray(_save(Image.new("P", (16, 16), 3), "GIF"))
    data[6:10] = struct.pack("<HH", 10000, 10000)  # logical screen: the canvas Pillow makes
    return bytes(data)


def webp_anim_300_frames() -> bytes:
    first = _noise(3000, 3000)
    frames = [Image.new("RGB", (3000, 3000), (k % 256, 0, 0)) for k in range(299)]
    return _save(first, "WEBP", save_all=True, append_images=frames, quality=80)


def heic_12mp() -> bytes:
    return _save(_noise(4000, 3000), "HEIF", quality=80)


def heic_grid_12mp() -> bytes:
    return _save(_noise(4000, 3000), "HEIF", quality=80, tile_size=512)


def heic_grid_48mp() -> bytes:
    return _save(_noise(8000, 6000), "HEIF", quality=60, tile_size=512)


def jpeg_icc_16mib() -> bytes:
    """A 12 MP JPEG whose colour profile is 255 APP2 segments of 65,519 bytes (16 MiB)."""
    icc = bytes(255 * 65_519)
    return _save(_noise(4000, 3000), "JPEG", quality=90, icc_profile=icc)


def jpeg_xmp_250mib() -> bytes:
    """A 12 MP JPEG with 4,000 APP1 XMP segments of 64 KiB (about 250 MiB) before its frame."""
    jpg = _save(_noise(4000, 3000), "JPEG", quality=90)
    body = b"http://ns.adobe.com/xap/1.0/\0" + b"<x/>" * ((65_533 - 29) // 4)
    seg = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    return jpg[:2] + seg * 4000 + jpg[2:]


def jpeg_app_250mib() -> bytes:
    """The same with 4,000 APP4 segments (an application segment Pillow keeps in its list)."""
    jpg = _save(_noise(4000, 3000), "JPEG", quality=90)
    body = bytes(65_533)
    seg = b"\xff\xe4" + struct.pack(">H", len(body) + 2) + body
    return jpg[:2] + seg * 4000 + jpg[2:]


def jpeg_12mp() -> bytes:
    return _save(_noise(4000, 3000), "JPEG", quality=90)


def jpeg_50mp() -> bytes:
    return _save(_noise(8192, 6144), "JPEG", quality=90)


def bmp_rle8() -> bytes:
    """A BMP declaring 30000x30000 8-bit RLE pixels in 1 KiB (not a supported format)."""
    header = struct.pack("<2sIHHI", b"BM", 1078 + 64, 0, 0, 1078)
    info = struct.pack("<IiiHHIIiiII", 40, 30000, 30000, 1, 8, 1, 64, 0, 0, 256, 0)
    return header + info + bytes(1024) + b"\0\1" * 32


def psd() -> bytes:
    return b"8BPS\0\1" + bytes(6) + struct.pack(">HIIHH", 3, 30000, 30000, 8, 3) + bytes(64)


def ico() -> bytes:
    return _save(Image.new("RGB", (64, 64)), "ICO")


def _rotated(im: Image.Image, fmt: str, **kw: object) -> bytes:
    """``im`` saved with EXIF orientation 6 (turned a quarter when shown)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(im, fmt, exif=exif, **kw)


def png_rotated_12mp() -> bytes:
    return _rotated(_noise(4000, 3000), "PNG")


def png_rgba_12mp() -> bytes:
    return _save(_noise(4000, 3000).convert("RGBA"), "PNG")


def tiff_rotated_12mp() -> bytes:
    return _rotated(_noise(4000, 3000), "TIFF", compression="tiff_deflate")


def tiff_float_12mp() -> bytes:
    grey = np.asarray(_noise(4000, 3000, "L"), np.float32) / 255
    return _save(Image.fromarray(grey, "F"), "TIFF")


def tiff_int32_wide_12mp() -> bytes:
    grey = np.asarray(_noise(4000, 3000, "L"), np.int32) * 100_000 - 5_000_000
    return _save(Image.fromarray(grey, "I"), "TIFF")


def png16_grey_rotated_12mp() -> bytes:
    return _rotated(Image.fromarray(np.asarray(_noise(4000, 3000, "L"), np.uint16) * 257), "PNG")


def heic_rotated_12mp() -> bytes:
    return _rotated(_noise(4000, 3000), "HEIF", quality=80)


def heic_alpha_12mp() -> bytes:
    return _save(_noise(4000, 3000).convert("RGBA"), "HEIF", quality=80)


def heic_10bit_12mp() -> bytes:
    rgb = np.asarray(_noise(4000, 3000), np.uint16) * 257
    heif = pillow_heif.from_bytes("RGB;16", (4000, 3000), rgb.tobytes())
    buf = io.BytesIO()
    heif.save(buf, quality=80)
    return buf.getvalue()


def heic_10bit_alpha_12mp() -> bytes:
    rgba = np.asarray(_noise(4000, 3000).convert("RGBA"), np.uint16) * 257
    heif = pillow_heif.from_bytes("RGBA;16", (4000, 3000), rgba.tobytes())
    buf = io.BytesIO()
    heif.save(buf, quality=80)
    return buf.getvalue()


def webp_rotated_12mp() -> bytes:
    return _rotated(_noise(4000, 3000), "WEBP", quality=80)


FILES: dict[str, Callable[[], bytes]] = {
    f.__name__: f
    for f in (
        jpeg_12mp,
        jpeg_50mp,
        cmyk_jpeg,
        cmyk_jpeg_progressive,
        jpeg_icc_16mib,
        jpeg_xmp_250mib,
        jpeg_app_250mib,
        tiff_rgb_12mp,
        tiff_cmyk_12mp,
        tiff_rgb16_12mp,
        tiff_10000_pages,
        png16_rgb_12mp,
        png16_grey_12mp,
        png16_grey_40mp,
        png_palette_12mp,
        apng_500_frames,
        gif_500_frames,
        gif_screen_10k_tiny_frame,
        webp_anim_300_frames,
        heic_12mp,
        heic_grid_12mp,
        heic_grid_48mp,
        png_rotated_12mp,
        png_rgba_12mp,
        tiff_rotated_12mp,
        tiff_float_12mp,
        tiff_int32_wide_12mp,
        png16_grey_rotated_12mp,
        heic_rotated_12mp,
        heic_alpha_12mp,
        heic_10bit_12mp,
        heic_10bit_alpha_12mp,
        webp_rotated_12mp,
        bmp_rle8,
        psd,
        ico,
    )
}

_CHILD = r"""
import io, json, sys, time, warnings
def hwm():
    # VmHWM: this process's peak RSS (ru_maxrss keeps the forking parent's across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")
import pillow_heif
from PIL import Image

pillow_heif.register_heif_opener()
from provenance.media.assets import AssetLimits, inspect_image
from provenance.media.budget import DEFAULT_DECODE_BUDGET_BYTES, decode_bytes
from provenance.media.image import sniff_media_type
from provenance.core.errors import MediaError
budget = None if sys.argv[2] == "none" else DEFAULT_DECODE_BUDGET_BYTES
limits = AssetLimits(max_decode_bytes=budget)
buf = io.BytesIO(); Image.new("RGB", (64, 64)).save(buf, "PNG")
inspect_image(bytes(32), buf.getvalue(), limits)
data = open(sys.argv[1], "rb").read()
out = {"bytes": len(data), "type": sniff_media_type(data[:64])}
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(data)) as im:
            out["size"] = im.size
            depth = im.info.get("bit_depth") if isinstance(im.info.get("bit_depth"), int) else 8
            out["counted"] = decode_bytes(*im.size, out["type"] or "", im.mode, depth)
except Exception as e:
    out["open"] = repr(e)[:80]
base = hwm()
start = time.perf_counter()
try:
    a = inspect_image(bytes(32), data, limits)
    out["result"] = f"hashed at 1/{a.hashed.scale}"
except MediaError as e:
    out["result"] = f"{type(e).__name__}: {e}"[:160]
out["seconds"] = round(time.perf_counter() - start, 2)
out["growth"] = hwm() - base
print(json.dumps(out))
"""


def measure(path: Path, budget: bool) -> dict[str, object]:
    """The child's report on the file at ``path``, under the default budget or none."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), "default" if budget else "none"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=False,
    )
    if done.returncode:
        return {"failed": done.stderr[-300:]}
    result: dict[str, object] = json.loads(done.stdout)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(
        description="Peak memory and time of decode + PDQ on unusual and hostile image files,"
        " each measured in a fresh child process, against what the decode budget counted.",
    )
    ap.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"files to measure (default: all): {', '.join(FILES)}",
    )
    names = ap.parse_args().names or list(FILES)
    unknown = [n for n in names if n not in FILES]
    if unknown:
        ap.error(f"no such file: {', '.join(unknown)} (the names are listed under --help)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = Path(tmp) / name
            path.write_bytes(FILES[name]())
            for budget in (True, False):
                r = measure(path, budget)
                size = r.get("size")
                pixels = size[0] * size[1] if isinstance(size, list) else 0
                growth = r.get("growth", 0)
                assert isinstance(growth, int)
                per_px = f"{growth / pixels:6.1f}" if pixels else "     -"
                counted = r.get("counted", 0)
                assert isinstance(counted, int)
                print(
                    f"{name:27} {'budget' if budget else 'none  '} {r.get('bytes', 0):>11,} B"
                    f" {size!s:14} counted {counted / _MIB:7.0f} MiB  peak +{growth / _MIB:6.0f} MiB"
                    f" {per_px} B/px  {r.get('seconds', '-')} s  {r.get('result', r)}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
