"""The memory a still image costs to decode and hash, estimated from its header.

`fit_decode_budget` runs between `Image.open` (which reads only the header) and
`Image.load`: it estimates the peak bytes the decode, the RGB array and the PDQ hash will
hold, and either lets the decode go on, asks the JPEG decoder for a 1/2, 1/4 or 1/8 scale
(libjpeg's DCT scaling: the pixels are never decoded at full size), or refuses with
`DecodeBudgetError` before any pixel is decoded.

The factors were measured on this project's decode path (Pillow 13, pdqhash 0.2.8) as
peak RSS growth per pixel of 12-megapixel images: the decode itself peaks at 11-14
bytes per pixel (23-24 for WebP, whose decoder keeps its own RGBA buffer), and the PDQ
hash peaks at about 24 bytes per pixel over the 3 of the RGB array it hashes, so every
format ends near 27. The estimate adds about 10%. WebP was counted at 34 until 6 December
(h-revmedia50), so a 4032x3024 phone photo saved as WebP (395 MiB by that count) was not
hashed under the default budget; measured again on `inspect_image` and `prov scan`'s
`measure` (Pillow 13), its decode and hash peak at 21.8-22.9 bytes a pixel (12 and 24
MP, lossy and lossless, with and without alpha, and an animated one's canvas), a PNG's
at 14.0, so WebP is counted as the others are.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

from provenance.core.errors import DecodeBudgetError

#: Peak bytes per pixel of decode + PDQ, by media type (others: DEFAULT_BYTES_PER_PIXEL;
#: none differs now, see above).
_BYTES_PER_PIXEL: dict[str, int] = {}
#: Peak bytes per pixel of decode + PDQ for the other formats.
DEFAULT_BYTES_PER_PIXEL = 30
#: JPEG DCT scale denominators libjpeg decodes at, smallest reduction first.
_JPEG_SCALES = (2, 4, 8)
_MIB = 1024 * 1024
#: The decode budget, bytes per image, of `prov scan` and the default of `prov serve
#: --decode-budget-mb` (provenance.server.cli, which keeps the figure so as not to import Pillow).
DEFAULT_DECODE_BUDGET_BYTES = 384 * _MIB


def decode_bytes(width: int, height: int, media_type: str) -> int:
    """Estimated peak bytes to decode a ``width`` x ``height`` image of ``media_type`` to
    RGB and hash it with PDQ."""
    return width * height * _BYTES_PER_PIXEL.get(media_type, DEFAULT_BYTES_PER_PIXEL)


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
    need = decode_bytes(width, height, media_type) + kept
    scales = [s for s in (1, *_JPEG_SCALES) if s >= scale] if jpeg else [1]
    held = progressive_coefficient_bytes(im) if jpeg else 0
    for s in scales:
        small = (max(1, width // s), max(1, height // s))
        # a full-size decode's own figure covers its coefficients (measured with them)
        if budget is None or (
            decode_bytes(*small, media_type) + (held if s > 1 else 0) + kept <= budget
        ):
            if s > 1:
                im.draft(None, small)
            return s
    assert budget is not None  # without a budget the first scale fits
    smallest = decode_bytes(width // 8, height // 8, media_type) if jpeg else need - kept
    if kept and smallest + held <= budget:  # the segments take it over
        raise DecodeBudgetError(
            f"image is {width}x{height}, a JPEG whose application and comment segments hold"
            f" {kept / _MIB:.0f} MiB, which the decoder keeps in memory: they and its pixels"
            f"{' and coefficients' if held else ''} at the smallest scale are over the"
            f" decode budget of {budget // _MIB} MiB per image (`prov serve"
            " --decode-budget-mb`; `prov scan` and `prov detect --local` keep its default)"
        )
    if held and held + decode_bytes(width // 8, height // 8, media_type) > budget:
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
    frame header, Pillow's ``im.layer``), kept until its last scan (h-revmedia50: a 1.8
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
    h-files51: a 12 MP JPEG of 4,000 APP1 or APP4 segments (250 MiB) peaked 261 MiB
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
    pixel is decoded); "" when it fits, or when Pillow cannot read the header (`prov
    sign`, which asks, has decoded the file already: its note only says what the server
    will do with it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its decompression-bomb warning: pixels are ours
            with Image.open(path) as im:
                fit_decode_budget(im, media_type, budget)
    except DecodeBudgetError as e:
        return str(e)
    # what Pillow raises on a header it cannot read
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return ""
    return ""
