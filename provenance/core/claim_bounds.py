"""The bounds of a claim's bindings at submission (`provenance.core.registry.check_claim_shape`):
a hard binding the verifier could never match, and soft-binding numbers no capture has, are
refused before they reach the log. Entries already logged are never checked against these
rules again: they read, audit and verify as they did.

A hard binding is a 32-byte SHA-256 and either nothing more (an image) or all three chunk
fields of a video (`provenance.core.video_binding`): a chunk size the verifier hashes with
(1..`MAX_VIDEO_CHUNK` bytes), a 32-byte RFC 9162 chunk Merkle root, and exactly
ceil(size_bytes / chunk_size) chunks, what `video_binding.check_chunk_hashes` demands of a
sidecar's list. A video's duration and frame times are finite, at least 0 and at most
`MAX_VIDEO_SECONDS`, the frame times in order (none before the one listed ahead of it)
and none past the duration (an image's duration is 0, and so is its soft binding's
time); its frame sample rate 0 (none stated) or within
1 / `MAX_VIDEO_SECONDS`..`MAX_FRAME_SAMPLE_RATE` frames a second.

A claim's width, height and their product (its pixels) are at most what the decoders
accept: `MAX_VIDEO_FRAME_PIXELS` for a video, `MAX_IMAGE_PIXELS` for anything else, so
that a capture `prov sign` measured is never refused and a claim no decoder could have
measured is (the wire carries each side as a 32-bit number: 4,294,967,295 pixels).
"""

from __future__ import annotations

import math

from provenance.core.binding import PDQ_ALGORITHM
from provenance.core.claims import MAX_VIDEO_SECONDS, Claim
from provenance.core.errors import ClaimError
from provenance.core.merkle import HASH_SIZE
from provenance.core.video_binding import MAX_VIDEO_CHUNK

#: Most frames a second a video's soft bindings may be sampled at (`Claim.frame_sample_rate`):
#: `prov sign` samples at 1 Hz or less.
MAX_FRAME_SAMPLE_RATE = 1000.0
_MIN_FRAME_SAMPLE_RATE = 1 / MAX_VIDEO_SECONDS
#: Most pixels of an image a claim describes (its width, its height, and width x height):
#: the most the image decoder accepts, Pillow's hard limit (twice its
#: ``Image.MAX_IMAGE_PIXELS`` of 89,478,485), over which it refuses to open a file;
#: `prov sign` and `prov serve` decode at most 100 megapixels by default. Also the bound of
#: a claim of any other media type than video.
MAX_IMAGE_PIXELS = 178_956_970
#: Most pixels of a video frame a claim describes (its width, height, and width x height):
#: the most the video decoder accepts (`provenance.media.video.frames.MAX_FRAME_PIXELS`),
#: 8K UHD, 7680x4320.
MAX_VIDEO_FRAME_PIXELS = 7680 * 4320


