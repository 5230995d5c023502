"""Measuring one scan item: SHA-256, media type and perceptual hashes, never uploading.

Images are decoded within `provenance.media.assets.AssetLimits` and PDQ-hashed
(`provenance.media.assets.image_pdq`: `inspect_image`'s decode and hashes without its
objects); videos on disk get the PDQ hashes of frames sampled by the sandboxed decoder of
`provenance.media.video.decode` (one per second); videos inside archives, files that are
not media, corrupt media and images over the size limit are measured by SHA-256 alone, and
say why in ``note``. A video on disk is read twice (its SHA-256 here, its frames by the
decoder, which opens it by name): one that changed in between is refused
(FileChangedError), never measured as one file's SHA-256 with another's frames. Sidecars
(``FILE.prov`` that parse as one) are recognised so that they are not reported as unknown
files; empty files are reported as such and never looked up (every empty file has the same
SHA-256).

Files are opened with `clients.files.open_regular` (a FIFO or device never blocks or
streams without end) and every read is bounded by the size found by ``fstat`` on the
opened file and by the limits.

A batch's small folder files are read before any of them is decoded (`read_ahead`):
decoding and hashing right after each file's open and reads ran about 5-12% slower per
file on this machine (the system calls leave the decoder's caches cold), measured on the
bench's 160x120 JPEGs. For the same reason the batch's read-ahead photos are then decoded
and PDQ-hashed one after another (`decode_ahead`), before any of them is SHA-256 hashed,
sniffed for a manifest store or measured: decoding between those steps cost about 10-20 us
a file more (of about 400).
"""

from __future__ import annotations

import hashlib
import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import BinaryIO

from clients.files import NotRegularFileError, open_regular, still_holds, still_the_file
from clients.scan.sources import SIDECAR_SUFFIX, EntryItem, FileItem, HashedItem, Item
from provenance.c2pa.container import stored_content_sha256
from provenance.cli.files import open_regular_fd
from provenance.core.binding import PDQ_ALGORITHM, PerceptualHash, Sha256Stream, perceptual_hash
from provenance.core.errors import (
    ClaimError,
    FileChangedError,
    MediaError,
    MediaTooLargeError,
    StructureLimitError,
)
from provenance.core.files import file_identity
from provenance.media.assets import AssetLimits, image_pdq
from provenance.media.image import SNIFF_BYTES, sniff_media_type
from provenance.wire.sidecar import MAX_SIDECAR_BYTES, Sidecar, decode_sidecar


@dataclass(frozen=True)
class Measured:
    """What was measured on one item.

    sha256: 32 bytes; size: bytes; media_type: sniffed type or None; soft: PDQ hashes (one
    for an image, one per sampled frame for a video; empty otherwise); kind: "media"
    (perceptual hashes computed), "file" (SHA-256 only), "sidecar" (a provenance
    sidecar, not looked up) or "empty" (no bytes: not looked up); note: why perceptual
    hashing was not done; dihedral: an image's 8 PDQ hashes packed, 32 bytes each (its
    own, ``soft[0]``, then its 7 rotations and mirror images: `provenance.core.dihedral`),
    as a Lookup carries them (`clients.api.Query.pdq_dihedral`), of ``soft[0].quality``;
    video_turned: a video's frames' 7 rotations and mirror images packed, turn by turn
    (`clients.api.Query.video_turned`).
    """

    ref: str
    size: int
    sha256: bytes
    media_type: str | None
    soft: tuple[PerceptualHash, ...]
    kind: str
    note: str | None = None
    content_sha256: bytes = b""
    dihedral: bytes = b""
    video_turned: bytes = b""


def _content_sha256(data: bytes, media_type: str | None) -> bytes:
    """SHA-256 without the C2PA manifest store, when the file carries one (else b"")."""
    return stored_content_sha256(data, media_type)


def _is_image(media_type: str | None) -> bool:
    return media_type is not None and media_type.startswith("image/")


def _is_video(media_type: str | None) -> bool:
    return media_type is not None and media_type.startswith("video/")


_UNRECOGNISED = "not a recognised image or video format: looked up by SHA-256 only"

