"""Recognising and decoding untrusted media, within limits.

`sniff_media_type` names a format from its leading magic bytes. `decode_image` decodes a
still image with Pillow, opening it only with the one Pillow plugin the magic bytes name,
checking the pixel count from the header before any pixel is decoded, and turning every
decoder failure into a `MediaError`.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from provenance.c2pa.container import MAX_PNG_CHUNKS
from provenance.core.binding import PerceptualHash, pdq_hash
from provenance.core.errors import (
    DecodeBudgetError,
    MediaError,
    MediaTooLargeError,
    StructureLimitError,
)
from provenance.media.budget import fit_decode_budget, kept_segments_problem

#: Most bytes one compressed text or colour-profile chunk of a PNG (zTXt, iTXt, iCCP) may
#: decompress to, and most bytes of decompressed text all its text chunks may hold. Set
#: on Pillow here, at import (`PngImagePlugin.MAX_TEXT_CHUNK` and `MAX_TEXT_MEMORY`, its
#: defaults in Pillow 13 too): `prov sign` refuses a PNG past them and the server will
#: not judge one unlogged (`_corrupt`), so both must hold the same limits whatever
#: Pillow release each side runs, and not Pillow's defaults.
PNG_MAX_TEXT_CHUNK = 1 << 20
PNG_MAX_TEXT_MEMORY = 64 << 20
PngImagePlugin.MAX_TEXT_CHUNK = PNG_MAX_TEXT_CHUNK
PngImagePlugin.MAX_TEXT_MEMORY = PNG_MAX_TEXT_MEMORY

#: Largest image decode_image accepts by default, in pixels (width x height).
DEFAULT_MAX_PIXELS = 100_000_000
#: How many leading bytes of a file sniff_media_type needs to see, in bytes.
SNIFF_BYTES = 64
#: Shorter side, in pixels, below which a JPEG decoded for its PDQ hash is never reduced
#: (`pdq_scale`). PDQ filters every image down to 64 x 64 before its DCT, so decoding a
#: large JPEG at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) first costs few bits.
#: Measured on the shared PDQ vectors (/work/shared/fixtures/phash, README.tsv) and on
#: 12-megapixel JPEGs made from them (bench/bench_image.py): at the scales this rule
#: picks, median 3 and worst 12 bits from the full-size hash (the match threshold is 31);
#: at shorter sides of 256, worst 30 bits, so 512 it is.
PDQ_MIN_SIDE = 512

#: Most scans (SOS markers) a JPEG may hold before its first EOI. libjpeg decodes every
#: scan over every block of the components it names, whatever the output scale, and
#: sets no limit of its own; a progressive JPEG's scans can each be 10 bytes (a header
#: with no data), so a 300 KB file of 5,000 scans over 8000x8000 pixels held a decode
#: slot for 133 s. Encoders write 1 (baseline) to about 10 (libjpeg's progressive script;
#: 6 for grey); libjpeg-turbo's fuzzers refuse over 500 scans at 1 megapixel
#: (TurboJPEG's TJPARAM_SCANLIMIT, after "Two Issues with the JPEG Standard",
#: libjpeg-turbo.org). At the 100-megapixel default image limit each scan costs up to
#: about 0.1 s, so the cap here is lower.
MAX_JPEG_SCANS = 100
#: Most marker segments (APPn, COM, DHT, ...; fill bytes and stray bytes not counted) a
#: JPEG may hold before its first EOI. Pillow reads the segments before the first scan in
#: Python, and so does `jpeg_layout`; 4-byte COM segments would make a 256 MiB file 64
#: million of them. A camera JPEG holds a few dozen; 100,000 segments of the largest
#: size (64 KiB) would be 6.5 GB.
MAX_JPEG_SEGMENTS = 100_000
#: Most bytes before a JPEG's first scan that are neither in a marker segment nor a
#: marker: fill bytes (0xFF, ITU-T T.81 B.1.1.2) and stray bytes libjpeg skips with a
#: warning. Pillow's header parser reads them one byte at a time in Python (about 1.5 us
#: each: a 20 MiB file of fill bytes took 31 s before a word of it was decoded). Camera
#: files that pad their segments carry a few kilobytes.
MAX_JPEG_STRAY_BYTES = 1 << 20
#: Most bytes of the segments before a JPEG's first scan that Pillow parses in Python:
#: EXIF (APP1 ``Exif``), Photoshop (APP13 ``Photoshop 3.0``) and quantization tables
#: (DQT). Pillow joins each EXIF segment to the ones before it (``info["exif"] +=``),
#: copies that grow with the square of their number: 131 MB of 2,000 such segments held
#: Image.open for 166 s (VerifyFile 124 s); and it walks each Photoshop image resource
#: and each quantization table in Python, about 6 ms a full segment of either (25 s for
#: a 256 MiB file). An encoder writes one EXIF segment of at most 64 KiB and a few
#: hundred bytes of tables; at this limit (64 full segments) Pillow opens the file in
#: well under a second. Frame headers (SOFn, and DHP, which Pillow reads with the same
#: code) count too: Pillow keeps a tuple for each 3-byte component entry of each header
#: (about 30 bytes of memory a byte of header), and a 64 MiB file of 1,024 full headers
#: took 8 s and 2 GB in Image.open; an encoder writes one of at most 773 bytes.
MAX_JPEG_METADATA_BYTES = 4 << 20
#: The segments Pillow parses in Python, by marker and leading bytes: EXIF, Photoshop,
#: quantization tables, frame headers (SOF0-3, 5-7, 9-11, 13-15; DHP).
_JPEG_PARSED_SEGMENTS = (
    (0xE1, b"Exif\x00\x00"),
    (0xED, b"Photoshop 3.0\x00"),
    (0xDB, b""),
    *((marker, b"") for marker in (*range(0xC0, 0xD0), 0xDE) if marker not in (0xC4, 0xC8, 0xCC)),
)
#: A marker in JPEG entropy-coded data: 0xFF followed by neither a stuffed zero, a
#: restart marker (RSTn, 0xD0-0xD7) nor a fill byte (ITU-T T.81, B.1.1.2 and B.1.1.5).
_JPEG_MARKER_IN_DATA = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
#: A marker where one is expected: 0xFF and a marker code (the last 0xFF of a fill run).
_JPEG_MARKER = re.compile(rb"\xff[\x01-\xfe]")
#: Markers that stand alone, without a length (T.81 B.1.1.3): TEM, RSTn, SOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8})


@dataclass(frozen=True)
class JpegLayout:
    """What a walk of a JPEG's markers found (`jpeg_layout`).

    scans: SOS segments before the first EOI; segments: marker segments and standalone
    markers (SOS included) before it; stray_bytes: bytes before the first SOS that are
    neither of these (fill bytes, bytes libjpeg skips to the next marker);
    metadata_bytes: bytes of EXIF, Photoshop, DQT and frame-header segments before the first SOS
    (`_JPEG_PARSED_SEGMENTS`); kept_bytes: bytes of the APPn and COM segments before it,
    which Pillow keeps a copy of while the image is open (`provenance.media.budget.
    jpeg_kept_bytes`; counted in the decode budget). The walk stops once a count passes its limit (MAX_JPEG_SCANS,
    MAX_JPEG_SEGMENTS, MAX_JPEG_STRAY_BYTES, MAX_JPEG_METADATA_BYTES), so each is at most
    its limit's next value, the stray run or the segment that passed it.
    """

    scans: int
    segments: int
    stray_bytes: int
    metadata_bytes: int = 0
    kept_bytes: int = 0

    def problem(self) -> str | None:
        """Why the JPEG costs too much to decode, in words; None when within limits."""
        if self.scans > MAX_JPEG_SCANS:
            return (
                f"a JPEG of more than {MAX_JPEG_SCANS} scans, the limit here: each scan is"
                " decoded over the whole picture (encoders write 1 to about 10)"
            )
        if self.segments > MAX_JPEG_SEGMENTS:
            return f"a JPEG of more than {MAX_JPEG_SEGMENTS:,} marker segments, the limit here"
        if self.stray_bytes > MAX_JPEG_STRAY_BYTES:
            return (
                f"a JPEG with more than {MAX_JPEG_STRAY_BYTES:,} fill or stray bytes before"
                " its picture data, the limit here"
            )
        if self.metadata_bytes > MAX_JPEG_METADATA_BYTES:
            return (
                f"a JPEG with more than {MAX_JPEG_METADATA_BYTES:,} bytes of EXIF, Photoshop and"
                " quantization-table segments and frame headers before its picture data, the"
                " limit here (an encoder writes one EXIF segment of at most 65,535 bytes, a"
                " few hundred bytes of tables and one frame header)"
            )
        return None


def jpeg_layout(data: bytes) -> JpegLayout:
    """Count the scans, marker segments and stray bytes of the JPEG ``data``.

    Walks the marker segments by their lengths (so an EXIF thumbnail, an APP payload or
    an MPO's later pictures are not counted) and, after each SOS, the entropy-coded data
    up to the next marker (ITU-T T.81, annex B), up to the first EOI. Bytes where a marker
    should be are skipped to the next marker, as libjpeg does. Never raises: a file cut
    short ends the walk. Costs one step per segment, at most MAX_JPEG_SEGMENTS + 1.
    """
    scans = segments = stray = metadata = kept = 0
    pos = 2  # after SOI
    end = len(data)
    while (
        pos + 1 < end
        and scans <= MAX_JPEG_SCANS
        and segments <= MAX_JPEG_SEGMENTS
        and stray <= MAX_JPEG_STRAY_BYTES
        and metadata <= MAX_JPEG_METADATA_BYTES
    ):
        # before the first scan, no further than one byte past the stray-byte limit
        window = end if scans else min(end, pos + MAX_JPEG_STRAY_BYTES - stray + 2)
        found = _JPEG_MARKER.search(data, pos, window)
        if scans == 0:  # fill bytes and skipped bytes, all the window when no marker
            stray += (window if found is None else found.start()) - pos
        if found is None:
            break
        pos = found.start()
        marker = data[pos + 1]
        segments += 1
        if marker == 0xD9:  # EOI
            break
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if pos + 4 > end:
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if scans == 0 and any(
            marker == app and data.startswith(ident, pos + 4)
            for app, ident in _JPEG_PARSED_SEGMENTS
        ):
            metadata += length
        if scans == 0 and (0xE0 <= marker <= 0xEF or marker == 0xFE):  # APPn, COM
            kept += length
        pos += 2 + length
        if marker == 0xDA:
            scans += 1
            found = _JPEG_MARKER_IN_DATA.search(data, pos)
            if found is None:
                break
            pos = found.start()
    return JpegLayout(scans, segments, stray, metadata, kept)


_PNG_SIGNATURE_BYTES = 8


def png_chunk_count(data: bytes) -> int:
    """The number of chunks of the PNG ``data`` up to IEND (PNG specification, 5.3),
    counting no further than MAX_PNG_CHUNKS + 1. Walks the chunks by their lengths;
    never raises: a chunk running past the end of the data ends the walk."""
    count, pos, end = 0, _PNG_SIGNATURE_BYTES, len(data)
    while pos + 12 <= end and count <= MAX_PNG_CHUNKS:
        count += 1
        if data[pos + 4 : pos + 8] == b"IEND":
            break
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
    return count


#: Most data sub-blocks (and blocks) a GIF may hold before its first image. Pillow reads
#: the extension blocks before the first frame in Python, one sub-block at a time (a
#: 2 MiB comment of a million 1-byte sub-blocks took 0.64 s, a million graphic control
#: extensions 1.6 s; 256 MiB of them over a minute). A GIF's comments, loop count and
#: XMP or ICC data take a few hundred.
MAX_GIF_BLOCKS = 100_000


def gif_block_count(data: bytes) -> int:
    """The number of extension blocks and data sub-blocks of the GIF ``data`` before its
    first image descriptor (GIF89a, sections 17-26), counting no further than
    MAX_GIF_BLOCKS + 1. Never raises: the walk ends at the first image, the trailer, a
    byte that starts no block, or the end of the data."""
    count, end = 0, len(data)
    pos = 13 + (3 << ((data[10] & 7) + 1) if len(data) > 10 and data[10] & 0x80 else 0)
    while pos < end and data[pos] == 0x21 and count <= MAX_GIF_BLOCKS:  # an extension
        count += 1
        pos += 2  # introducer and label
        while pos < end and data[pos] and count <= MAX_GIF_BLOCKS:
            count += 1
            pos += 1 + data[pos]
        pos += 1  # the block terminator
    return count


#: Most strips or tiles (the count of StripOffsets, StripByteCounts, TileOffsets or
#: TileByteCounts) the first image of a TIFF may have, and most entries in its first
#: IFD. Pillow makes a Python tile per strip and decodes each in turn: a 61 MiB TIFF of 8
#: million one-byte strips of a 64x64 picture took 105 s and 2.4 GB to decode. A TIFF
#: within the decode budget (13 megapixels) has a few thousand strips at one row each, or
#: 50,000 tiles at the smallest size (16x16) the format allows.
MAX_TIFF_STRIPS = 100_000
#: Most entries of a TIFF's first IFD: a classic TIFF's count is 16 bits, a BigTIFF's 64.
MAX_TIFF_IFD_ENTRIES = 65_535
#: TIFF tags that count a picture's strips or tiles (TIFF 6.0, sections 3 and 15).
_TIFF_PIECE_TAGS = frozenset({273, 279, 324, 325})


def tiff_problem(data: bytes) -> str | None:
    """Why the first image of the TIFF (or BigTIFF) ``data`` costs too much to open and
    decode, in words: more than MAX_TIFF_IFD_ENTRIES entries in its first IFD, or more
    than MAX_TIFF_STRIPS strips or tiles; None otherwise (also when the header or IFD is
    cut short: Pillow then says what is wrong). Reads the first IFD only; never raises."""
    order: Literal["little", "big"] = "little" if data[:2] == b"II" else "big"
    big = data[2:4] in (b"+\x00", b"\x00+")  # BigTIFF: 8-byte offsets and counts

    def number(at: int, size: int) -> int:
        return int.from_bytes(data[at : at + size], order)

    width = 8 if big else 4  # of an offset and of an entry's value count
    ifd = number(8, 8) if big else number(4, 4)
    entries = number(ifd, 8 if big else 2)
    if ifd + (8 if big else 2) > len(data):
        return None
    if entries > MAX_TIFF_IFD_ENTRIES:
        return (
            f"a TIFF whose first IFD has {entries:,} entries, over the limit of"
            f" {MAX_TIFF_IFD_ENTRIES:,}"
        )
    step = 20 if big else 12
    pos = ifd + (8 if big else 2)
    for _ in range(min(entries, (len(data) - pos) // step)):
        count = number(pos + 4, width)
        if number(pos, 2) in _TIFF_PIECE_TAGS and count > MAX_TIFF_STRIPS:
            return f"a TIFF of {count:,} strips or tiles, over the limit of {MAX_TIFF_STRIPS:,}"
        pos += step
    return None


#: TIFF tags (TIFF 6.0, sections 3 and 19): BitsPerSample, SamplesPerPixel,
#: PhotometricInterpretation (0: WhiteIsZero, 0 is white) and SampleFormat (1: unsigned integer, the default).
_TIFF_BITS, _TIFF_PER_PIXEL, _TIFF_PHOTOMETRIC, _TIFF_SAMPLE_FORMAT = 258, 277, 262, 339
_WHITE_IS_ZERO = 0
_UNSIGNED, _FLOAT = 1, 3
#: TIFF SampleFormat values (TIFF 6.0, section 19), in words.
_TIFF_SAMPLE_KINDS = {1: "unsigned integer", 2: "signed integer", 3: "floating-point"}


def tiff_unread_samples(data: bytes) -> str | None:
    """The samples of the first image of the TIFF (or BigTIFF) ``data`` in words ("64-bit
    floating-point samples, 1 per pixel") when they are of a layout Pillow's TIFF decoder
    does not read: a floating-point layout but 32-bit grey, 32-bit integers of more than
    one sample a pixel, or sizes other than 1, 2, 4, 8, 16 and 32 bits; None for the
    layouts it reads (a TIFF of one that Pillow cannot open is damaged) and when the
    first IFD is cut short. From the first IFD's BitsPerSample, SampleFormat and
    SamplesPerPixel tags (TIFF 6.0, sections 3, 8 and 19; each tag's first value), so
    that a refusal names the layout rather than calling the file corrupt. Never raises."""
    order: Literal["little", "big"] = "little" if data[:2] == b"II" else "big"
    big = data[2:4] in (b"+\x00", b"\x00+")

    def number(at: int, size: int) -> int:
        return int.from_bytes(data[at : at + size], order)

    ifd = number(8, 8) if big else number(4, 4)
    head, step, width = (8, 20, 8) if big else (2, 12, 4)
    if ifd + head > len(data):
        return None
    found = {_TIFF_BITS: 1, _TIFF_SAMPLE_FORMAT: _UNSIGNED, _TIFF_PER_PIXEL: 1}  # the defaults
    pos = ifd + head
    for _ in range(min(number(ifd, head), (len(data) - pos) // step)):
        tag, kind, count = number(pos, 2), number(pos + 2, 2), number(pos + 4, width)
        if tag in found and kind == 3 and count:  # SHORT values, the type these tags have
            at = pos + 4 + width if count * 2 <= width else number(pos + 4 + width, width)
            found[tag] = number(at, 2)
        pos += step
    bits, kind, per_pixel = found[_TIFF_BITS], found[_TIFF_SAMPLE_FORMAT], found[_TIFF_PER_PIXEL]
    read = bits in (1, 2, 4, 8, 16, 32) and kind in (1, 2, 3)
    if kind == _FLOAT:
        read = bits == 32 and per_pixel == 1
    elif bits == 32:
        read = read and per_pixel == 1
    if read:
        return None
    what = _TIFF_SAMPLE_KINDS.get(kind, f"SampleFormat {kind}")
    return f"{bits}-bit {what} samples, {per_pixel} per pixel"


#: Pillow plugins allowed to open each decodable media type; nothing else is tried, so a
#: hostile file cannot reach a rarely used parser (or Ghostscript, for EPS).
_PIL_FORMATS: dict[str, tuple[str, ...]] = {
    "image/jpeg": ("JPEG", "MPO"),
    "image/png": ("PNG",),
    "image/webp": ("WEBP",),
    "image/gif": ("GIF",),
    "image/tiff": ("TIFF",),
    "image/heic": ("HEIF",),
}
#: What each decodable media type is called in messages, in the order they list them:
#: the still images `decode_image` reads (the keys of _PIL_FORMATS) and the video
#: containers `provenance.media.video.frames` reads (its DEMUXERS).
FORMAT_NAMES: dict[str, str] = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WebP",
    "image/gif": "GIF",
    "image/tiff": "TIFF",
    "image/heic": "HEIC",
    "video/mp4": "MP4",
    "video/quicktime": "MOV",
    "video/webm": "WebM",
    "video/x-matroska": "Matroska",
}
#: The formats that can be signed and verified, in words ("JPEG, PNG, ... or Matroska"):
#: the one list the CLI's and the web page's messages show.
SUPPORTED_FORMATS = ", ".join(list(FORMAT_NAMES.values())[:-1]) + (
    f" or {list(FORMAT_NAMES.values())[-1]}"
)
#: The message of a file of no supported format.
UNSUPPORTED_FORMAT = f"unsupported or unrecognised file format (expected {SUPPORTED_FORMATS})"
# HEIC/HEIF stills through libheif (the pillow-heif wheel bundles it); AVIF is sniffed but
# not decoded (the wheel carries no AV1 decoder).
pillow_heif.register_heif_opener()

#: The EXIF Orientation tag (TIFF/EXIF tag 0x0112); values 1..8 (EXIF 2.32, section 4.6.5).
EXIF_ORIENTATION_TAG = 0x0112

# ISO base media file format (ISO/IEC 14496-12) major brands, read from the ftyp box.
_FTYP_BRANDS: dict[bytes, str] = {
    **dict.fromkeys(
        (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"), "image/heic"
    ),
    **dict.fromkeys((b"avif", b"avis"), "image/avif"),
    **dict.fromkeys(
        (
            b"isom",
            b"iso2",
            b"iso3",
            b"iso4",
            b"iso5",
            b"iso6",
            b"mp41",
            b"mp42",
            b"avc1",
            b"dash",
            b"mmp4",
            b"M4V ",
            b"msnv",
            b"f4v ",
        ),
        "video/mp4",
    ),
    b"qt  ": "video/quicktime",
}

_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_EBML_DOCTYPE_ID = 0x4282


def _ebml_vint(buf: bytes, pos: int) -> tuple[int, int, int] | None:
    """Read an EBML variable-size integer at pos (RFC 8794 section 4).

    Returns (value with the length marker kept, value with it removed, next position), or
    None if buf ends first or the first byte is 0.
    """
    if pos >= len(buf) or buf[pos] == 0:
        return None
    length = 9 - buf[pos].bit_length()
    if pos + length > len(buf):
        return None
    raw = int.from_bytes(buf[pos : pos + length], "big")
    return raw, raw & ~(1 << (7 * length)), pos + length


def _ebml_media_type(head: bytes) -> str:
    """Matroska or WebM from the EBML header's DocType element (RFC 8794 section 11.2.6).

    Walks the header's child elements; the DocType defaults to "matroska" (RFC 9559) when
    it is absent or lies beyond head.
    """
    pos = len(_EBML_MAGIC)
    header_size = _ebml_vint(head, pos)
    if header_size is None:
        return "video/x-matroska"
    end = min(len(head), header_size[2] + header_size[1])
    pos = header_size[2]
    while pos < end:
        element_id = _ebml_vint(head, pos)
        size = _ebml_vint(head, element_id[2]) if element_id else None
        if element_id is None or size is None:
            break
        if element_id[0] == _EBML_DOCTYPE_ID:
            doc_type = head[size[2] : size[2] + size[1]]
            return "video/webm" if doc_type == b"webm" else "video/x-matroska"
        pos = size[2] + size[1]
    return "video/x-matroska"


def sniff_media_type(head: bytes) -> str | None:
    """Name the media type of a file from its first SNIFF_BYTES bytes (or fewer).

    Recognises image/jpeg, image/png, image/webp, image/gif, image/tiff, image/heic,
    image/avif, video/mp4, video/quicktime, video/webm and video/x-matroska; returns None
    for anything else.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "image/tiff"
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12])
    if head.startswith(_EBML_MAGIC):
        return _ebml_media_type(head)
    return None


@dataclass(frozen=True)
class DecodedImage:
    """Pixels of a still image as it is displayed (EXIF orientation applied).

    rgb: (height, width, 3) uint8 array, read-only; width, height: in pixels;
    media_type: the sniffed type of the encoded file, e.g. "image/jpeg"; orientation: the
    file's EXIF orientation tag (1..8; 0 when it states none or an invalid value); scale:
    1, or the denominator (2, 4, 8) a JPEG was decoded at (libjpeg's DCT scaling), when
    width and height are about 1/scale of the file's; full_size: (width, height) of the
    whole image as displayed, None when scale is 1.
    """

    rgb: np.ndarray
    width: int
    height: int
    media_type: str
    orientation: int = 0
    scale: int = 1
    full_size: tuple[int, int] | None = None

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) of the whole image as displayed, in pixels: ``full_size``, or
        (width, height) when the pixels were decoded at full size."""
        return self.full_size or (self.width, self.height)

    def __post_init__(self) -> None:
        if self.rgb.dtype != np.uint8 or self.rgb.shape != (self.height, self.width, 3):
            raise MediaError(
                f"pixels of shape {self.rgb.shape} dtype {self.rgb.dtype} do not match an "
                f"RGB image of {self.width}x{self.height}"
            )


def _describe_unknown(data: bytes) -> str:
    """A short description of bytes that no known magic number matches: text or binary."""
    sample = data[:SNIFF_BYTES]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as e:
        # A multi-byte character cut by the sample's end is still text.
        text = sample[: e.start].decode("utf-8") if e.start >= len(sample) - 3 else ""
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"unrecognized format: looks like text ({text[:32]!r})"
    return f"unrecognized format (first bytes {sample[:16].hex(' ')})"


def _exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation tag of an opened image: 1..8, or 0 when absent or invalid."""
    try:
        value = im.getexif().get(EXIF_ORIENTATION_TAG)
    except Exception:  # a damaged EXIF block states no orientation
        return 0
    return value if isinstance(value, int) and 1 <= value <= 8 else 0


