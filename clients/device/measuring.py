"""What a claim says of a file: `measure` reads an image or video once, bounded, and
gives the claim fields (hard and soft bindings, size, duration) it is signed with."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO, NotRequired, TypedDict

from clients.files import open_regular, still_holds, still_the_file
from provenance.core.binding import PerceptualHash
from provenance.core.claims import (
    MAX_CLAIM_SOFT_BINDINGS,
    MAX_SOFT_BINDINGS,
    MAX_VIDEO_SECONDS,
    HardBinding,
)
from provenance.core.errors import BindingError, FileChangedError, MediaError, MediaTooLargeError
from provenance.core.video_binding import DEFAULT_VIDEO_CHUNK, hash_file
from provenance.media.assets import AssetLimits, check_size, inspect_image, media_type_of
from provenance.media.video.decode import DEFAULT_RATE_HZ, sample_frames


class ClaimFields(TypedDict):
    """The `Claim` fields `measure` fills from a file (keyword arguments of `Claim`)."""

    media_type: str
    size_bytes: int
    hard_binding: HardBinding
    soft_bindings: tuple[PerceptualHash, ...]
    width: int
    height: int
    orientation: NotRequired[int]
    duration_seconds: NotRequired[float]
    frame_sample_rate: NotRequired[float]


def measure(
    path: Path, limits: AssetLimits = AssetLimits()
) -> tuple[ClaimFields, tuple[bytes, ...]]:
    """The claim fields that describe ``path`` (media type, size, hard and soft bindings,
    pixel dimensions, an image's EXIF orientation tag, duration) and, for video, the
    per-chunk leaf hashes for the sidecar.

    Images: SHA-256 and one PDQ hash. Video: SHA-256 and an RFC 9162 Merkle root over
    1 MiB chunks, streamed; PDQ hashes of frames sampled at 1 Hz in a sandboxed decoder
    (at 1/k Hz for a video of more than `MAX_CLAIM_SOFT_BINDINGS` seconds, so that the
    claim carries at most that many).
    Sizes are checked before anything is read: an image over ``limits.max_image_bytes``
    is refused from its size and first bytes, never read whole. FIFOs, devices and
    sockets are refused without blocking (`clients.files.open_regular`).
    Raises MediaError for empty, unknown, corrupt, special or oversized files, and
    FileChangedError (one) for an image written to or replaced while it was read
    (`clients.files.still_holds`), whose bytes may be a mix of its old and new ones.
    """
    try:
        with open_regular(path) as f:
            before = os.fstat(f.fileno())
            size = before.st_size
            check_size(size, limits)
            head = f.read(64)
            media_type = media_type_of(head)
            if media_type.startswith("video/"):
                return _measure_video(path, f, media_type)
            if not media_type.startswith("image/"):
                raise MediaError(f"{path.name}: signing {media_type} files is not supported")
            if size > limits.max_image_bytes:
                raise MediaTooLargeError(
                    f"{path.name}: image is {size} bytes; the limit for images is"
                    f" {limits.max_image_bytes} bytes"
                )
            f.seek(0)
            data = f.read(limits.max_image_bytes + 1)
            if len(data) == size and not still_holds(f.fileno(), before, data):
                raise FileChangedError(
                    f"{path.name} changed while it was being signed (written to or replaced"
                    " while it was read); nothing was signed: sign it again once nothing"
                    " writes it"
                )
    except OSError as e:
        raise MediaError(f"cannot read {path}: {e.strerror or e}") from e
    if len(data) != size:
        raise MediaError(f"{path.name} changed while it was read ({size} then {len(data)} bytes)")
    sha = hashlib.sha256(data).digest()
    asset = inspect_image(sha, data, limits)
    fields: ClaimFields = {
        "media_type": asset.facts.media_type,
        "size_bytes": size,
        "hard_binding": HardBinding(sha256=sha),
        "soft_bindings": (asset.soft,),
        "width": asset.width,
        "height": asset.height,
        "orientation": asset.orientation,
    }
    return fields, ()


def _still_the_hashed_bytes(path: Path, f: BinaryIO, before: os.stat_result, sha256: bytes) -> None:
    """Check, once a video's frames were hashed, that they came from the bytes its hard
    binding hashes: the decoder opens ``path`` by name after ``f`` was hashed, so a file
    replaced (renamed over) or written to in between would give a claim whose frame hashes
    are not of the signed bytes. ``path`` must still name the file ``f`` opened, as
    ``before`` (``fstat`` of ``f`` before hashing) found it, and ``f`` must still hold the
    bytes of SHA-256 ``sha256`` (`clients.files.still_the_file`). The second hash catches
    an in-place write of the same size within one tick of the timestamps (a clock tick on
    kernels before 6.13, two seconds on FAT), which the identity alone cannot see; it
    cost 1.5-5.6 ms of a 1.0-1.6 s signature of a 2.2 MB 720p clip, 70-79 ms (5%) of one
    of 64 MiB that is mostly bytes the decoder skips (bench/bench_sign_video.py).
    Decoding from ``f`` instead would need the descriptor passed to the sandboxed decoder
    and would still miss in-place writes.
    Raises FileChangedError "FILE changed while it was being signed; nothing was signed";
    OSError as reading raises it."""
    if not still_the_file(path, f, before, sha256):
        raise FileChangedError(
            f"{path.name} changed while it was being signed (replaced or written to between"
            " the hash of its bytes and the hashes of its frames); nothing was signed: sign"
            " it again once nothing writes it"
        )


def _measure_video(
    path: Path, f: BinaryIO, media_type: str
) -> tuple[ClaimFields, tuple[bytes, ...]]:
    before = os.fstat(f.fileno())
    f.seek(0)
    try:
        digest = hash_file(f, DEFAULT_VIDEO_CHUNK)
    except BindingError as e:  # it changed while it was read
        raise MediaError(f"{path.name}: {e}") from e
    info = sample_frames(path, rate_hz=DEFAULT_RATE_HZ, max_frames=MAX_SOFT_BINDINGS)
    _still_the_hashed_bytes(path, f, before, digest.sha256)
    if info.duration_seconds > MAX_VIDEO_SECONDS:  # frame times end before the duration
        raise MediaTooLargeError(
            f"{path.name}: its frames span {info.duration_seconds:,.0f} s; a claim describes"
            f" a video of at most {MAX_VIDEO_SECONDS:,} s (one day) and the log refuses"
            " frame times past it: cut it into shorter parts to sign them"
        )
    # a claim carries at most MAX_CLAIM_SOFT_BINDINGS frames (its log entry must fit a
    # tlog-tiles entry bundle): of a longer video, every k-th sample, the samples of rate/k
    # (slot j of rate/k starts where slot j*k of the rate does)
    every = max(1, -(-len(info.frames) // MAX_CLAIM_SOFT_BINDINGS))
    fields: ClaimFields = {
        "media_type": info.media_type or media_type,
        "size_bytes": digest.size,
        "hard_binding": digest.hard_binding(),
        "soft_bindings": tuple(fr.pdq for fr in info.frames[::every]),
        "width": info.width,
        "height": info.height,
        "duration_seconds": info.duration_seconds,
        "frame_sample_rate": info.rate_hz / every,
    }
    return fields, digest.chunk_hashes
