"""The memory a still image costs to decode and hash, estimated from its header.

`fit_decode_budget` runs between `Image.open` (which reads only the header) and
`Image.load`: it estimates the peak bytes the decode, the RGB array and the PDQ hash will
hold, and either lets the decode go on, asks the JPEG decoder for a 1/2, 1/4 or 1/8 scale
(libjpeg's DCT scaling: the pixels are never decoded at full size), or refuses with
`DecodeBudgetError` before any pixel is decoded.

The factors were measured on this project's decode path as peak RSS growth per pixel of
12-megapixel images (`inspect_image` in a fresh process, bench/bench_decode_formats.py;
Pillow 13, pillow-heif 1.9 / libheif 1.23; table in docs/limits.md): 8-bit images of
every format but WebP peak at 10.9-14.5 bytes a pixel, counted at 16
(DEFAULT_BYTES_PER_PIXEL); 32-bit and floating-point grey at 21.0-21.5, counted at 30;
WebP, whose decoder keeps its own RGBA buffer, at 21.8-22.9, counted at 30 (at 34, a
4032x3024 phone photo saved as WebP would be refused). Every other format counted at 30
would have a 24 MP phone photo as HEIC or PNG looked up by SHA-256 only.
A JPEG's APPn and COM segments, which Pillow keeps a copy of, count on top
(`jpeg_kept_bytes`), as do a progressive JPEG's coefficients at a reduced scale.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

from provenance.cli.files import open_regular
from provenance.core.errors import DecodeBudgetError

#: Peak bytes per pixel of decode + PDQ, by media type, whatever the image's mode (WebP:
#: its decoder's own RGBA buffer, 21.8-22.9 measured).
_BYTES_PER_PIXEL: dict[str, int] = {"image/webp": 30}
#: Peak bytes per pixel of decode + PDQ of an image of Pillow mode "I" or "F" (32-bit and
#: floating-point grey, made 8-bit in NumPy through float64, `provenance.media.image.
#: _wide_grey8`): 21.0-21.5 measured on 12 MP float and 32-bit integer TIFFs.
WIDE_GREY_BYTES_PER_PIXEL = 30
#: Peak bytes per pixel of decode + PDQ of any other image: 10.9-14.5 measured
#: (bench/bench_decode_formats.py, 12 MP: PNG RGB, RGBA, palette, 16-bit RGB and grey,
#: EXIF-turned; TIFF RGB, CMYK, 16-bit RGB; HEIC, HEIC grid of 512-pixel tiles, with alpha,
#: 10-bit; GIF and APNG of 500 frames). At 30, a 24 MP phone photo as HEIC or PNG
#: (5712x4284: 700 MiB by that count) would be looked up by SHA-256 only.
DEFAULT_BYTES_PER_PIXEL = 16
#: Peak bytes per pixel of decode + PDQ of a HEIC of more than 8 bits a sample (libheif
#: decodes it to 16-bit samples, then pillow-heif to 8): 15.3 measured on a 12 MP 10-bit
#: one; and of a HEIC with an alpha plane: 15.8 measured at 25 MP EXIF-turned,
#: about 395 MiB a decode with two at once in `prov serve`.
DEEP_HEIC_BYTES_PER_PIXEL = 18
_ALPHA_MODES = ("RGBA", "LA")
_WIDE_GREY_MODES = ("I", "F")
#: JPEG DCT scale denominators libjpeg decodes at, smallest reduction first.
_JPEG_SCALES = (2, 4, 8)
_MIB = 1024 * 1024
#: The decode budget, bytes per image, of `prov scan` and the default of `prov serve
#: --decode-budget-mb` (provenance.server.cli, which keeps the figure so as not to import Pillow).
DEFAULT_DECODE_BUDGET_BYTES = 384 * _MIB


def decode_bytes(
    width: int, height: int, media_type: str, mode: str = "", bit_depth: int = 8
) -> int:
    """Estimated peak bytes to decode a ``width`` x ``height`` image of ``media_type`` (and
    Pillow ``mode`` and bits a sample, from the header; "" and 8 when unknown) to RGB and
    hash it with PDQ."""
    per_pixel = _BYTES_PER_PIXEL.get(media_type, DEFAULT_BYTES_PER_PIXEL)
    if mode in _WIDE_GREY_MODES:
        per_pixel = max(per_pixel, WIDE_GREY_BYTES_PER_PIXEL)
    if media_type == "image/heic" and (bit_depth > 8 or mode in _ALPHA_MODES):
        per_pixel = max(per_pixel, DEEP_HEIC_BYTES_PER_PIXEL)
    return width * height * per_pixel


def fit_decode_budget(im: Image.Image, media_type: str, budget: int | None, scale: int = 1) -> int:
    """Keep the decode of the opened (header-only) image ``im`` within ``budget`` bytes.

    scale: the JPEG scale denominator the caller wants at least (1, 2, 4 or 8; a
    JPEG-only reduction, `provenance.media.image.pdq_scale`). Returns the scale denominator the
    pixels will be decoded at (1: full size; 2, 4 or 8: a JPEG reduced by libjpeg as it
    decodes, Pillow's ``draft``, requested once). ``budget`` None means no budget. Raises
    DecodeBudgetError (a MediaTooLargeError) when even the smallest scale the format
    offers needs more.
    """
    width, height = im.size
    jpeg = media_type == "image/jpeg"
    kept = jpeg_kept_bytes(im) if jpeg else 0
    depth = im.info.get("bit_depth")  # pillow-heif's: bits a sample of a HEIC
    mode, bits = im.mode, depth if isinstance(depth, int) else 8
    need = decode_bytes(width, height, media_type, mode, bits) + kept
    scales = [s for s in (1, *_JPEG_SCALES) if s >= scale] if jpeg else [1]
    held = progressive_coefficient_bytes(im) if jpeg else 0
    for s in scales:
        small = (max(1, width // s), max(1, height // s))
        # a full-size decode's own figure covers its coefficients (measured with them)
        if budget is None or (
            decode_bytes(*small, media_type, mode, bits) + (held if s > 1 else 0) + kept <= budget
        ):
            if s > 1:
                im.draft(None, small)
            return s
    assert budget is not None  # without a budget the first scale fits
    smallest = decode_bytes(width // 8, height // 8, media_type, mode)  # a JPEG's, at 1/8
    if kept and smallest + held <= budget:  # the segments take it over (kept: a JPEG's)
        raise DecodeBudgetError(
            f"image is {width}x{height}, a JPEG whose application and comment segments hold"
            f" {kept / _MIB:.0f} MiB, which the decoder keeps in memory: they and its pixels"
            f"{' and coefficients' if held else ''} at the smallest scale are over the"
            f" decode budget of {budget // _MIB} MiB per image (`prov serve"
            " --decode-budget-mb`; `prov scan` and `prov detect --local` keep its default)"
        )
    if held and held + smallest > budget:
        raise DecodeBudgetError(
            f"image is {width}x{height}, a progressive JPEG: decoding it at any scale keeps"
            f" about {held // _MIB} MiB of its full-size coefficients, over the decode budget"
            f" of {budget // _MIB} MiB per image (`prov serve --decode-budget-mb`; `prov"
            " scan` and `prov detect --local` keep its default; a baseline copy decodes at a smaller"
            " scale)"
        )
    raise DecodeBudgetError(
        f"image is {width}x{height}: decoding it needs about {need // _MIB} MiB, over the"
        f" decode budget of {budget // _MIB} MiB per image (`prov serve --decode-budget-mb`;"
        " `prov scan` and `prov detect --local` keep its default)"
    )


def progressive_coefficient_bytes(im: Image.Image) -> int:
    """Bytes libjpeg holds for the DCT coefficients of the opened (header-only) JPEG
    ``im`` whatever scale it decodes at: 0 for a baseline JPEG (decoded a row of blocks at
    a time); for a progressive one, 2 bytes for each of the 64 coefficients of every
    block of every component, whole MCUs (each component's sampling factors from the
    frame header, Pillow's ``im.layer``), kept until its last scan (measured: a 1.8
    MB progressive 4:4:4 JPEG of 10000x10000 decoded at 1/8 scale peaked at 578 MB)."""
    if not im.info.get("progressive"):
        return 0
    layers = getattr(im, "layer", None) or []
    hmax = max((int(h) for _, h, _, _ in layers), default=1)
    vmax = max((int(v) for _, _, v, _ in layers), default=1)
    width, height = im.size
    mcus = -(-width // (8 * hmax)) * -(-height // (8 * vmax))
    blocks = mcus * sum(int(h) * int(v) for _, h, v, _ in layers) if layers else mcus * 3
    return blocks * 64 * 2


def jpeg_kept_bytes(im: Image.Image) -> int:
    """Bytes the opened (header-only) JPEG ``im`` holds of its own metadata while open:
    Pillow keeps a copy of each APPn and COM segment before the first scan (``applist``)
    and joins the colour profile's APP2 segments once more (``info["icc_profile"]``).
    Measured: a 12 MP JPEG of 4,000 APP1 or APP4 segments (250 MiB) peaked 261 MiB
    over its start where the budget counted 21 MiB; one with 255 APP2 segments of colour
    profile (16 MiB) 32 MiB. 0 for an image that is not a JPEG."""
    applist = getattr(im, "applist", None) or []
    icc = im.info.get("icc_profile") or b""
    return sum(len(segment) for _, segment in applist) + len(icc)


def kept_segments_problem(kept: int, budget: int) -> str:
    """The DecodeBudgetError text for a JPEG whose APPn and COM segments alone, ``kept``
    bytes (`provenance.media.image.jpeg_layout`), are over ``budget`` bytes: refused
    before the decoder reads (and copies) them."""
    return (
        f"a JPEG of {kept / _MIB:.0f} MiB of application and comment segments, which the"
        f" decoder keeps in memory: over the decode budget of {budget // _MIB} MiB per image"
        " (`prov serve --decode-budget-mb`; `prov scan` and `prov detect --local` keep its"
        " default)"
    )


def decode_budget_problem(
    path: str | Path, media_type: str, budget: int = DEFAULT_DECODE_BUDGET_BYTES
) -> str:
    """Why the image file at ``path``, of ``media_type``, would not be decoded under a
    decode budget of ``budget`` bytes (the server's default unless given): the
    DecodeBudgetError text that `fit_decode_budget` raises, read from the header only (no
    pixel is decoded); "" when it fits, when Pillow cannot read the header (`prov sign`,
    which asks, has decoded the file already: its note only says what the server will do
    with it), or when ``path`` is no longer a regular file (a FIFO or device renamed over
    it is never opened: `provenance.cli.files.open_regular`)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its decompression-bomb warning: pixels are ours
            # not by a plain open: a FIFO renamed over the signed file held it for good
            with open_regular(path, ValueError) as f, Image.open(f) as im:
                fit_decode_budget(im, media_type, budget)
    except DecodeBudgetError as e:
        return str(e)
    # what Pillow raises on a header it cannot read
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return ""
    return ""