#: Pillow's modes of more than 8 bits a sample, all one grey channel, but unsigned 16-bit
#: ("I;16", "I;16B", ...): 32-bit signed integer ("I") and 32-bit floating point ("F").
_WIDE_GREY_MODES = ("I", "F")


@dataclass(frozen=True)
class _TiffGrey:
    """What a TIFF's tags say of its grey samples that Pillow's modes "I;16", "I" and "F"
    leave out: white_is_zero (PhotometricInterpretation 0, which Pillow inverts for 8-bit
    grey only) and unsigned_32 (32-bit unsigned samples, which Pillow reads into the
    signed "I": those over 2**31 - 1 come out negative)."""

    white_is_zero: bool = False
    unsigned_32: bool = False


def _tiff_grey(im: Image.Image) -> _TiffGrey:
    """`_TiffGrey` of the opened image ``im`` (before any transpose); all False for an
    image that is not a TIFF."""
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return _TiffGrey()
    bits, kind = tags.get(_TIFF_BITS), tags.get(_TIFF_SAMPLE_FORMAT, _UNSIGNED)
    return _TiffGrey(
        white_is_zero=tags.get(_TIFF_PHOTOMETRIC) == _WHITE_IS_ZERO,
        unsigned_32=bits in (32, (32,)) and kind in (_UNSIGNED, (_UNSIGNED,)),
    )


