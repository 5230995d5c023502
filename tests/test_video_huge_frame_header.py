"""A tiny video whose frames are over the 8K frame limit is refused from its stream
header, before a frame is decoded (a decompression bomb: 33 KB of HEVC held a
16384x8192 frame the decoder child allocated, 424 MiB, before the refusal), by the real
server, and the next request is served."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from provenance.media.video.frames import MAX_FRAME_PIXELS
from tests.conftest import Cli, write_video


def _flat_video(path: Path, width: int, height: int) -> None:
    """One flat grey frame of width x height, H.264 (x264 ultrafast, CRF 51)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=1, options={"preset": "ultrafast", "crf": "51"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in frame.planes:
            plane.update(b"\x80" * plane.buffer_size)
        frame.pts, frame.time_base = 0, Fraction(1, 1)
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)


def test_a_frame_over_the_limit_is_refused_from_the_header(cli: Cli, tmp_path: Path) -> None:
    width, height = 7696, 4320  # 16 columns more than 8K UHD
    assert width * height > MAX_FRAME_PIXELS
    bomb = tmp_path / "bomb.mp4"
    _flat_video(bomb, width, height)
    assert bomb.stat().st_size < 200_000

    rc, out, err = cli("verify", str(bomb), "--json", "--no-detect")
    assert rc == 1, out
    said = json.loads(out)["error"]
    assert "its stream header declares frames of 7696x4320 (33,246,720 pixels)" in said, said
    assert "over the limit of 33,177,600 pixels (7680x4320, 8K UHD)" in said, said
    assert "RESOURCE_EXHAUSTED" in said

    ok = tmp_path / "ok.mp4"  # the decoder still serves the next video
    write_video(ok, [np.full((48, 64, 3), 90, np.uint8)] * 2)
    rc, out, err = cli("verify", str(ok), "--json", "--no-detect")
    assert (rc, json.loads(out)["status"]) == (11, "UNSIGNED"), (out, err)
