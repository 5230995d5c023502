"""Re-encode a video with PyAV: resize, trim, change codec or container, set a rotation.

Makes the derived copies that the demo and the tests verify (a transcoded, resized or
trimmed clip of a signed capture). Runs FFmpeg in-process, so use it on trusted input only;
untrusted files go through `provenance.video.decode`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from fractions import Fraction

import av
import av.error
import numpy as np

from provenance.errors import MediaError

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
) -> int:
    """Re-encode the first video stream of src into dst; returns the number of frames written.

    width, height: output size in pixels (both even; None keeps the source size); start_s,
    end_s: keep frames presented in [start_s, end_s) seconds, shifted to start at 0;
    crf: x264/x265/VP9 constant rate factor (higher is smaller); codec: an FFmpeg encoder
    ("libx264", "libvpx-vp9", ...); container_format: FFmpeg muxer name (None: from dst's
    extension); rotation: counter-clockwise degrees (0, 90, 180, 270) written as the display
    matrix, with the pixels stored turned the other way so the video displays as the source;
    encoder_options: more FFmpeg encoder options, e.g. {"preset": "ultrafast"} for x264.
    Frame presentation times are kept (millisecond precision), so a variable frame rate
    survives. Raises MediaError if src cannot be decoded or dst cannot be written.
    """
    if rotation % 90:
        raise MediaError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    turns = (rotation // 90) % 4
    try:
        with av.open(os.fspath(src)) as inp, av.open(
            os.fspath(dst), "w", format=container_format
        ) as out:
            source = inp.streams.video[0]
            source.thread_type = "AUTO"
            rate = source.average_rate or Fraction(30)
            options = {"crf": str(crf), **(encoder_options or {})}
            stream = out.add_stream(codec, rate=rate, options=options)
            out_w, out_h = width or source.width, height or source.height
            if turns % 2:
                out_w, out_h = out_h, out_w
            stream.width, stream.height, stream.pix_fmt = out_w, out_h, "yuv420p"
            stream.codec_context.time_base = _TIME_BASE
            if turns:
                stream.set_display_rotation(rotation % 360)
            written = 0
            for frame in inp.decode(source):
                t = float(frame.time)
                if t < start_s or (end_s is not None and t >= end_s):
                    continue
                resized = frame.reformat(width or source.width, height or source.height,
                                         "rgb24", interpolation="AREA")
                pixels = np.rot90(resized.to_ndarray(), k=-turns) if turns else None
                image = (
                    av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
                    if pixels is not None
                    else resized
                )
                image.pts = round((t - start_s) / _TIME_BASE)
                image.time_base = _TIME_BASE
                for packet in stream.encode(image):
                    out.mux(packet)
                written += 1
            for packet in stream.encode():
                out.mux(packet)
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"cannot transcode {os.fspath(src)!r}: {e}") from e
    return written