def _own_range(grey: np.ndarray) -> np.ndarray:
    """``grey`` (finite numbers) scaled linearly so that its smallest value is 0 and its
    largest 255, rounded, as uint8; all 0 when every sample is the same. Computed in
    float64: the span of two float32 extremes (about 6.8e38) overflows float32, and a
    32-bit integer's is not exact in it."""
    lo, hi = float(grey.min()), float(grey.max())
    if hi <= lo:
        return np.zeros(grey.shape, np.uint8)
    out = grey.astype(np.float64)  # in place from here: 8 bytes a pixel, no more
    out -= lo
    out *= 255.0 / (hi - lo)
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def _wide_grey8(im: Image.Image, unsigned_32: bool = False) -> np.ndarray:
    """The grey samples of ``im`` (mode "I;16*", "I" or "F") as 8-bit grey, by the
    rules docs/limits.md states ("Images of more than 8 bits a sample"):

    - unsigned 16-bit ("I;16*"): ``value >> 8``, 0..65535 being black to white, as
      viewers show it;
    - 32-bit integer ("I"; Pillow's mode for signed 16-bit and 32-bit TIFFs too, read
      as unsigned when ``unsigned_32``): as it is when every sample lies in 0..255,
      ``value >> 8`` when in 0..65535, else scaled by its own range (`_own_range`):
      negative samples or samples over 65535 were clipped to black or white before;
    - 32-bit floating point ("F"): scaled by its own range, as float samples have no
      agreed black and white (0..1 in most HDR and scientific tools, 0..255 in Pillow),
      and Pillow's own conversion clipped them to 0..255, so a 0..1 image read as all
      black. A NaN or infinite sample is refused (MediaError naming the mode): it has no
      brightness.
    """
    grey = np.asarray(im)
    if im.mode == "I" and unsigned_32:
        grey = grey.view(np.uint32)
    if im.mode == "F":
        if not bool(np.isfinite(grey).all()):
            raise MediaError(
                "a 32-bit floating-point grey image (Pillow mode F) holding NaN or infinite"
                " samples: such a sample has no brightness, so no perceptual hash can be made"
                " of the image (save it without them, or as 8 or 16-bit integers)"
            )
        return _own_range(grey)
    lo, hi = (int(grey.min()), int(grey.max())) if grey.size else (0, 0)
    if im.mode == "I" and 0 <= lo and hi <= 255:
        return grey.astype(np.uint8)
    if 0 <= lo and hi <= 65535:
        return (grey >> 8).astype(np.uint8)
    return _own_range(grey)


