"""A video whose first video track is in a codec the decoder refuses (an MJPEG track
before the H.264 one) is hashed by its first track in an allowed codec, in `prov sign`
and the real server alike, rather than refused whole; a file with no such track is
refused naming the codecs it has."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.conftest import Cli


def _mjpeg_then_h264(path: Path, with_h264: bool = True) -> None:
    rng = np.random.default_rng(21)
    frames = [rng.integers(0, 256, (48, 64, 3), np.uint8) for _ in range(3)]
    with av.open(str(path), "w", format="matroska") as out:
        mjpeg = out.add_stream("mjpeg", rate=1)
        mjpeg.width, mjpeg.height, mjpeg.pix_fmt = 64, 48, "yuvj420p"
        streams = [mjpeg]
        if with_h264:
            h264 = out.add_stream("libx264", rate=1, options={"preset": "ultrafast"})
            h264.width, h264.height, h264.pix_fmt = 64, 48, "yuv420p"
            streams.append(h264)
        for i, pixels in enumerate(frames):
            for stream in streams:
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame = frame.reformat(format=stream.pix_fmt)
                frame.pts, frame.time_base = i, Fraction(1, 1)
                for packet in stream.encode(frame):
                    out.mux(packet)
        for stream in streams:
            for packet in stream.encode():
                out.mux(packet)


def test_the_first_track_in_an_allowed_codec_is_hashed(enrolled: Cli, tmp_path: Path) -> None:
    path = tmp_path / "two.mkv"
    _mjpeg_then_h264(path)
    with av.open(str(path)) as c:
        assert [s.codec_context.name for s in c.streams.video] == ["mjpeg", "h264"]
    rc, out, err = enrolled("sign", str(path))
    assert rc == 0, err
    rc, out, err = enrolled("verify", str(path), "--json", "--no-detect")
    report = json.loads(out)
    assert (rc, report["status"]) == (0, "SIGNED_ORIGINAL"), (out, err)
    assert report["evidence"]["claim"]["frames"] == 3

    only = tmp_path / "mjpeg.mkv"
    _mjpeg_then_h264(only, with_h264=False)
    rc, out, err = enrolled("sign", str(only))
    assert rc == 1
    assert "no video track in a supported codec (it has: mjpeg; supported: av1, h264" in err, err