#: What the note of an image over this scan's own limits (pixels, bytes, decode budget)
#: adds after the limit: its pixels were not hashed, so a near copy of a signed capture
#: was not searched for, which `prov verify` (the file uploaded, the service's limits
#: perhaps higher) may find: it then reads DERIVED there, UNSIGNED here.
NO_NEAR_SEARCH = (
    "so no near copy of a signed capture was searched for; `prov verify` sends the file"
    " to the service, which may have been started with higher limits"
    " (`prov serve --max-megapixels`, `--max-image-mb`, `--decode-budget-mb`)"
)

#: What the note of an image past a limit on its structure adds after the limit
#: (`provenance.core.errors.StructureLimitError`: a PNG text chunk inflating past 1 MiB,
#: a JPEG of more than 100 scans, ...): a constant of this code, which every service
#: holds too and no flag moves, so `prov verify` is not offered (it is refused,
#: RESOURCE_EXHAUSTED, unless the file's bytes or sidecar are logged; before, the
#: note said NO_NEAR_SEARCH).
NO_NEAR_SEARCH_ANYWHERE = (
    "so no near copy of a signed capture was searched for (every service holds this limit"
    " too, whatever its flags)"
)

#: The note of an empty file's row.
EMPTY_NOTE = "empty file: nothing to look up"


def _sidecar(ref: str, data: bytes) -> Sidecar | None:
    if not ref.endswith(SIDECAR_SUFFIX) or len(data) > MAX_SIDECAR_BYTES:
        return None
    try:
        return decode_sidecar(data)
    except ClaimError:
        return None


_ARCHIVED_VIDEO = (
    "video inside an archive: frames not sampled (the frame decoder reads files only);"
    " looked up by SHA-256 only"
)


#: A photo's `image_pdq` answer from `decode_ahead`, or the exception it raised.
Decoded = tuple[list[bytes], int] | Exception


def decode_ahead(read: dict[str, bytes], limits: AssetLimits) -> dict[str, Decoded]:
    """`image_pdq` of each of ``read`` (`read_ahead`'s bytes by ref) that sniffs as an
    image, one after another, by ref: its hashes and quality, or the exception it raised
    (`measure` raises or handles it where it would have decoded the file itself). Files
    named as sidecars are left to `measure`, which checks for a sidecar before decoding."""
    out: dict[str, Decoded] = {}
    for ref, data in read.items():
        if ref.endswith(SIDECAR_SUFFIX) or not _is_image(sniff_media_type(data[:SNIFF_BYTES])):
            continue
        try:
            out[ref] = image_pdq(data, limits)
        except Exception as e:  # raised again by measure, as if it had decoded the file
            out[ref] = _without_locals(e)
    return out


