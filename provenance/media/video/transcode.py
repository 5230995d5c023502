"""Re-encode a video with PyAV: resize, trim, change codec or container, set a rotation.

Makes the derived copies that the demo and the tests verify (a transcoded, resized or
trimmed clip of a signed capture). Runs FFmpeg in-process, so use it on trusted input only;
untrusted files go through `provenance.media.video.decode`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from fractions import Fraction

import av
import av.error
import numpy as np

from provenance.core.errors import MediaError

# Output timestamps are in milliseconds.
_TIME_BASE = Fraction(1, 1000)


def transcode(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    width: int | None = None,
    height: int | None = None,
    start_s: float = 0.0,
    end_s: float | None = None,
    crf: int = 28,
    codec: str = "libx264",
    container_format: str | None = None,
    rotation: int = 0,
    encoder_options: Mapping[str, str] | None = None,
    frame_rate: float | None = None,
) -> int:
    """Re-encode the first video stream of src into dst; returns the number of frames written.

    width, height: output size in pixels (both even; None keeps the source size); start_s,
    end_s: keep frames presented in [start_s, end_s) seconds, shifted to start at 0;
    crf: x264/x265/VP9 constant rate factor (higher is smaller); codec: an FFmpeg encoder
    ("libx264", "libvpx-vp9", ...); container_format: FFmpeg muxer name (None: from dst's
    extension); rotation: counter-clockwise degrees (0, 90, 180, 270) written as the display
    matrix, with the pixels stored turned the other way so the video displays as the source;
    encoder_options: more FFmpeg encoder options, e.g. {"preset": "ultrafast"} for x264;
    frame_rate: convert to this constant rate in frames per second by keeping, for each
    output instant k / frame_rate, the first source frame presented at or after it (frames
    are dropped or repeated, never blended, as FFmpeg's fps filter does); None keeps every
    frame.
    Otherwise frame presentation times are kept (millisecond precision), so a variable
    frame rate survives. Raises MediaError if src cannot be decoded or dst cannot be written.
    """
    if rotation % 90:
        raise MediaError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    turns = (rotation // 90) % 4
    try:
        with (
            av.open(os.fspath(src)) as inp,
            av.open(os.fspath(dst), "w", format=container_format) as out,
        ):
            source = inp.streams.video[0]
            source.thread_type = "AUTO"
            rate = (
                Fraction(frame_rate).limit_denominator(1001)
                if frame_rate
                else source.average_rate or Fraction(30)
            )
            options = {"crf": str(crf), **(encoder_options or {})}
            stream = out.add_stream(codec, rate=rate, options=options)
            if not isinstance(stream, av.VideoStream):
                raise MediaError(f"{codec!r} is not a video codec")
            out_w, out_h = width or source.width, height or source.height
            if turns % 2:
                out_w, out_h = out_h, out_w
            stream.width, stream.height, stream.pix_fmt = out_w, out_h, "yuv420p"
            stream.codec_context.time_base = _TIME_BASE
            if turns:
                stream.set_display_rotation(rotation % 360)
            written = 0
            next_slot = 0
            for frame in inp.decode(source):
                t = float(frame.time)
                if t < start_s or (end_s is not None and t >= end_s):
                    continue
                if frame_rate:
                    # This frame fills the output instants after the previous frame, up to
                    # and including its own presentation time.
                    last_slot = math.floor((t - start_s) * frame_rate + 1e-6)
                    times = [k / frame_rate for k in range(next_slot, last_slot + 1)]
                    next_slot = max(next_slot, last_slot + 1)
                else:
                    times = [t - start_s]
                if not times:
                    continue
                resized = frame.reformat(
                    width or source.width,
                    height or source.height,
                    "rgb24",
                    interpolation="AREA",
                    threads=1,
                )
                pixels: np.ndarray = resized.to_ndarray()
                if turns:
                    pixels = np.ascontiguousarray(np.rot90(pixels, k=-turns))
                for out_time in times:
                    image = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                    image.pts = round(out_time / _TIME_BASE)
                    image.time_base = _TIME_BASE
                    for packet in stream.encode(image):
                        out.mux(packet)
                    written += 1
            for packet in stream.encode():
                out.mux(packet)
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"cannot transcode {os.fspath(src)!r}: {e}") from e
    return written