def _to_rgb8(im: Image.Image, tiff: _TiffGrey | None = None) -> Image.Image:
    """``im`` as 8-bit RGB. Images of more than 8 bits a sample (16-bit and 32-bit
    integer, 32-bit floating-point grey) are scaled to 8-bit grey by `_wide_grey8`'s
    rules and, for a TIFF that says its grey is WhiteIsZero (``tiff``, `_TiffGrey`),
    inverted. Every other mode goes through Pillow's conversion:
    palettes expanded, alpha dropped (the colours under it are hashed), CMYK, YCbCr and
    LAB converted, bilevel ("1") as black and white."""
    if im.mode in _WIDE_GREY_MODES or im.mode.startswith("I;16"):
        tiff = tiff or _TiffGrey()
        grey8 = _wide_grey8(im, tiff.unsigned_32)
        if tiff.white_is_zero:
            grey8 = 255 - grey8
        return Image.fromarray(grey8, "L").convert("RGB")
    return im.convert("RGB")


def _corrupt(media_type: str, e: Exception) -> MediaError:
    """A decoder failure in our words (Pillow's own text names its internals). A PNG's
    compressed text or colour-profile chunk past our limits on Pillow (`PNG_MAX_TEXT_CHUNK`
    decompressed a chunk, `PNG_MAX_TEXT_MEMORY` of text in all) is no damage
    but a decoding limit, as `MAX_PNG_CHUNKS` is: StructureLimitError, its message naming
    the limit it passed, so `prov sign` refuses the file and the server refuses to judge
    it unlogged (RESOURCE_EXHAUSTED, as any image it cannot decode within its limits)
    rather than answer UNSIGNED as for a damaged file."""
    kind = media_type.removeprefix("image/").upper()
    text = str(e)
    if media_type == "image/png" and isinstance(e, ValueError):
        if text.startswith("Decompressed data too large"):
            return StructureLimitError(
                "a compressed text or colour-profile chunk (zTXt, iTXt or iCCP) of the PNG"
                f" decompresses to more than {_mib(PNG_MAX_TEXT_CHUNK)}, the limit"
                " for one chunk here"
            )
        if text.startswith("Too much memory used in text chunks"):
            return StructureLimitError(
                "the PNG's text chunks hold more than"
                f" {_mib(PNG_MAX_TEXT_MEMORY)} decompressed, the limit here"
            )
    why = "ends early" if "truncated" in text.lower() else "cannot be decoded"
    return MediaError(f"truncated or corrupt image: the {kind} data {why}")