def _without_locals(e: Exception) -> Exception:
    """``e`` with the local variables of its traceback's frames (and of the exceptions it
    was raised from or during) let go: a kept failure must not keep its decoder's images
    alive until the batch's measure reaches it (a batch of 256 damaged large photos). The
    tracebacks keep their lines, for the log."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        traceback.clear_frames(x.__traceback__)
        todo += [x.__cause__, x.__context__]
    return e


def _pdq(data: bytes, limits: AssetLimits, decoded: Decoded | None) -> tuple[list[bytes], int]:
    """``decoded`` (`decode_ahead`'s answer for ``data``; raised if an exception), or
    `image_pdq` of ``data`` when there is none."""
    if decoded is None:
        return image_pdq(data, limits)
    if isinstance(decoded, Exception):
        raise decoded
    return decoded


def _from_bytes(
    ref: str, data: bytes, limits: AssetLimits, decoded: Decoded | None = None
) -> Measured:
    sha = hashlib.sha256(data).digest()
    if not data:
        return Measured(ref, 0, sha, None, (), "empty", EMPTY_NOTE)
    media_type = sniff_media_type(data[:SNIFF_BYTES])
    if _sidecar(ref, data) is not None:
        return Measured(
            ref, len(data), sha, None, (), "sidecar", "a provenance sidecar: not looked up"
        )
    if _is_image(media_type):
        try:
            hashes, quality = _pdq(data, limits, decoded)
        except MediaError as e:
            over = ""
            if isinstance(e, StructureLimitError):  # every service holds it: no advice
                over = f", {NO_NEAR_SEARCH_ANYWHERE}"
            elif isinstance(e, MediaTooLargeError):
                over = f", {NO_NEAR_SEARCH}"
            return Measured(
                ref, len(data), sha, media_type, (), "file", f"{e}{over}: looked up by SHA-256 only"
            )
        return Measured(
            ref,
            len(data),
            sha,
            media_type,
            (perceptual_hash(PDQ_ALGORITHM, hashes[0], quality),),
            "media",
            None,
            _content_sha256(data, media_type),
            b"".join(hashes),
        )
    if _is_video(media_type):
        return Measured(
            ref,
            len(data),
            sha,
            media_type,
            (),
            "file",
            _ARCHIVED_VIDEO,
            _content_sha256(data, media_type),
        )
    return Measured(ref, len(data), sha, media_type, (), "file", _UNRECOGNISED)


def changed_while_scanned(path: str) -> str:
    """The error of a file that changed while it was read whole or hashed."""
    return (
        f"{os.path.basename(path)} changed while it was scanned (written to or replaced while"
        " it was read): scan it again once nothing writes it"
    )


def _sha256_of(f: BinaryIO, size: int) -> tuple[bytes, int]:
    """SHA-256 and length of the first ``size`` bytes of an open file, from its start."""
    f.seek(0)
    stream = Sha256Stream()
    while stream.size < size and (block := f.read(min(1 << 20, size - stream.size))):
        stream.update(block)
    return stream.digest(), stream.size


#: Folder files up to this size are read ahead of a batch's decoding, in bytes.
READ_AHEAD_FILE_BYTES = 1 << 20
#: Bytes read ahead for one batch at most.
READ_AHEAD_BATCH_BYTES = 16 << 20


def read_ahead(items: Iterable[Item], limits: AssetLimits) -> dict[str, bytes]:
    """The bytes of the folder files among ``items`` of at most READ_AHEAD_FILE_BYTES (and
    at most ``limits.max_image_bytes``) each, READ_AHEAD_BATCH_BYTES in all, by ref, for
    `measure`. A file that cannot be opened or read, or that changed while it was read,
    is left out (`measure` then reads it again, or reports why); the size is the one
    ``fstat`` gives on the opened file."""
    out: dict[str, bytes] = {}
    budget = READ_AHEAD_BATCH_BYTES
    largest = min(READ_AHEAD_FILE_BYTES, limits.max_image_bytes)
    for item in items:
        if not isinstance(item, FileItem) or not 0 < item.size <= min(largest, budget):
            continue
        try:
            data = _read_small(item.path, min(largest, budget))
        except (OSError, FileChangedError):  # measure reads it again, and says so
            continue
        if data is not None:
            out[item.ref] = data
            budget -= len(data)
    return out


def _read_small(path: str, largest: int) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of at most ``largest`` bytes (its
    size from ``fstat`` on the opened file), else None. Opened as `clients.files.
    open_regular` opens (`provenance.cli.files.open_regular_fd`: anything else is never
    opened for reading, a FIFO never waited on), and read with plain system calls: a file
    object costs more than reading a small file. Raises OSError, and
    FileChangedError when the file changed while it was read (`clients.files.
    still_holds`: the bytes may be a mix of old and new)."""
    try:
        fd, st = open_regular_fd(path, NotRegularFileError)
    except NotRegularFileError:
        return None
    try:
        if st.st_size > largest:
            return None
        parts, left = [], st.st_size
        while left > 0 and (block := os.read(fd, left)):
            parts.append(block)
            left -= len(block)
        data = b"".join(parts)
        if not still_holds(fd, st, data):
            raise FileChangedError(changed_while_scanned(path))
        return data
    finally:
        os.close(fd)


def measure(
    item: FileItem | EntryItem | HashedItem,
    limits: AssetLimits,
    data: bytes | None = None,
    decoded: Decoded | None = None,
) -> Measured:
    """Hash one item. ``data``: a folder file's bytes from `read_ahead` (then the file is
    not opened again, unless it is a video, whose frames the decoder reads from the file);
    ``decoded``: `decode_ahead`'s answer for those bytes (then they are not decoded again).
    Raises OSError if a file on disk cannot be read, `clients.files.NotRegularFileError`
    (a MediaError) if it is no longer a regular file and FileChangedError (a MediaError)
    if a video changed between the hash of its bytes and the hashes of its frames, or a
    file changed while it was read (an image or sidecar read whole: `clients.files.
    still_holds`; another file hashed in pieces: its identity, `provenance.core.files.
    file_identity`, without a second read), so that no row is of a mix of its old and
    new bytes."""
    if isinstance(item, EntryItem):
        return _from_bytes(item.ref, item.data, limits)
    if (
        isinstance(item, FileItem)
        and data is not None
        and not _is_video(sniff_media_type(data[:SNIFF_BYTES]))
    ):
        return _from_bytes(item.ref, data, limits, decoded)
    if isinstance(item, HashedItem):
        note = (
            _ARCHIVED_VIDEO
            if _is_video(item.media_type)
            else (f"{item.size}-byte entry over the in-memory limit: looked up by SHA-256 only")
        )
        return Measured(item.ref, item.size, item.sha256, item.media_type, (), "file", note)
    with open_regular(item.path) as f:
        before = os.fstat(f.fileno())
        size = before.st_size
        head = f.read(SNIFF_BYTES)
        media_type = sniff_media_type(head)
        small_sidecar = item.path.endswith(SIDECAR_SUFFIX) and size <= MAX_SIDECAR_BYTES
        if size == 0 or small_sidecar or (_is_image(media_type) and size <= limits.max_image_bytes):
            f.seek(0)
            data = f.read(size)
            if not still_holds(f.fileno(), before, data):
                raise FileChangedError(changed_while_scanned(item.path))
            return _from_bytes(item.ref, data, limits)
        sha, size = _sha256_of(f, size)
        if _is_video(media_type):
            hashed = Measured(item.ref, size, sha, media_type, (), "file")
            return _video(item, f, before, hashed, limits)
        if file_identity(os.fstat(f.fileno())) != file_identity(before):
            raise FileChangedError(changed_while_scanned(item.path))
    if _is_image(media_type):
        note = (
            f"image of {size} bytes is over the {limits.max_image_bytes}-byte limit,"
            f" {NO_NEAR_SEARCH}: looked up by SHA-256 only"
        )
        return Measured(item.ref, size, sha, media_type, (), "file", note)
    return Measured(item.ref, size, sha, media_type, (), "file", _UNRECOGNISED)


def _video(
    item: FileItem, f: BinaryIO, before: os.stat_result, hashed: Measured, limits: AssetLimits
) -> Measured:
    """A video file's measure: ``hashed`` (its SHA-256 and size, through ``f``, opened
    when ``fstat`` gave ``before``) with the PDQ hashes of its frames, which the decoder
    reads by name (`provenance.media.video.decode.sample_frames`), and its SHA-256
    without a C2PA manifest store when it is at most ``limits.max_image_bytes``. Raises
    FileChangedError when ``item.path`` no longer names the same bytes once the frames
    are hashed (`clients.files.still_the_file`: renamed over, appended to or written to
    between the two reads), so that no row pairs one file's SHA-256 with another's frames;
    OSError as reading ``f`` raises it."""
    content = b""
    if hashed.size <= limits.max_image_bytes:
        f.seek(0)
        content = _content_sha256(f.read(hashed.size), hashed.media_type)
    # imported here: PyAV and the decoder's sandbox cost a worker ~0.1-0.4 s to load,
    # which a folder of images never needs
    from provenance.media.video.decode import sample_frames, video_turns

    try:
        info = sample_frames(item.path, dihedral=True)
    except MediaError as e:
        measured = replace(hashed, note=f"{e}: looked up by SHA-256 only")
    else:
        soft = tuple(fr.pdq for fr in info.frames)
        measured = replace(
            hashed,
            media_type=info.media_type,
            soft=soft,
            kind="media",
            content_sha256=content,
            video_turned=b"".join(h.hash for h in video_turns(info)),
        )
    if not still_the_file(item.path, f, before, hashed.sha256):
        raise FileChangedError(
            f"{os.path.basename(item.path)} changed while it was scanned (replaced or written to"
            " between the hash of its bytes and the hashes of its frames): scan it again"
            " once nothing writes it"
        )
    return measured
