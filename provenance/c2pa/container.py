"""What our SHA-256 hard binding covers in a file that carries a C2PA manifest store.

Embedding a manifest store changes a file in a known, reversible way:

* JPEG: APP11 segments holding a JUMBF superbox of type C2PA are inserted
  (C2PA 2.1, section A.3.1; ISO/IEC 19566-5 for the APP11 JUMBF wrapping).
* PNG: one ``caBX`` chunk is inserted (C2PA 2.1, section A.3.3).
* ISO BMFF (MP4, MOV): one top-level ``uuid`` box with the C2PA user type
  d8fec3d6-1b0e-483c-9297-5828877ec481 is inserted (C2PA 2.1, section A.4.1), and
  because it is placed ahead of ``mdat``, the writer shifts every chunk offset in the
  ``stco`` / ``co64`` tables (ISO/IEC 14496-12, 8.7.5) by the box size.

`strip_manifest_store` undoes exactly that and returns the bytes the file had before
embedding; our claim's hard binding is the SHA-256 of those bytes (`content_sha256`).
`strip_and_locate` also says where the removed bytes were, so that a place in the
stripped bytes can be named in the file (the damaged chunks of an edited video export).
For a file without a manifest store it returns the input unchanged, so the binding of a
capture is the same whether or not Content Credentials were later embedded in it.
Everything here is pure: bytes in, bytes out.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from provenance.core.errors import BindingError, FileChangedError, MediaError, ProvenanceError
from provenance.core.files import FileView

#: JUMBF description-box UUID of a C2PA manifest store ("c2pa" 0011-0010-8000-00AA00389B71).
C2PA_STORE_UUID = bytes.fromhex("6332706100110010800000aa00389b71")
#: Extended user type of the top-level BMFF box that holds a C2PA manifest store.
C2PA_BMFF_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")

JPEG_TYPES = frozenset({"image/jpeg"})
PNG_TYPES = frozenset({"image/png"})
BMFF_TYPES = frozenset({"video/mp4", "video/quicktime"})
#: Media types whose manifest store this module can remove.
STRIPPABLE_TYPES = JPEG_TYPES | PNG_TYPES | BMFF_TYPES

#: Bytes every manifest store that `strip_manifest_store` removes holds, per media type: the
#: JUMBF description's UUID (JPEG), the chunk type (PNG), the box's user type (BMFF).
_STORE_MARKS = {
    **dict.fromkeys(JPEG_TYPES, C2PA_STORE_UUID),
    **dict.fromkeys(PNG_TYPES, b"caBX"),
    **dict.fromkeys(BMFF_TYPES, C2PA_BMFF_UUID),
}

#: What the walks here read: a file's bytes, or a `FileView` of it (read by position as
#: walked, so a file cut short is an error, not the SIGBUS of a mapping).
Buffer = bytes | bytearray | FileView


def _unpack_from(fmt: str, data: Buffer, at: int) -> tuple[Any, ...]:
    """``struct.unpack_from(fmt, data, at)``, also for a `FileView` (which has no buffer
    to unpack from: `FileView.unpack_from`). Raises struct.error past the end."""
    if isinstance(data, FileView):
        return data.unpack_from(fmt, at)
    return struct.unpack_from(fmt, data, at)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Box types on the path moov/trak/mdia/minf/stbl that lead to the chunk-offset tables.
_BMFF_CONTAINERS = (b"trak", b"mdia", b"minf", b"stbl")


@dataclass(frozen=True)
class Stripped:
    """A file's bytes with its C2PA manifest store removed (``data``) and where the store
    was: ``removed`` holds (offset in the file, length in bytes) of each run of bytes
    taken out, in file order, and is empty when the file held no store (``data`` is then
    the file). Every other byte keeps its order; an MP4's chunk-offset tables are also
    rewritten, in place, at the same length."""

    data: bytes
    removed: tuple[tuple[int, int], ...] = ()


def strip_manifest_store(data: bytes, media_type: str) -> bytes:
    """Return the file's bytes with its embedded C2PA manifest store removed.

    data: the whole file; media_type: one of STRIPPABLE_TYPES. Raises MediaError for
    another media type, a file too malformed to walk (truncated segment, chunk or box)
    and a BMFF file of more than MAX_BMFF_BOXES boxes (`bmff_box_problem`) or nested more
    than MAX_BMFF_DEPTH deep, and BindingError if a BMFF layout cannot be restored exactly (fragmented
    files, a chunk offset pointing into the removed box).
    """
    return strip_and_locate(data, media_type).data


def strip_and_locate(data: bytes, media_type: str) -> Stripped:
    """`strip_manifest_store`, with the runs of bytes it removed (`Stripped`).

    Raises as `strip_manifest_store` does.
    """
    layout = _layout(data, media_type)
    if not layout.removed:
        return Stripped(data)
    out = bytearray()
    for piece in _pieces(data, layout):
        out += piece
    return Stripped(bytes(out), layout.removed)


#: Most bytes of a kept run hashed at once by `stripped_sha256` (a slice of a mapping).
_HASH_SLICE_BYTES = 1 << 20


def stripped_sha256(data: Buffer, media_type: str) -> bytes:
    """SHA-256 (32 bytes) of `strip_manifest_store(data, media_type)`, or b"" when
    nothing would be removed, without making the stripped copy: the kept runs of
    ``data`` (bytes, or a `FileView` of a file, read by position into one buffer of
    1 MiB) are hashed in slices of at most 1 MiB, and only an MP4's ``moov`` box is
    copied, to rewrite its chunk offsets. Memory: O(``moov``), not O(file). Raises as
    `strip_manifest_store`, and FileChangedError when a `FileView`'s file got shorter
    while it was read."""
    layout = _layout(data, media_type)
    if not layout.removed:
        return b""
    digest = hashlib.sha256()
    for piece in _pieces(data, layout):
        digest.update(piece)
    return digest.digest()


@dataclass(frozen=True)
class _Layout:
    """What a strip keeps of a file: ``kept``, (start, end) runs in file order, which
    joined are the file without its manifest store; ``removed`` as `Stripped.removed`
    (empty: nothing to strip, the file is kept as it is); ``moov``: for BMFF, the start
    of each kept ``moov`` box and its header length, whose chunk offsets are rewritten."""

    kept: tuple[tuple[int, int], ...] = ()
    removed: tuple[tuple[int, int], ...] = ()
    moov: dict[int, int] = field(default_factory=dict)


def _layout(data: Buffer, media_type: str) -> _Layout:
    """`_Layout` of ``data`` as a file of ``media_type``. Raises as `strip_manifest_store`."""
    if media_type in JPEG_TYPES:
        return _strip_jpeg(data)
    if media_type in PNG_TYPES:
        return _strip_png(data)
    if media_type in BMFF_TYPES:
        return _strip_bmff(data)
    raise MediaError(
        f"no C2PA manifest-store rule for media type {media_type!r}; "
        f"supported: {', '.join(sorted(STRIPPABLE_TYPES))}"
    )


def _pieces(data: Buffer, layout: _Layout) -> Iterator[memoryview | bytearray]:
    """The bytes of the stripped file, in order, in pieces of at most `_HASH_SLICE_BYTES`
    (but a rewritten ``moov`` box, whole). Raises BindingError when a chunk offset points
    into a removed box."""
    if isinstance(data, FileView):
        for start, end in layout.kept:
            header = layout.moov.get(start)
            if header is not None:
                yield _unshifted(bytearray(data[start:end]), header, layout)
            else:
                yield from data.pieces(start, end)
        return
    view = memoryview(data)
    try:
        for start, end in layout.kept:
            header = layout.moov.get(start)
            if header is not None:
                yield _unshifted(bytearray(view[start:end]), header, layout)
                continue
            for at in range(start, end, _HASH_SLICE_BYTES):
                yield view[at : min(end, at + _HASH_SLICE_BYTES)]
    finally:
        view.release()


def _unshifted(box: bytearray, header: int, layout: _Layout) -> bytearray:
    """A kept ``moov`` box (``header``: its header's length) with its chunk offsets
    rewritten to the file without the removed boxes."""
    _unshift_chunk_offsets(box, header, len(box), list(layout.removed))
    return box


def may_hold_manifest_store(data: Buffer, media_type: str) -> bool:
    """False when ``data`` certainly holds no manifest store that `strip_manifest_store`
    would remove (its marker bytes occur nowhere: one fast search instead of a walk of the
    file), or ``media_type`` is not in STRIPPABLE_TYPES; True when it may."""
    mark = _STORE_MARKS.get(media_type)
    return mark is not None and data.find(mark) != -1  # (a FileView has no `in`)


def stored_content_sha256(data: Buffer, media_type: str | None) -> bytes:
    """SHA-256 (32 bytes) of ``data`` without its C2PA manifest store, when it carries
    one that `strip_manifest_store` removes; b"" when it carries none, ``media_type`` is
    None or not strippable, or the store cannot be stripped (nothing to compare with).
    Raises FileChangedError when a `FileView`'s file got shorter while it was read."""
    if media_type is None or not may_hold_manifest_store(data, media_type):
        return b""
    try:
        return stripped_sha256(data, media_type)
    except FileChangedError:
        raise
    except ProvenanceError:
        return b""


def content_sha256(data: bytes, media_type: str) -> bytes:
    """SHA-256 (32 bytes) of `strip_manifest_store(data, media_type)`: our hard binding.

    Raises as `strip_manifest_store` does.
    """
    return hashlib.sha256(strip_manifest_store(data, media_type)).digest()


def _strip_jpeg(data: Buffer) -> _Layout:
    """Drop the APP11 JUMBF segments of every C2PA manifest store before the first scan.

    The walk stops at the first scan, at the end of the image, or at the first byte that
    is not a well-formed marker segment; everything from there on is kept as it is.
    """
    segments, pos = _jpeg_segments(data)
    c2pa_instances = {
        _jumbf_instance(data, s)
        for s, e in segments
        if _is_app11_jumbf(data, s, e) and _jumbf_first_is_c2pa(data, s, e)
    }
    if not c2pa_instances:
        return _Layout()
    kept = [(0, 2)]
    removed: list[tuple[int, int]] = []
    for s, e in segments:
        if not (_is_app11_jumbf(data, s, e) and _jumbf_instance(data, s) in c2pa_instances):
            kept.append((s, e))
        else:
            removed.append((s, e - s))
    kept.append((pos, len(data)))
    return _Layout(tuple(kept), tuple(removed))


#: Most marker segments (a run of fill bytes counts as one) walked before a JPEG's first
#: scan: a camera JPEG holds a few dozen, and a manifest store of 256 MiB 4,096 APP11
#: segments; past it the walk is refused rather than listing, say, 64 million 4-byte COM
#: segments of a 256 MiB file (`provenance.media.image.MAX_JPEG_SEGMENTS`, for decoding).
MAX_JPEG_SEGMENTS = 100_000
#: A run of fill bytes (0xFF) before a marker.
_FILL_RUN = re.compile(rb"\xff+")


def _jpeg_segments(data: Buffer) -> tuple[list[tuple[int, int]], int]:
    """The marker segments after SOI as contiguous (start, end) ranges (a run of fill
    bytes is one range, ending before the 0xFF of the marker it precedes), and where the
    walk stopped (first scan, end of image, or the first malformed segment). Raises
    MediaError past MAX_JPEG_SEGMENTS ranges."""
    if data[:2] != b"\xff\xd8":
        raise MediaError("not a JPEG file (no SOI marker)")
    segments: list[tuple[int, int]] = []  # contiguous (start, end) ranges after SOI
    pos = 2
    while pos + 1 < len(data) and data[pos] == 0xFF:
        if len(segments) >= MAX_JPEG_SEGMENTS:
            raise MediaError(
                f"the JPEG has more than {MAX_JPEG_SEGMENTS:,} marker segments before its"
                " first scan: not walked"
            )
        marker = data[pos + 1]
        if marker == 0xFF:  # fill bytes before a marker (ITU T.81, B.1.1.2): one range
            run_end = _fill_run_end(data, pos)
            segments.append((pos, run_end - 1))
            pos = run_end - 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            segments.append((pos, pos + 2))
            pos += 2
            continue
        if pos + 4 > len(data):
            break
        end = pos + 2 + _unpack_from(">H", data, pos + 2)[0]
        if end < pos + 4 or end > len(data):
            break
        segments.append((pos, end))
        pos = end
    return segments, pos


def _fill_run_end(data: Buffer, pos: int) -> int:
    """Where the run of fill bytes (0xFF) from ``data[pos]``, itself one, ends."""
    if not isinstance(data, FileView):
        run = _FILL_RUN.match(data, pos)
        assert run is not None  # data[pos] is 0xFF
        return run.end()
    while pos < len(data):
        block = data[pos : pos + 4096]
        kept = len(block) - len(block.lstrip(b"\xff"))
        pos += kept
        if kept < len(block):
            break
    return pos


def manifest_store(data: bytes, media_type: str) -> tuple[bytes, int | None]:
    """The C2PA manifest store's JUMBF superbox (ISO/IEC 19566-5) and where it sits.

    Returns (store bytes, file offset of its first byte), the offset None when a JPEG
    store is split over several APP11 segments and had to be put back together (each
    continuation segment repeats the box header, C2PA 2.1, A.3.1). The store lives in
    the JPEG APP11 segments, the PNG ``caBX`` chunk (A.3.3) or the BMFF ``uuid`` box
    (A.4.1). Raises MediaError when the file carries no store, or its store overruns
    its container or is missing segments.
    """
    if media_type in JPEG_TYPES:
        segments = _jpeg_segments(data)[0]
        units = [
            (s + 12, e, s)
            for s, e in segments
            if _is_app11_jumbf(data, s, e) and _jumbf_first_is_c2pa(data, s, e)
        ]
    elif media_type in PNG_TYPES:
        units = [(p + 8, p + 8 + n, p) for p, n in _png_chunks(data, b"caBX")]
    elif media_type in BMFF_TYPES:
        units = [(p, e, s) for kind, s, p, e in _top_boxes(data) if _is_c2pa_box(data, kind, p, e)]
    else:
        raise MediaError(f"no C2PA manifest-store rule for media type {media_type!r}")
    for start, end, unit in units:
        at = data.find(b"jumd" + C2PA_STORE_UUID, start, end)
        if at < start + 12 or data[at - 8 : at - 4] != b"jumb":
            continue
        box = at - 12
        length = struct.unpack_from(">I", data, box)[0]
        if box + length <= end:
            return data[box : box + length], box
        if media_type in JPEG_TYPES:
            return _jpeg_store(data, segments, unit, length), None
        raise MediaError("the C2PA manifest store overruns its container")
    raise MediaError("the file carries no C2PA manifest store")


def _jpeg_store(data: bytes, segments: list[tuple[int, int]], first: int, length: int) -> bytes:
    """Put a JUMBF box of ``length`` bytes back together from its APP11 segments, in
    sequence-number order; the first keeps the box header, the others drop their copy."""
    instance = _jumbf_instance(data, first)
    parts = sorted(
        (struct.unpack_from(">I", data, s + 8)[0], s, e)
        for s, e in segments
        if _is_app11_jumbf(data, s, e) and _jumbf_instance(data, s) == instance
    )
    header = 16 if struct.unpack_from(">I", data, first + 12)[0] == 1 else 8
    store = bytearray()
    for number, (sequence, s, e) in enumerate(parts, start=1):
        if sequence != number:
            raise MediaError(f"the C2PA manifest store lacks APP11 segment {number}")
        store += data[s + 12 : e] if number == 1 else data[s + 12 + header : e]
    if len(store) < length:
        raise MediaError("the C2PA manifest store is truncated (APP11 segments missing)")
    return bytes(store[:length])


#: Most chunks a PNG may hold up to IEND, for decoding (`provenance.media.image`) and for
#: these walks. Pillow reads every chunk header in Python (before the picture, each IDAT,
#: and after it), about 11 us a chunk: a PNG of a million empty ancillary chunks, 11 MiB,
#: took 10.9 s to decode, and 2 million took about 2 s per walk here, so
#: 256 MiB of them would hold a decode slot for minutes. libpng writes IDAT chunks of
#: 8 KiB, so a PNG within the decode budget (13 megapixels) holds a few thousand.
MAX_PNG_CHUNKS = 100_000


def _png_walk(data: Buffer) -> Iterator[tuple[int, int, bytes]]:
    """(chunk start, data length, chunk type) of each chunk after the signature, in file
    order, up to and including IEND (PNG 3rd edition, 5.3 chunk layout); a chunk that
    overruns the file ends the walk. Raises MediaError at a chunk past MAX_PNG_CHUNKS."""
    pos, count, size = len(_PNG_SIGNATURE), 0, len(data)
    while pos + 12 <= size:
        length, kind = _unpack_from(">I4s", data, pos)
        if pos + 12 + length > size:
            return
        count += 1
        if count > MAX_PNG_CHUNKS:
            raise MediaError(f"a PNG of more than {MAX_PNG_CHUNKS:,} chunks: not walked")
        yield pos, length, kind
        if kind == b"IEND":
            return
        pos += 12 + length


def _png_chunks(data: bytes, kind: bytes) -> list[tuple[int, int]]:
    """(chunk start, data length) of every chunk of this type, in file order. Raises
    MediaError past MAX_PNG_CHUNKS chunks."""
    return [(pos, length) for pos, length, this in _png_walk(data) if this == kind]


def _is_app11_jumbf(data: Buffer, start: int, end: int) -> bool:
    # FF EB, length (2), common identifier "JP" (2), instance (2), sequence (4), box...
    return end - start >= 20 and data[start + 1] == 0xEB and data[start + 4 : start + 6] == b"JP"


def _jumbf_instance(data: Buffer, start: int) -> bytes:
    return bytes(data[start + 6 : start + 8])


def _jumbf_first_is_c2pa(data: Buffer, start: int, end: int) -> bool:
    """True for the first segment of a JUMBF superbox whose description names C2PA."""
    sequence = _unpack_from(">I", data, start + 8)[0]
    box = start + 12
    if sequence != 1 or data[box + 4 : box + 8] != b"jumb":
        return False
    header = 16 if _unpack_from(">I", data, box)[0] == 1 else 8
    jumd = box + header
    return (
        jumd + 24 <= end
        and data[jumd + 4 : jumd + 8] == b"jumd"
        and data[jumd + 8 : jumd + 24] == C2PA_STORE_UUID
    )


def _strip_png(data: Buffer) -> _Layout:
    """Drop every ``caBX`` chunk (PNG 3rd edition, 5.3 chunk layout).

    The walk stops after IEND or at a chunk that overruns the file; what follows is kept.
    """
    if not data[: len(_PNG_SIGNATURE)] == _PNG_SIGNATURE:
        raise MediaError("not a PNG file (bad signature)")
    kept = [(0, len(_PNG_SIGNATURE))]
    end = len(_PNG_SIGNATURE)  # where the walked chunks end
    removed: list[tuple[int, int]] = []
    for pos, length, kind in _png_walk(data):
        end = pos + 12 + length
        if kind == b"caBX":
            removed.append((pos, end - pos))
        else:
            kept.append((pos, end))
    kept.append((end, len(data)))
    return _Layout(tuple(kept), tuple(removed)) if removed else _Layout()


#: Most boxes one BMFF walk here lists, and most boxes a BMFF file (MP4, MOV, HEIC, AVIF)
#: may hold, counted as `bmff_box_count` counts them, for the C2PA reader to be given it
#: (`provenance.c2pa.reader.read_c2pa`). The reader (c2pa-rs, through c2pa-python) takes
#: time quadratic or worse in the boxes of the containers it walks (measured with one
#: reader on this 2-core machine at load average 8, a valid capture with empty ``free``
#: boxes appended): 4,000 boxes 0.44 s, 10,000 2.0 s, 16,000 4.6 s, 50,000 (a 466 KB
#: file) 26 s, 100,000 200 s. Two uploads of 50,000 outlived the server's 30 s reader
#: limit and held both of its decode slots, so an honest upload waited 10 s and was
#: refused. The Python walks here took 1.6 us and about 230 bytes per box: a 32 MB file
#: of 8-byte boxes, 6.5 s and 900 MB. The MP4 and MOV files of the shared fixtures and
#: samples hold 28-51 boxes; a fragmented MP4, about 7 per fragment.
MAX_BMFF_BOXES = 4096
#: How far a file over MAX_BMFF_BOXES is counted, to name its count in the refusal
#: (`bmff_box_problem`; past it, "more than 16,384"): a recording in 1-second fragments
#: of up to about 40 minutes. A 32 MB file of 8-byte boxes: 3.1-7.2 ms counted to
#: MAX_BMFF_BOXES, 12.6-13.0 ms to this (69-71 ms to 16 times the limit), per walk.
_BMFF_BOXES_NAMED = 4 * MAX_BMFF_BOXES
#: Deepest nesting of BMFF boxes walked (moov/trak/mdia/minf/stbl is 5 deep); deeper
#: ones are not counted (c2pa-rs refuses them itself) and not rewritten (MediaError).
MAX_BMFF_DEPTH = 32
#: Box types whose payload the C2PA reader walks as more boxes, as measured on
#: c2pa-python 0.x (a box of each holding 10,000 empty boxes cost about 1 s; ``meta``
#: with its full-box header); other types cost nothing per box inside them.
_READER_CONTAINERS = frozenset(
    {
        *(b"moov", b"trak", b"udta", b"mdia", b"minf", b"stbl", b"edts", b"dinf"),
        *(b"moof", b"traf", b"mvex", b"mfra", b"schi", b"tref", b"meta"),
    }
)
#: Of those, the full boxes (ISO/IEC 14496-12, 4.2): 4 bytes of version and flags first.
_FULL_BOX_CONTAINERS = frozenset({b"meta"})


def _box_at(data: Buffer, pos: int, end: int) -> tuple[bytes, int, int]:
    """(type, header length, size) of the box at data[pos:end], the size 0 (a box
    running to its container's end, ISO/IEC 14496-12, 4.2) given as ``end - pos``; a
    header that does not fit gives size 0."""
    if pos + 8 > end:
        return b"", 8, 0
    size, kind = _unpack_from(">I4s", data, pos)
    if size == 1:
        if pos + 16 > end:
            return kind, 16, 0
        return kind, 16, _unpack_from(">Q", data, pos + 8)[0]
    return kind, 8, end - pos if size == 0 else size


def bmff_box_count(data: Buffer, limit: int = MAX_BMFF_BOXES) -> int:
    """The boxes of an ISO BMFF file (ISO/IEC 14496-12, 4.2): the top-level ones and,
    up to MAX_BMFF_DEPTH deep, those in the containers the C2PA reader walks
    (_READER_CONTAINERS), counting no further than ``limit + 1``. A box whose size
    overruns its container, or is under its header, ends the walk of that container.
    Reads only box headers, so ``data`` may be a `FileView` of a large file; raises
    FileChangedError when its file got shorter while it was read."""
    count = 0
    stack = [(0, len(data), 0)]
    while stack:
        pos, end, depth = stack.pop()
        while pos < end:
            kind, header, size = _box_at(data, pos, end)
            if size < header or pos + size > end:
                break
            count += 1
            if count > limit:
                return count
            if kind in _READER_CONTAINERS and depth < MAX_BMFF_DEPTH:
                skip = 4 if kind in _FULL_BOX_CONTAINERS else 0
                stack.append((pos + header + skip, pos + size, depth + 1))
            pos += size
    return count


def bmff_box_problem(data: Buffer) -> str | None:
    """Why a BMFF file is not walked (here, or by the C2PA reader): it holds more than
    MAX_BMFF_BOXES boxes (`bmff_box_count`), saying how many (up to 4 times that) and
    how a fragmented recording reaches it; None when it is walked."""
    count = bmff_box_count(data, _BMFF_BOXES_NAMED)
    if count <= MAX_BMFF_BOXES:
        return None
    boxes = f"more than {_BMFF_BOXES_NAMED:,}" if count > _BMFF_BOXES_NAMED else f"{count:,}"
    return (
        f"a BMFF file of {boxes} boxes, over the {MAX_BMFF_BOXES:,} walked here (a"
        " fragmented MP4 holds about 7 a fragment: a recording in 1-second fragments"
        " passes it after 6 to 10 minutes)"
    )


#: Most chunks a WebP (RIFF) file may hold for the C2PA reader to be given it. The reader
#: takes about 26 us a chunk (measured at load average 8): 200,000 empty ``JUNK``
#: chunks, 1.6 MB, 6.3 s; a million, 8 MB, 26 s, so a 10 MB file held a decode slot to
#: the server's 30 s reader limit. An animated WebP holds one chunk per frame.
MAX_WEBP_CHUNKS = 100_000

#: Media types the C2PA reader reads as ISO BMFF (C2PA 2.1, A.4).
BMFF_READ_TYPES = frozenset({"video/mp4", "video/quicktime", "image/heic", "image/avif"})

#: Media types the C2PA reader reads as TIFF (a DNG is one, and our sniffing names it
#: image/tiff; c2pa-python's names for it too).
TIFF_READ_TYPES = frozenset({"image/tiff", "image/dng", "image/x-adobe-dng"})
#: Most IFDs and IFD entries, counted together, that the C2PA reader may have to read in
#: a TIFF for the file to be given to it (`tiff_ifd_count`). c2pa-rs reads each entry on
#: its own, 20-35 us apiece (c2pa-python 0.38, this 2-core machine at load 2-4,
#: bench/bench_tiff_ifds.py): a first IFD of 65,535 entries took 1.3-2.3 s, and 4 SubIFD
#: offsets all naming one IFD of 65,535 entries 5.1-7.5 s (its own caps, 2,000 pages of
#: 1,000 SubIFDs each, leave that unbounded in practice); 20,000 took 0.4-0.5 s. The
#: shared fixtures' DNG (C.dng) counts 134: 6 IFDs (the page, 4 SubIFDs, Exif) of 128
#: entries in all; a camera's DNG or TIFF, a few hundred.
MAX_TIFF_IFD_UNITS = 20_000
#: Tags whose IFDs the C2PA reader reads beside each page's (c2pa-rs ``map_tiff``):
#: SubIFDs (TIFF 6.0 Technical Notes / DNG 1.6: an array of IFD offsets), the Exif IFD and
#: the GPS IFD (Exif 2.32, 4.6.3).
_TIFF_SUBIFDS, _TIFF_EXIF_IFD, _TIFF_GPS_IFD = 0x014A, 0x8769, 0x8825
_TIFF_IFD_TAGS = frozenset({_TIFF_SUBIFDS, _TIFF_EXIF_IFD, _TIFF_GPS_IFD})
#: Most SubIFDs of a page the C2PA reader reads; past it, it reads none and refuses the
#: file ("TIFF file has too many subfiles": c2pa-rs ``MAX_SUBFILES``, 0.5 ms on the
#: shared fixtures' c2pa-rs PoC of 5,000 SubIFD offsets).
_READER_MAX_SUBIFDS = 1000


def tiff_ifd_count(data: Buffer, limit: int = MAX_TIFF_IFD_UNITS) -> int:
    """The IFDs and IFD entries the C2PA reader reads in the TIFF or BigTIFF ``data``
    (TIFF 6.0, section 2; BigTIFF: 8-byte counts and offsets, 20-byte entries), each IFD
    counting 1 plus its entries: every page IFD of the chain from the header (until an
    offset seen before, or one outside the file), and for each page the IFDs its SubIFDs,
    Exif IFD and GPS IFD tags name (one per offset, repeats counted again, as the reader
    reads them again; the count ends at a page of more than _READER_MAX_SUBIFDS SubIFDs,
    where the reader stops). An IFD is counted for the entries the file holds after its
    count.
    Stops once past ``limit`` (the count is then over it by at most one IFD's entries);
    reads only counts, entry heads and offsets, so ``data`` may be a `FileView` of a large
    file (FileChangedError when its file got shorter while it was read)."""
    big = data[2:4] in (b"+\x00", b"\x00+")
    order = "<" if data[:2] == b"II" else ">"
    count_fmt, offset_fmt = order + ("Q" if big else "H"), order + ("Q" if big else "I")
    step, head = (20, 8) if big else (12, 2)
    tag_fmt = order + "H"

    def entries(at: int) -> tuple[int, int]:
        """(entries held, position of the first) of the IFD at ``at``; (-1, 0) if none."""
        if at + head > len(data):
            return -1, 0
        (n,) = _unpack_from(count_fmt, data, at)
        return min(n, (len(data) - at - head) // step), at + head

    def offsets(entry: int) -> list[int] | None:
        """The IFD offsets an entry holds: its value, or for SubIFDs up to ``limit + 1``
        32-bit ones (as c2pa-rs reads them), in the value field or where it points; None
        for more SubIFDs than the reader takes (it refuses the file before reading them).
        32-bit in a BigTIFF too, where the BigTIFF spec's are 8 bytes (LONG8, IFD8): the
        reader (c2pa-python 0.38.1) reads 4-byte ones there, so a file whose 8-byte
        offsets lie past its end but whose halves name a large IFD made it read that IFD
        (tests/test_tiff_ifds.py); counting 8-byte ones would let such a file past the
        bound."""
        tag, n = _unpack_from(order + "H2x" + offset_fmt[1], data, entry)
        value = entry + (12 if big else 8)
        if tag != _TIFF_SUBIFDS:
            return [_unpack_from(offset_fmt, data, value)[0]]
        if n > _READER_MAX_SUBIFDS:
            return None
        if 4 * n > (8 if big else 4):
            (value,) = _unpack_from(offset_fmt, data, value)
            n = min(n, (len(data) - value) // 4) if value < len(data) else 0
        return list(_unpack_from(f"{order}{n}I", data, value)) if n else []

    def offset_at(at: int) -> int:
        """The offset at ``at``, 0 (none) past the file's end."""
        fits = at + struct.calcsize(offset_fmt) <= len(data)
        return int(_unpack_from(offset_fmt, data, at)[0]) if fits else 0

    units = 0
    seen: set[int] = set()
    page = offset_at(8 if big else 4)
    while page and page not in seen:
        seen.add(page)
        n, first = entries(page)
        if n < 0:
            break
        units += 1 + n
        if units > limit:
            break
        held = bytes(data[first : first + n * step])  # n <= limit: 400 KB at the default
        for at_tag in range(0, n * step, step):
            if struct.unpack_from(tag_fmt, held, at_tag)[0] in _TIFF_IFD_TAGS:
                named = offsets(first + at_tag)
                if named is None:
                    return units  # the reader reads no further
                for at in named:
                    units += 1 + max(0, entries(at)[0])
                    if units > limit:
                        return units
        page = offset_at(first + n * step)
    return units


def _riff_chunk_count(data: Buffer, limit: int) -> int:
    """The chunks of a RIFF file after its 12-byte header (RIFF: each a four-character
    code, a little-endian 32-bit size and the payload padded to an even length), counting
    no further than ``limit + 1``; a chunk that overruns the file ends the count."""
    pos, count, end = 12, 0, len(data)
    while pos + 8 <= end and count <= limit:
        (size,) = _unpack_from("<I", data, pos + 4)
        if pos + 8 + size > end:
            break
        count += 1
        pos += 8 + size + (size & 1)
    return count


def reader_walk_problem(data: Buffer, media_type: str) -> str | None:
    """Why a file is not given to the C2PA reader (`provenance.c2pa.reader.read_c2pa`),
    whose time grows with the units of its container, faster than linearly for BMFF boxes
    and PNG chunks (c2pa-rs: a PNG of 100,000 empty chunks took 6.8 s, 500,000 31 s): a
    BMFF file (BMFF_READ_TYPES) of more than MAX_BMFF_BOXES boxes, a PNG of more than
    MAX_PNG_CHUNKS chunks, a WebP of more than MAX_WEBP_CHUNKS chunks, a TIFF (or DNG)
    of more than MAX_TIFF_IFD_UNITS IFDs and entries (`tiff_ifd_count`); None for a file
    within them, or of another type. Reads only box, chunk and IFD headers, so ``data``
    may be a `FileView` of a large file (`provenance.c2pa.reader.read_c2pa` passes one);
    raises FileChangedError when its file got shorter while it was read."""
    if media_type in BMFF_READ_TYPES:
        return bmff_box_problem(data)
    if media_type in PNG_TYPES:
        try:
            for _ in _png_walk(data):
                pass
        except FileChangedError:
            raise
        except MediaError:
            return f"a PNG of more than {MAX_PNG_CHUNKS:,} chunks, the limit here"
    if media_type == "image/webp" and _riff_chunk_count(data, MAX_WEBP_CHUNKS) > MAX_WEBP_CHUNKS:
        return f"a WebP of more than {MAX_WEBP_CHUNKS:,} chunks, the limit here"
    if media_type in TIFF_READ_TYPES and tiff_ifd_count(data) > MAX_TIFF_IFD_UNITS:
        return (
            f"a TIFF of more than {MAX_TIFF_IFD_UNITS:,} IFDs and IFD entries (counting"
            " each IFD the C2PA reader reads), the limit here"
        )
    return None


def _top_boxes(data: Buffer) -> list[tuple[bytes, int, int, int]]:
    """The top-level boxes of a BMFF file, as `_boxes` lists them (not strict). Raises
    MediaError for a file over MAX_BMFF_BOXES boxes (`bmff_box_problem`)."""
    if (problem := bmff_box_problem(data)) is not None:
        raise MediaError(f"{problem}: not walked")
    return _boxes(data, 0, len(data), strict=False)


def _boxes(data: Buffer, start: int, end: int, strict: bool) -> list[tuple[bytes, int, int, int]]:
    """List the boxes in data[start:end] as (type, box start, payload start, box end).

    A malformed box header raises MediaError when strict; otherwise the listing stops
    there and the caller keeps the remaining bytes as an opaque tail.
    """
    found = []
    pos = start
    while pos < end:
        kind, header, size = _box_at(data, pos, end)
        if size < header or pos + size > end:
            if strict:
                raise MediaError(f"BMFF box {kind!r} at byte {pos} has a bad size {size}")
            break
        found.append((kind, pos, pos + header, pos + size))
        pos += size
    return found


def _is_c2pa_box(data: Buffer, kind: bytes, payload: int, end: int) -> bool:
    """Whether the BMFF box of ``kind`` whose payload is data[payload:end] is a C2PA
    ``uuid`` box (C2PA 2.1 §A.4.2): its 16-byte user type, inside the box, is
    C2PA_BMFF_UUID. A ``uuid`` box too short to hold its user type is not one: before,
    the bytes after it completed the comparison, so stripping one box could make the
    box before it match (a second strip removed more: found by `make fuzz`)."""
    return (
        kind == b"uuid" and end - payload >= 16 and data[payload : payload + 16] == C2PA_BMFF_UUID
    )


def _strip_bmff(data: Buffer) -> _Layout:
    """Remove top-level C2PA ``uuid`` boxes and shift chunk offsets back."""
    top = _top_boxes(data)
    removed = [(s, e - s) for kind, s, p, e in top if _is_c2pa_box(data, kind, p, e)]
    if not removed:
        return _Layout()
    kinds = {kind for kind, _, _, _ in top}
    if b"moof" in kinds or b"meta" in kinds:
        raise BindingError(
            "C2PA box in a fragmented or item-based BMFF file: offsets cannot be restored"
        )
    gone = {start for start, _ in removed}  # (a list took O(boxes x removed))
    kept = [(s, e) for kind, s, p, e in top if s not in gone]
    moov = {s: p - s for kind, s, p, e in top if kind == b"moov" and s not in gone}
    kept.append((top[-1][3], len(data)))
    return _Layout(tuple(kept), tuple(removed), moov)


def _unshift_chunk_offsets(
    buf: bytearray, start: int, end: int, removed: list[tuple[int, int]]
) -> None:
    """Rewrite stco/co64 entries inside buf[start:end] (a moov payload) in place."""
    _rewrite_chunk_offsets(buf, start, end, _OriginalOffsets(removed))


def _rewrite_chunk_offsets(
    buf: bytearray, start: int, end: int, original: _OriginalOffsets, depth: int = 1
) -> None:
    if depth > MAX_BMFF_DEPTH:
        raise MediaError(f"BMFF boxes nested more than {MAX_BMFF_DEPTH} deep: not walked")
    for kind, s, p, e in _boxes(buf, start, end, strict=True):
        if kind in _BMFF_CONTAINERS:
            _rewrite_chunk_offsets(buf, p, e, original, depth + 1)
        elif kind in (b"stco", b"co64"):
            fmt, width = (">I", 4) if kind == b"stco" else (">Q", 8)
            if p + 8 > e:
                raise MediaError(f"BMFF {kind!r} box at byte {s} is truncated")
            count = struct.unpack_from(">I", buf, p + 4)[0]
            if p + 8 + count * width > e:
                raise MediaError(f"BMFF {kind!r} table at byte {s} overruns its box")
            for i in range(count):
                at = p + 8 + i * width
                offset = struct.unpack_from(fmt, buf, at)[0]
                struct.pack_into(fmt, buf, at, original(offset))


class _OriginalOffsets:
    """Maps a file offset in the embedded file back to the file before embedding, given
    the removed boxes, (start, size) in file order: a binary search, so a file of many
    boxes and many chunk offsets costs O(offsets x log boxes). (A walk over every box
    for each offset took 22 s of CPU for 20,000 of each.)"""

    def __init__(self, removed: list[tuple[int, int]]) -> None:
        self._starts = [start for start, _ in removed]
        self._ends = [start + size for start, size in removed]
        self._shifts = list(itertools.accumulate(size for _, size in removed))

    def __call__(self, offset: int) -> int:
        """``offset`` less the sizes of the boxes before it; raises BindingError when it
        points into one of them."""
        i = bisect.bisect_right(self._starts, offset) - 1
        if i < 0:
            return offset
        if offset < self._ends[i]:
            raise BindingError(f"a chunk offset ({offset}) points into the C2PA box")
        return offset - self._shifts[i]
