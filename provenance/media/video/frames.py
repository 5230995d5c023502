"""In-process video decoding with PyAV (FFmpeg): sniff the container, sample frames by time,
apply the display matrix, hash each sampled frame with PDQ.

This module decodes untrusted bytes with FFmpeg in the calling process. Call it through
`provenance.media.video.decode.sample_frames`, which runs it in a child process under a time and
memory limit; only that module and benchmarks should import it directly.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import av
import av.error
import numpy as np
from av.sidedata.sidedata import Type as SideDataType
from av.video.reformatter import VideoReformatter

from provenance.core.binding import PDQ_ALGORITHM, PerceptualHash, pdq_hash
from provenance.core.claim_bounds import MAX_VIDEO_FRAME_PIXELS
from provenance.core.dihedral import pdq_dihedral_bytes
from provenance.core.errors import (
    DecodeBudgetError,
    DecoderMemoryError,
    MediaError,
    MediaTooLargeError,
)
from provenance.core.hash_threads import start_beside
from provenance.media.image import SNIFF_BYTES, sniff_media_type
from provenance.media.video.cut_short import cut_short

#: FFmpeg demuxer for each video media type that `provenance.media.image.sniff_media_type` names.
DEMUXERS = {
    "video/mp4": "mov",
    "video/quicktime": "mov",
    "video/webm": "matroska",
    "video/x-matroska": "matroska",
}

#: Video codecs we hand to FFmpeg; anything else is refused before decoding starts.
ALLOWED_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4"})
#: Largest frame accepted, in pixels (8K UHD): a claim describes no larger one
#: (`provenance.core.claim_bounds`).
MAX_FRAME_PIXELS = MAX_VIDEO_FRAME_PIXELS
#: Most pixels of sampled frames per video decode (samples x width x height): each
#: sample is converted to RGB, trimmed and PDQ-hashed at native size, 5-36 ns a pixel
#: here on top of its decoding, the most at 8K (bench/bench_video_budget.py): 144 s of
#: 4K or 9.6 minutes of 1080p at 1 Hz, 36 frames of 8K. A 263 KB file of 40 flat 8K
#: frames at 1 fps (1.33 billion) held a decode slot 11 s, and 1,000 of them would have
#: held it the whole 120 s time limit.
MAX_SAMPLED_PIXELS = 1_200_000_000
#: Most pixels of all decoded frames per video decode (frames x width x height): 2.8-17
#: ns a pixel of textured footage here, 1.0-1.5 of flat frames (bench/bench_video_budget.py):
#: 9.6 minutes of 1080p at 30 fps (the sampled budget's 1080p length) or 145 s of 4K,
#: about the most of either that decodes within the 120 s time limit here in a quiet
#: minute (more times out when the machine is loaded).
MAX_DECODED_PIXELS = 36_000_000_000
#: Least a decoded frame counts against MAX_DECODED_PIXELS, in pixels (a 256x256 frame):
#: decoding costs time per frame whatever its size, FFmpeg's and the decode loop's own
#: work, about 57 us a 16x16 frame here (a 20 MB MP4 of 1.5 million 16x16 frames at
#: 1,000 fps decoded in 86 s, 1% of the budget by its pixels). Counted so, the budget
#: covers 549,316 tiny frames, about 31 s of such work here; frames of 320x240 and up
#: count their own pixels, as before.
MIN_FRAME_COST_PIXELS = 256 * 256
#: Decoder threads; fixed so that the child's address space is predictable.
DECODER_THREADS = 2

#: A border row or column is a black bar when no channel of any of its pixels exceeds
#: this level (of 255); compression noise in a black bar stays well below it.
BAR_LEVEL = 24
#: Bars are trimmed only if at least this share of each dimension remains.
BAR_MIN_KEEP = 0.5

# Time comparisons of sample slots allow this much rounding error, in seconds.
_TIME_EPSILON = 1e-6


def sniff_container(head: bytes) -> tuple[str, str]:
    """Identify a video container from the first bytes of a file (64 are enough).

    Returns (FFmpeg demuxer name, media type): ("mov", "video/mp4" or "video/quicktime") or
    ("matroska", "video/webm" or "video/x-matroska"). Raises MediaError for anything else,
    so FFmpeg never probes other formats with untrusted bytes.
    """
    media_type = sniff_media_type(head)
    if media_type not in DEMUXERS:
        found = f"it looks like {media_type}" if media_type else "its format is not recognised"
        raise MediaError(f"not an MP4, MOV, WebM or Matroska video: {found}")
    return DEMUXERS[media_type], media_type


@dataclass(frozen=True)
class DecodedFrame:
    """One sampled frame: its PDQ hash (timestamp set) and, if asked for, its pixels.

    rgb: (H, W, 3) uint8 display-oriented pixels, or None when not kept; turned: the PDQ
    hashes of the frame's 7 other rotations and mirror images in
    `provenance.core.dihedral.TRANSFORMS` order (same timestamp), when asked for, else ().
    """

    pdq: PerceptualHash
    rgb: np.ndarray | None
    turned: tuple[PerceptualHash, ...] = ()


@dataclass(frozen=True)
class StreamFacts:
    """What the decoder learned about the stream once it is exhausted.

    width, height: display size in pixels (after rotation); rotation: counter-clockwise
    degrees of the display matrix, one of 0, 90, 180, 270; duration_seconds: from the
    first frame's presentation time to the end of the last frame; frames_decoded: count of
    all decoded frames, sampled or not; decode_error: FFmpeg's message when a decoding error
    (a truncated or damaged stream) ended decoding early, "" when it decoded to the end;
    damaged_frames: decoded frames the decoder marked corrupt (AV_FRAME_FLAG_CORRUPT: it
    concealed damage in them), sampled or not.
    """

    width: int
    height: int
    rotation: int
    duration_seconds: float
    frames_decoded: int
    decode_error: str = ""
    damaged_frames: int = 0


def display_transform(matrix: np.ndarray) -> tuple[bool, bool, bool]:
    """Reduce an FFmpeg display matrix to (transpose, flip_rows, flip_columns).

    matrix: (9,) int32 in FFmpeg's AV_PKT_DATA_DISPLAYMATRIX layout (16.16 fixed point
    a, b, u, c, d, v, x, y, w; libavutil/display.h), mapping a source pixel (x, y) to
    display (a*x + c*y, b*x + d*y) in image coordinates (y down). Only the eight
    axis-aligned matrices (rotations by multiples of 90 degrees, optionally mirrored) are
    accepted; raises MediaError for any other, e.g. a 45-degree rotation or a scale.
    """
    a, b, c, d = (int(matrix[i]) for i in (0, 1, 3, 4))
    unit = 1 << 16
    if b == 0 and c == 0 and abs(a) == unit and abs(d) == unit:
        return False, d < 0, a < 0
    if a == 0 and d == 0 and abs(b) == unit and abs(c) == unit:
        # Transposed: display x comes from source y (scaled by c), display y from x (by b).
        return True, b < 0, c < 0
    raise MediaError(
        f"unsupported display matrix {[a, b, c, d]}: only multiples of 90 degrees are handled"
    )


def apply_display_transform(rgb: np.ndarray, transform: tuple[bool, bool, bool]) -> np.ndarray:
    """Return the (H', W', 3) display-oriented view of an (H, W, 3) frame."""
    transpose, flip_rows, flip_columns = transform
    out = rgb.transpose(1, 0, 2) if transpose else rgb
    if flip_rows:
        out = out[::-1]
    if flip_columns:
        out = out[:, ::-1]
    return out


def trim_bars(rgb: np.ndarray) -> np.ndarray:
    """Crop black letterbox / pillarbox bars from the borders of an (H, W, 3) uint8 frame.

    A border row or column is part of a bar when all its values are <= BAR_LEVEL. PDQ is not
    robust to padding (a pillarboxed copy of a clip is about 80 bits away from the
    original's frames), and re-posting with bars is a common derivation, so video frames
    are hashed without them. Returns a view; the frame unchanged when no bar is found or
    when trimming would keep less than BAR_MIN_KEEP of the height or width (a dark frame).
    """
    height, width = rgb.shape[:2]
    # A row (column) is lit when its largest value, over pixels and channels, exceeds
    # BAR_LEVEL. Reducing over the long contiguous axes first is about 40x faster than a
    # max over the 3-long channel axis and gives the same rows and columns.
    rows = np.flatnonzero(rgb.reshape(height, -1).max(axis=1) > BAR_LEVEL)
    cols = np.flatnonzero(rgb.max(axis=0).max(axis=1) > BAR_LEVEL)
    if rows.size == 0 or cols.size == 0:
        return rgb
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if bottom - top < BAR_MIN_KEEP * height or right - left < BAR_MIN_KEEP * width:
        return rgb
    return rgb[top:bottom, left:right]


def rotation_degrees(transform: tuple[bool, bool, bool]) -> int:
    """Counter-clockwise rotation of a display transform in degrees, 0/90/180/270, ignoring
    a mirror (a mirrored transform is reported by the rotation of its unmirrored part)."""
    transpose, flip_rows, flip_columns = transform
    if transpose:
        # Rotating by 90 CCW is transpose + flip rows; by 270 CCW, transpose + flip columns.
        return 90 if flip_rows else 270
    return 180 if flip_rows and flip_columns else 0


def _frame_transform(frame: av.VideoFrame) -> tuple[bool, bool, bool]:
    side = frame.side_data.get(SideDataType.DISPLAYMATRIX)  # type: ignore[call-overload]  # av types keys as str; the enum works
    if side is None:
        return False, False, False
    raw = bytes(memoryview(side))
    if len(raw) < 36:
        raise MediaError(f"display matrix side data is {len(raw)} bytes, expected 36")
    return display_transform(np.frombuffer(raw[:36], dtype="<i4"))


class _Converter:
    """Frame -> RGB conversion through one swscale context with one thread.

    (`VideoFrame.to_ndarray` makes a new context per frame, each starting its own pool of
    slice threads that outlive the call: hundreds of threads, and thread stacks that count
    against the sandbox's address-space limit.)
    """

    def __init__(self) -> None:
        self._reformatter = VideoReformatter()

    def rgb(self, frame: av.VideoFrame, max_side: int | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB of a frame, shrunk (area average) so its longer side is at
        most max_side pixels (None: native size)."""
        width, height = frame.width, frame.height
        interpolation = None
        if max_side is not None and max(width, height) > max_side:
            scale = max_side / max(width, height)
            width, height = max(1, round(width * scale)), max(1, round(height * scale))
            interpolation = "AREA"
        converted = self._reformatter.reformat(
            frame, width, height, "rgb24", interpolation=interpolation, threads=1
        )
        return converted.to_ndarray()


def iter_sampled_frames(
    path: str | os.PathLike[str],
    rate_hz: float,
    max_frames: int,
    keep_rgb_every: int = 0,
    max_rgb_frames: int = 0,
    rgb_max_side: int | None = None,
    strip_bars: bool = True,
    max_sampled_pixels: int = MAX_SAMPLED_PIXELS,
    max_decoded_pixels: int = MAX_DECODED_PIXELS,
    keep_rgb_spread: int = 0,
    decoder_threads: int = DECODER_THREADS,
    dihedral: bool = False,
) -> Iterator[DecodedFrame | StreamFacts]:
    """Decode the first video stream and yield a DecodedFrame per sample, then StreamFacts.

    Sampling follows presentation time, not frame index, so variable frame rate is handled:
    slot k covers [k / rate_hz, (k + 1) / rate_hz) seconds after the first frame, and the
    first frame presented in a slot is hashed (a slot with no frame, in a gap of a variable
    frame rate stream, is skipped). Times are relative to the first decoded frame.
    Every keep_rgb_every-th sample (0: none), at most max_rgb_frames of them, also carries
    its display-oriented RGB pixels, shrunk so the longer side is at most rgb_max_side
    (None: native size). strip_bars: hash each frame with its black bars cropped
    (`trim_bars`); False hashes whole frames, as the vPDQ reference does. Kept pixels are
    always whole frames. keep_rgb_spread (0: unused) replaces keep_rgb_every and
    max_rgb_frames when the sample count is not known before decoding: keep at most
    keep_rgb_spread frames, every ceil(s / keep_rgb_spread)-th sample where s is the
    samples the header declares (`declared_cost`), so a caller that wants every
    ceil(n / keep_rgb_spread)-th of the n samples taken gets them from this decode
    whenever the header is right (and can tell from which samples carry pixels).

    The decoding budget, in pixels: sampled frames x width x height at most
    max_sampled_pixels, all decoded frames x width x height at most max_decoded_pixels
    (each frame counted as at least MIN_FRAME_COST_PIXELS). It is checked before any frame is decoded against what the stream header declares
    (`declared_cost`: frame size, frame count, duration, ``rate_hz`` and ``max_frames``),
    and again while decoding, frame by frame, for a header that understates them.

    A decoding error after the first sample ends the stream early (StreamFacts.decode_error
    says why) so that a truncated copy still yields the frames before the damage.

    decoder_threads: FFmpeg's decoding threads (frame and slice threading). Frame threads
    decode an intact stream bit-exactly as one thread does, but conceal the damage of a
    damaged one differently from run to run; StreamFacts.damaged_frames says when that may
    have happened, and one thread conceals it the same way every time.

    dihedral: also hash each sample's 7 other rotations and mirror images
    (`DecodedFrame.turned`, one DCT for all 8), for a verifier to match a copy whose
    display matrix was dropped or whose pixels were turned; the plain hash is bit for bit
    the one computed without it (`provenance.core.pdq_core`), so a signer leaves it off.

    Raises MediaError for an unreadable or unsupported container, no video stream
    (audio-only), an unsupported codec or display matrix, a frame without a timestamp, a
    decoding error before the first sample, or a stream with no frames; MediaTooLargeError
    when a frame is over MAX_FRAME_PIXELS, more than max_frames samples would be taken, or
    FFmpeg runs out of memory; DecodeBudgetError (a MediaTooLargeError) over the decoding
    budget.
    """
    if not (math.isfinite(rate_hz) and rate_hz > 0):
        raise MediaError(f"rate_hz must be a positive number, got {rate_hz}")
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as e:
        raise MediaError(f"cannot read {os.fspath(path)!r}: {e.strerror or e}") from e
    demuxer, _ = sniff_container(head)
    try:
        try:
            container = av.open(os.fspath(path), format=demuxer, metadata_errors="ignore")
        except av.error.FFmpegError as e:
            raise _media_error(f"cannot open the {demuxer} container", e) from e
        with container:
            if not container.streams.video:
                raise MediaError("the file has no video stream (audio-only or empty container)")
            stream = _hashed_stream(container)
            codec = stream.codec_context.name
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = decoder_threads
            try:
                stream.codec_context.open()
            except av.error.FFmpegError as e:
                raise _media_error(f"cannot start the {codec} decoder", e) from e
            budget = _Budget(rate_hz, max_sampled_pixels, max_decoded_pixels)
            cost = declared_cost(stream, container, rate_hz, max_frames)
            if cost.width * cost.height > MAX_FRAME_PIXELS:
                # before the decoder allocates one: a few KB of stream can declare a huge frame
                raise _frame_too_large(
                    "its stream header declares frames of", cost.width, cost.height
                )
            budget.check_declared(cost)
            if keep_rgb_spread > 0:
                keep_rgb_every = max(1, -(-cost.samples // keep_rgb_spread))
                max_rgb_frames = keep_rgb_spread
            yield from _sample(
                stream,
                container,
                rate_hz,
                max_frames,
                keep_rgb_every,
                max_rgb_frames,
                rgb_max_side,
                strip_bars,
                budget,
                dihedral,
            )
    except MediaError as e:
        # a refusal before any frame of an MP4/MOV cut short says so (a subclass: a limit)
        note = cut_short(path) if demuxer == "mov" and type(e) is MediaError else ""
        if not note:
            raise
        raise MediaError(f"{e} ({note})") from e


def _hashed_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The video stream sampled: the first (the track a player shows), in a codec of
    ALLOWED_CODECS. Raises MediaError naming its codec otherwise, and the supported
    track behind it, not compared in its place: a signed video's frames hidden behind an
    MJPEG track of other pictures were verified as a copy of that video (DERIVED)
    although the file plays something else, while the first supported track was sampled."""
    allowed = ", ".join(sorted(ALLOWED_CODECS))
    first, *rest = container.streams.video
    codec = first.codec_context.name
    if codec in ALLOWED_CODECS:
        return first
    behind = [s.codec_context.name for s in rest if s.codec_context.name in ALLOWED_CODECS]
    also = (
        f"; its {behind[0]} track behind it is not compared in its place, as a player"
        " shows the first"
        if behind
        else ""
    )
    raise MediaError(
        f"unsupported video codec: its first video track is {codec} (supported: {allowed}){also}"
    )


@dataclass(frozen=True)
class DeclaredCost:
    """What a video stream's header declares, before any frame is decoded.

    width, height: coded frame size in pixels; frames: frame count (the MP4 sample
    table's; for a container without one, declared duration x average frame rate; 0 when
    neither is known); samples: the frames that sampling at the given rate would take at
    most (min of frames, the 1/rate slots the declared duration spans and max_frames; 0
    when unknown); estimated_from: (declared duration in seconds, average frame rate)
    when frames is that estimate, None when it is the sample table's count or unknown.
    """

    width: int
    height: int
    frames: int
    samples: int
    estimated_from: tuple[float, float] | None = None


def declared_cost(
    stream: av.video.stream.VideoStream,
    container: av.container.InputContainer,
    rate_hz: float,
    max_frames: int,
) -> DeclaredCost:
    """The `DeclaredCost` of an opened video stream sampled at ``rate_hz`` (Hz), at most
    ``max_frames`` samples. Only header fields are read (FFmpeg's stream and container
    duration, ``nb_frames``, average rate); nothing is decoded."""
    ctx = stream.codec_context
    duration = 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    duration = duration if math.isfinite(duration) and duration > 0 else 0.0
    frames = int(stream.frames or 0)
    estimated_from = None
    if not frames and duration and stream.average_rate:
        frames = math.floor(duration * float(stream.average_rate))
        estimated_from = (duration, float(stream.average_rate))
    slots = math.ceil(duration * rate_hz - _TIME_EPSILON) if duration else 0
    samples = min(n for n in (frames, slots, max_frames) if n) if frames or slots else 0
    return DeclaredCost(int(ctx.width or 0), int(ctx.height or 0), frames, samples, estimated_from)


class _Budget:
    """The decoding budget of one video: the header's declared cost checked up front,
    then the pixels actually decoded and sampled counted frame by frame."""

    def __init__(self, rate_hz: float, max_sampled: int, max_decoded: int) -> None:
        self.rate_hz = rate_hz
        self.max_sampled = max_sampled
        self.max_decoded = max_decoded
        self.sampled = self.decoded = 0
        self.samples = self.frames = 0

    def check_declared(self, cost: DeclaredCost) -> None:
        size = (cost.width, cost.height)
        pixels = cost.width * cost.height
        if cost.samples * pixels > self.max_sampled:
            what = f"its header declares {cost.samples:,} frames of {_size(size)} to sample"
            raise self._over(what, cost.samples * pixels, True, size)
        counted = max(pixels, MIN_FRAME_COST_PIXELS)
        if cost.frames * counted > self.max_decoded:
            what = f"its header declares {cost.frames:,} frames of {_size(size)}"
            if cost.estimated_from is not None:
                # no frame count in the header: the count is duration x rate, say both
                seconds, rate = cost.estimated_from
                what = (
                    f"its header declares a duration of {_long_duration(seconds)} at"
                    f" {rate:.3g} frames a second: {cost.frames:,} frames of {_size(size)}"
                )
            raise self._over(what, cost.frames * counted, False, size)

    def decoded_frame(self, width: int, height: int) -> None:
        self.frames += 1
        self.decoded += max(width * height, MIN_FRAME_COST_PIXELS)
        if self.decoded > self.max_decoded:
            what = f"its first {self.frames:,} frames"
            raise self._over(what, self.decoded, False, (width, height))

    def sampled_frame(self, width: int, height: int) -> None:
        self.samples += 1
        self.sampled += width * height
        if self.sampled > self.max_sampled:
            what = f"its first {self.samples:,} sampled frames"
            raise self._over(what, self.sampled, True, (width, height))

    def _over(
        self, what: str, pixels: int, sampled: bool, size: tuple[int, int]
    ) -> DecodeBudgetError:
        """The refusal: the limit, the file's figure, how much video of ``size`` (width,
        height) the budget covers, and what to do."""
        frame = max(1, size[0] * size[1])
        if sampled:
            limit = f"{self.max_sampled:,} pixels of frames sampled at {self.rate_hz:g} Hz"
            n = self.max_sampled // frame
            covers = (
                f"{n:,} frames sampled at {self.rate_hz:g} Hz"
                f" ({_duration(n / self.rate_hz)} of video)"
            )
            advice = "a clip of at most that length, or a copy at a smaller frame size, fits"
        else:
            limit = f"{self.max_decoded:,} pixels of decoded frames"
            if frame < MIN_FRAME_COST_PIXELS:
                what += (
                    f", each counted as {MIN_FRAME_COST_PIXELS:,} pixels, the least a frame counts"
                )
            n = self.max_decoded // max(frame, MIN_FRAME_COST_PIXELS)
            covers = f"{n:,} decoded frames ({_duration(n / 30)} at 30 frames a second)"
            advice = "a shorter clip, or a copy at a smaller frame size or frame rate, fits"
        return DecodeBudgetError(
            f"the video is over the decoding budget of {limit} per video"
            f" ({what}: {pixels:,} pixels); it would hold a decoder too long: at"
            f" {_size(size)} the budget covers {covers}; {advice}"
        )


def _frame_too_large(what: str, width: int, height: int) -> MediaTooLargeError:
    """The refusal of a frame over MAX_FRAME_PIXELS; ``what`` leads its size."""
    return MediaTooLargeError(
        f"{what} {width}x{height} ({width * height:,} pixels), over the limit of"
        f" {MAX_FRAME_PIXELS:,} pixels (7680x4320, 8K UHD); a copy at a smaller frame size fits"
    )


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _duration(seconds: float) -> str:
    """``seconds`` in words: "36 s", "9.6 minutes"."""
    return f"{seconds:.3g} s" if seconds < 120 else f"{seconds / 60:.1f} minutes"


def _long_duration(seconds: float) -> str:
    """A declared duration in words, seconds first: "1,000,000 s (11.6 days)"."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400.0), ("hours", 3600.0)):
        if seconds >= 2 * size:
            return f"{seconds:,.0f} s ({seconds / size:,.1f} {unit})"
    return f"{seconds:,.0f} s"


def _sample(
    stream: av.video.stream.VideoStream,
    container: av.container.InputContainer,
    rate_hz: float,
    max_frames: int,
    keep_rgb_every: int,
    max_rgb_frames: int,
    rgb_max_side: int | None,
    strip_bars: bool,
    budget: _Budget,
    dihedral: bool = False,
) -> Iterator[DecodedFrame | StreamFacts]:
    origin: float | None = None
    next_slot = 0.0
    end = 0.0
    decoded = sampled = kept = damaged = 0
    decode_error = ""
    transform = (False, False, False)
    size = (0, 0)
    converter = _Converter()
    pending: Callable[[], DecodedFrame] | None = None  # the previous sample, being hashed
    try:
        for frame in container.decode(stream):
            if frame.pts is None or frame.time is None:
                raise MediaError(f"frame {decoded} has no presentation timestamp")
            if frame.width * frame.height > MAX_FRAME_PIXELS:
                raise _frame_too_large("a decoded frame is", frame.width, frame.height)
            budget.decoded_frame(frame.width, frame.height)
            if origin is None:
                origin = float(frame.time)
            t = max(0.0, float(frame.time) - origin)
            frame_end = t + _frame_duration(frame, stream)
            end = max(end, frame_end)
            decoded += 1
            damaged += frame.is_corrupt
            if t + _TIME_EPSILON < next_slot:
                continue
            if sampled >= max_frames:
                raise MediaTooLargeError(
                    f"more than {max_frames} frames would be sampled at {rate_hz:g} Hz (a video"
                    f" longer than {max_frames / rate_hz:,.0f} s)"
                )
            budget.sampled_frame(frame.width, frame.height)
            transform = _frame_transform(frame)
            rgb = apply_display_transform(converter.rgb(frame), transform)
            size = (rgb.shape[1], rgb.shape[0])
            keep = keep_rgb_every > 0 and sampled % keep_rgb_every == 0 and kept < max_rgb_frames
            small = None
            if keep:
                small = (  # ``rgb`` is display-oriented already: turned once, not twice
                    apply_display_transform(converter.rgb(frame, rgb_max_side), transform)
                    if rgb_max_side
                    else rgb
                )
                small = np.ascontiguousarray(small)
                kept += 1
            hashed = trim_bars(rgb) if strip_bars else rgb
            # hashed on a helper thread while FFmpeg decodes the next frame; yielded in order
            job = start_beside(partial(_decoded, hashed, t, small, dihedral))
            if pending is not None:
                yield pending()
            pending = job
            sampled += 1
            next_slot = (math.floor(t * rate_hz + _TIME_EPSILON) + 1) / rate_hz
    except av.error.FFmpegError as e:
        if sampled == 0 or _out_of_memory(e):
            raise _media_error("the video stream cannot be decoded", e) from e
        decode_error = str(_media_error("decoding stopped early", e))
    if pending is not None:
        yield pending()
    if sampled == 0:
        raise MediaError("the video stream has no decodable frames")
    yield StreamFacts(
        width=size[0],
        height=size[1],
        rotation=rotation_degrees(transform),
        duration_seconds=end,
        frames_decoded=decoded,
        decode_error=decode_error,
        damaged_frames=damaged,
    )


def _decoded(
    hashed: np.ndarray, t: float, small: np.ndarray | None, dihedral: bool = False
) -> DecodedFrame:
    """The sample of a frame: PDQ of ``hashed`` at time ``t`` and the kept pixels, with
    the hashes of its 7 other dihedral transforms when ``dihedral``."""
    pixels = np.ascontiguousarray(hashed)
    if not dihedral:
        return DecodedFrame(pdq=pdq_hash(pixels, t), rgb=small)
    hashes, quality = pdq_dihedral_bytes(pixels)
    plain, *turned = (PerceptualHash(PDQ_ALGORITHM, h, quality, t) for h in hashes)
    return DecodedFrame(pdq=plain, rgb=small, turned=tuple(turned))


def _out_of_memory(e: av.error.FFmpegError) -> bool:
    # ENOMEM from an allocation, EAGAIN from a thread that could not be created: both are
    # what the sandbox's address-space limit looks like from inside FFmpeg.
    return e.errno in (errno.ENOMEM, errno.EAGAIN)


def _media_error(what: str, e: av.error.FFmpegError) -> MediaError:
    """FFmpeg's failure in our words: its one-line reason, without PyAV's errno, log
    excerpt or the temporary file's path."""
    reason = (getattr(e, "strerror", None) or "the decoder failed").rstrip(".")
    if _out_of_memory(e):
        return DecoderMemoryError(f"{what}: out of memory under the decoding limit ({reason})")
    return MediaError(f"{what}: {reason}")


def _frame_duration(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> float:
    if frame.duration and frame.time_base is not None:
        return float(frame.duration * frame.time_base)
    rate = stream.average_rate or stream.guessed_rate
    return float(1 / rate) if rate else 0.0