def check_hard_binding(claim: Claim) -> None:
    """Raises ClaimError, naming the field, its value and the rule, unless the claim's hard
    binding is unchunked (chunk size, count and root all zero or empty) or chunked in a
    shape the verifier can match (see the module's docstring). The sha256 length and the
    64-bit range of the count are checked before (`registry.check_claim_shape`)."""
    hb = claim.hard_binding
    if not (hb.chunk_size or hb.chunk_count or hb.chunk_merkle_root):
        return
    if not 1 <= hb.chunk_size <= MAX_VIDEO_CHUNK:
        raise ClaimError(
            f"the claim's hard_binding.chunk_size is {hb.chunk_size:,}; a chunked hard"
            f" binding cuts the file in chunks of 1..{MAX_VIDEO_CHUNK:,} bytes (and one that"
            " is not chunked states no chunk_count and no chunk_merkle_root:"
            f" {hb.chunk_count:,} and {len(hb.chunk_merkle_root)} bytes here)"
        )
    if len(hb.chunk_merkle_root) != HASH_SIZE:
        raise ClaimError(
            f"the claim's hard_binding.chunk_merkle_root is {len(hb.chunk_merkle_root)} bytes;"
            f" a chunked hard binding's root is a {HASH_SIZE}-byte RFC 9162 Merkle tree hash"
        )
    want = -(-claim.size_bytes // hb.chunk_size)
    if hb.chunk_count != want:
        raise ClaimError(
            f"the claim's hard_binding.chunk_count is {hb.chunk_count}; a file of"
            f" {claim.size_bytes:,} bytes (size_bytes) in chunks of {hb.chunk_size:,} bytes"
            f" has ceil(size_bytes / chunk_size) = {want:,} of them"
        )


def check_pixels(claim: Claim) -> None:
    """Raises ClaimError, naming the field, its value and the limit, unless the claim's
    width, height and width x height are each at most `MAX_VIDEO_FRAME_PIXELS` (a video
    claim: its media type is video/...) or `MAX_IMAGE_PIXELS` (any other)."""
    if claim.media_type.startswith("video/"):
        most, kind = MAX_VIDEO_FRAME_PIXELS, "a video"
        why = "the largest frame the video decoder accepts (8K UHD, 7680x4320)"
    else:
        most, kind = (
            MAX_IMAGE_PIXELS,
            "an image" if claim.media_type.startswith("image/") else "a file",
        )
        why = "the largest image the image decoder accepts"
    for name, value in (
        ("width", claim.width),
        ("height", claim.height),
        ("width x height", claim.width * claim.height),
    ):
        if value > most:
            shown = f"{claim.width:,} x {claim.height:,} = " if name == "width x height" else ""
            raise ClaimError(
                f"the claim's {name} is {shown}{value:,} pixels; for {kind}"
                f" ({claim.media_type}) the width, the height and width x height are each at"
                f" most {most:,} pixels, {why}"
            )


def check_video_numbers(claim: Claim) -> None:
    """Raises ClaimError, naming the field, its value and the rule, unless the claim's
    duration and every soft binding's frame time are finite, at least 0 and at most
    `MAX_VIDEO_SECONDS`, the frame times are in order and none is past the duration, and
    its frame sample rate is 0 or within 1 / `MAX_VIDEO_SECONDS`..`MAX_FRAME_SAMPLE_RATE`."""
    _check_seconds("duration_seconds", claim.duration_seconds)
    times = [h.timestamp_seconds for h in claim.soft_bindings]
    # the min, max and sum of a list (the sum catches a NaN that min and max pass over):
    # 44 us for 1,000 frames, where a loop comparing each took 84 (measured 5 December)
    if times and not (
        0 <= min(times) and max(times) <= MAX_VIDEO_SECONDS and math.isfinite(sum(times))
    ):
        for i, t in enumerate(times):
            _check_seconds(f"soft_bindings[{i}].timestamp_seconds", t)
    if times and times != sorted(times):  # sorted: 8 us for 1,000 frames in order
        i = next(i for i in range(1, len(times)) if times[i] < times[i - 1])
        raise ClaimError(
            f"the claim's soft_bindings[{i}].timestamp_seconds is {times[i]:g}, before"
            f" soft_bindings[{i - 1}]'s {times[i - 1]:g}: a video's sampled frames are listed"
            " in order of their times"
        )
    if times and times[-1] > claim.duration_seconds:
        i = next(i for i, t in enumerate(times) if t > claim.duration_seconds)
        raise ClaimError(
            f"the claim's soft_bindings[{i}].timestamp_seconds is {times[i]:g} s, past its"
            f" duration_seconds of {claim.duration_seconds:g} s: a sampled frame lies within"
            " the video (an image's duration and its soft binding's time are 0)"
        )
    rate = claim.frame_sample_rate
    if rate and not _MIN_FRAME_SAMPLE_RATE <= rate <= MAX_FRAME_SAMPLE_RATE:  # NaN as well
        raise ClaimError(
            f"the claim's frame_sample_rate is {rate:g}; it is 0 (none stated) or"
            f" {_MIN_FRAME_SAMPLE_RATE:.3g}..{MAX_FRAME_SAMPLE_RATE:g} frames a second (at"
            f" least one frame in the longest video a claim describes,"
            f" {MAX_VIDEO_SECONDS:,} s)"
        )


def _check_seconds(name: str, value: float) -> None:
    if not (math.isfinite(value) and 0 <= value <= MAX_VIDEO_SECONDS):
        raise ClaimError(
            f"the claim's {name} is {value:g}; a time in a video is a finite number of"
            f" seconds from 0 to {MAX_VIDEO_SECONDS:,} (one day, the longest video a claim"
            " describes)"
        )


def missing_fields(claim: Claim) -> list[str]:
    """The fields DESIGN.md ("The signed claim") says a claim of its media type carries and
    ``claim`` leaves out (zero or empty), in the order of the design's list: ``size_bytes``
    of any claim; ``width``, ``height`` and ``soft_bindings (a PDQ hash)`` of an image
    (image/...); ``duration_seconds`` and ``soft_bindings (PDQ hashes of sampled frames)``
    of a video (video/...). Empty when it states them all. What `prov sign` measures
    (`clients.device.measuring.measure`) always states them."""
    missing = [] if claim.size_bytes > 0 else ["size_bytes"]
    pdq = any(h.algorithm == PDQ_ALGORITHM for h in claim.soft_bindings)
    if claim.media_type.startswith("image/"):
        missing += [
            name for name, v in (("width", claim.width), ("height", claim.height)) if v <= 0
        ]
        if not pdq:
            missing.append("soft_bindings (a PDQ hash)")
    elif claim.media_type.startswith("video/"):
        if not claim.duration_seconds > 0:
            missing.append("duration_seconds")
        if not pdq:
            missing.append("soft_bindings (PDQ hashes of sampled frames)")
    return missing


def missing_fields_text(missing: list[str]) -> str:
    """``missing`` (from `missing_fields`, not empty) as words: "width, height and
    soft_bindings (a PDQ hash)"."""
    return missing[0] if len(missing) == 1 else ", ".join(missing[:-1]) + " and " + missing[-1]


def check_required_fields(claim: Claim) -> None:
    """Raises ClaimError, naming the fields, unless the claim states every field DESIGN.md
    gives a claim of its media type (`missing_fields`). Only a new submission is held to
    it: an entry an older server logged without them still verifies, with a note
    (`provenance.core.verify`)."""
    missing = missing_fields(claim)
    if not missing:
        return
    what = (
        "an image's claim states its size_bytes, its width and height in pixels and a PDQ"
        " hash of its pixels (soft_bindings)"
        if claim.media_type.startswith("image/")
        else "a video's claim states its size_bytes, its duration_seconds and PDQ hashes of"
        " sampled frames (soft_bindings)"
        if claim.media_type.startswith("video/")
        else "a claim states the size_bytes of its file"
    )
    verb = "is" if len(missing) == 1 else "are"
    raise ClaimError(
        f"the claim's {missing_fields_text(missing)} {verb} missing (0 or empty) in a claim of"
        f' {claim.media_type}: {what} (DESIGN.md, "The signed claim"); `prov sign` measures'
        " them from the file"
    )


def video_fields(claim: Claim) -> list[str]:
    """The fields of a video's claim (DESIGN.md, "The signed claim": a video's duration,
    the PDQ hashes of sampled frames, a Merkle root over fixed-size chunks) that an
    image's claim (image/...) ``claim`` states, each with its value in words: a
    ``duration_seconds`` or ``frame_sample_rate`` other than 0, more than one PDQ hash in
    ``soft_bindings`` (an image has one, of its pixels), a chunked ``hard_binding``.
    Empty for a claim of another media type, and for what `prov sign` measures of an
    image (`clients.device.measuring.measure`)."""
    if not claim.media_type.startswith("image/"):
        return []
    stated = []
    if claim.duration_seconds:
        stated.append(f"duration_seconds ({claim.duration_seconds:g} s)")
    if claim.frame_sample_rate:
        stated.append(f"frame_sample_rate ({claim.frame_sample_rate:g} frames a second)")
    pdq = sum(h.algorithm == PDQ_ALGORITHM for h in claim.soft_bindings)
    if pdq > 1:
        stated.append(f"soft_bindings ({pdq} PDQ hashes, as of a video's sampled frames)")
    hb = claim.hard_binding
    if hb.chunk_size or hb.chunk_count or hb.chunk_merkle_root:
        stated.append(
            f"hard_binding.chunk_size ({hb.chunk_size:,} bytes, with a chunk_count and a"
            " chunk_merkle_root: a chunked hard binding)"
        )
    return stated


def check_no_video_fields(claim: Claim) -> None:
    """Raises ClaimError, naming the fields and their values, when an image's claim
    states a video's fields (`video_fields`): it describes no image, and before, its
    frames' PDQ hashes all went to the near-duplicate index as one photo's. Only a new
    submission is held to it: an entry an older server logged with them still verifies
    (`provenance.core.verify` reads them as before)."""
    stated = video_fields(claim)
    if not stated:
        return
    verb = "is a video's field" if len(stated) == 1 else "are a video's fields"
    raise ClaimError(
        f"the claim's {missing_fields_text(stated)} {verb}, stated in a claim of"
        f" {claim.media_type}: an image's claim states no duration and no frame sample rate,"
        " one PDQ hash of its pixels and the SHA-256 of its bytes without chunks (DESIGN.md,"
        ' "The signed claim"); `prov sign` measures an image so; a video is signed as'
        " video/..."
    )