def _mib(size: int) -> str:
    """``size`` bytes in MiB ("1 MiB"), or in bytes when it is not a whole number of MiB."""
    return f"{size >> 20} MiB" if size and size % (1 << 20) == 0 else f"{size:,} bytes"


def pdq_scale(width: int, height: int, min_side: int = PDQ_MIN_SIDE) -> int:
    """The largest JPEG DCT scale denominator (8, 4, 2, else 1) at which an image of
    ``width`` x ``height`` pixels keeps a shorter side of at least ``min_side`` pixels."""
    for scale in (8, 4, 2):
        if min(width, height) // scale >= min_side:
            return scale
    return 1


def decode_image(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int | None = None,
    pdq_min_side: int | None = None,
) -> DecodedImage:
    """Decode an encoded still image (JPEG, PNG, WebP, GIF, TIFF, HEIC) to RGB pixels.

    data: the whole file. max_pixels: the largest width x height accepted, checked from the
    header before pixels are decoded. max_decode_bytes: the memory budget of the decode and
    the PDQ hash after it, estimated from the header (`provenance.media.budget`): a JPEG
    over it is decoded at 1/2, 1/4 or 1/8 scale, another format is refused; None: no
    budget. pdq_min_side: for pixels only hashed with PDQ, a JPEG is decoded at the
    smallest 1/2, 1/4 or 1/8 scale that keeps its shorter side at least this many pixels
    (`pdq_scale`; None: full size). The first frame of an animation or the first page of
    a multi-page TIFF is decoded. The EXIF orientation is applied (and its tag returned),
    and the image is converted to 8-bit RGB (alpha dropped, palette expanded, 16-bit grey
    scaled to 8 bits).

    Raises MediaTooLargeError if the image has more than max_pixels pixels or does not fit
    max_decode_bytes, DecodeBudgetError (one) for a JPEG of more bytes of APPn and COM
    segments than max_decode_bytes (Pillow keeps a copy of them: counted in the budget),
    and its StructureLimitError (a limit no flag moves) for a JPEG past MAX_JPEG_SCANS
    scans, MAX_JPEG_SEGMENTS segments, MAX_JPEG_STRAY_BYTES stray bytes or
    MAX_JPEG_METADATA_BYTES of EXIF, Photoshop, DQT and frame-header segments
    (`jpeg_layout`, checked before Pillow reads it), for a PNG of more than MAX_PNG_CHUNKS
    chunks or a compressed text or colour-profile chunk past PNG_MAX_TEXT_CHUNK or
    PNG_MAX_TEXT_MEMORY (`_corrupt`), for a TIFF past MAX_TIFF_STRIPS or
    MAX_TIFF_IFD_ENTRIES (`tiff_problem`), and for a GIF of more than MAX_GIF_BLOCKS
    blocks before its first image; MediaError if
    data is empty, of an unrecognized or non-image format, or truncated or corrupt.

    Pillow's hard limit (twice Image.MAX_IMAGE_PIXELS, about 179 million pixels by
    default) also applies, and raises MediaTooLargeError even when max_pixels is larger.
    Pillow's warnings are silenced for the duration of the call (its decompression-bomb
    warning defers to max_pixels, the others concern valid files); Python < 3.14's
    warnings filters are process-wide, so a concurrent thread may see that filter while
    the call runs.
    """
    if not data:
        raise MediaError("empty file")
    media_type = sniff_media_type(data[:SNIFF_BYTES])
    if media_type is None:
        raise MediaError(_describe_unknown(data))
    if media_type not in _PIL_FORMATS:
        raise MediaError(f"not a decodable still image: looks like {media_type}")
    if media_type == "image/jpeg":
        layout = jpeg_layout(data)
        if (problem := layout.problem()) is not None:
            raise StructureLimitError(problem)
        if max_decode_bytes is not None and layout.kept_bytes > max_decode_bytes:
            raise DecodeBudgetError(kept_segments_problem(layout.kept_bytes, max_decode_bytes))
    if media_type == "image/png" and png_chunk_count(data) > MAX_PNG_CHUNKS:
        raise StructureLimitError(f"a PNG of more than {MAX_PNG_CHUNKS:,} chunks, the limit here")
    if media_type == "image/tiff" and (problem := tiff_problem(data)) is not None:
        raise StructureLimitError(problem)
    if media_type == "image/gif" and gif_block_count(data) > MAX_GIF_BLOCKS:
        raise StructureLimitError(
            f"a GIF of more than {MAX_GIF_BLOCKS:,} blocks before its first image, the limit here"
        )
    try:
        with warnings.catch_warnings():
            # Pillow warns about decompression bombs (max_pixels is the authority here) and
            # about oddities of valid files (palette transparency, EXIF); none is the caller's.
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=_PIL_FORMATS[media_type]) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise MediaTooLargeError(
                        f"image is {width}x{height} = {width * height} pixels, "
                        f"over the limit of {max_pixels} pixels"
                    )
                wanted = 1
                if pdq_min_side is not None and media_type == "image/jpeg":
                    wanted = pdq_scale(width, height, pdq_min_side)
                scale = fit_decode_budget(im, media_type, max_decode_bytes, wanted)
                im.load()
                orientation = _exif_orientation(im)
                rgb_image = _to_rgb8(ImageOps.exif_transpose(im), _tiff_grey(im))
    except MediaError:
        raise
    except UnidentifiedImageError as e:
        if media_type == "image/tiff" and (samples := tiff_unread_samples(data)) is not None:
            raise MediaError(
                f"a TIFF of {samples}, which the TIFF decoder here cannot read (it reads 1,"
                " 8 and 16-bit integer samples and 32-bit grey ones, integer or floating"
                " point), or a corrupt TIFF"
            ) from e
        raise MediaError(f"truncated or corrupt image: not parseable as {media_type}") from e
    except Image.DecompressionBombError as e:
        # Pillow's hard limit (twice Image.MAX_IMAGE_PIXELS) fired inside Image.open.
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{found.group(1)} pixels" if found else "more pixels than the decoder allows"
        raise MediaTooLargeError(
            f"image too large: {size}; the limit here is {max_pixels} pixels"
        ) from e
    except Exception as e:  # any failure of a parser fed hostile bytes is the input's fault
        raise _corrupt(media_type, e) from e
    rgb = np.asarray(rgb_image, dtype=np.uint8)
    rgb.flags.writeable = False
    return DecodedImage(
        rgb=rgb,
        width=rgb_image.width,
        height=rgb_image.height,
        media_type=media_type,
        orientation=orientation,
        scale=scale,
        full_size=None if scale == 1 else _displayed(width, height, orientation),
    )


def _displayed(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) of a stored width x height image shown with an EXIF orientation
    (5..8 turn it by a quarter)."""
    return (height, width) if orientation >= 5 else (width, height)


def image_soft_binding(image: DecodedImage) -> PerceptualHash:
    """The PDQ soft binding of a decoded image (see `provenance.core.binding.pdq_hash`)."""
    return pdq_hash(image.rgb)
