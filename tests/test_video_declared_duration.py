"""A video whose header's frame count is an estimate from its declared duration (a
Matroska file has no sample table) and over the decoding budget says so: the duration and
rate it declares, not only "N frames" a 3-frame file never held (real server)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.conftest import Cli

_MS = Fraction(1, 1000)


def _three_frames_a_week_apart(path: Path) -> None:
    """3 intra-coded 320x240 H.264 frames in Matroska at 0 s, 0.1 s and 11.6 days
    (10^9 ms): the muxer writes the last time as the file's duration."""
    encoder = av.CodecContext.create("libx264", "w")
    assert isinstance(encoder, av.VideoCodecContext)
    encoder.width, encoder.height, encoder.pix_fmt = 320, 240, "yuv420p"
    encoder.time_base = Fraction(1, 10)
    encoder.options = {"preset": "ultrafast", "g": "1", "bf": "0"}
    rng = np.random.default_rng(3)
    packets = []
    for i in range(3):
        frame = av.VideoFrame.from_ndarray(
            rng.integers(0, 256, (240, 320, 3), np.uint8), format="rgb24"
        )
        frame.pts = i
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.extradata = encoder.extradata
        for packet, ms in zip(packets, (0, 100, 10**9), strict=True):
            packet.stream = stream
            packet.pts = packet.dts = ms
            packet.time_base = _MS
            out.mux(packet)


def test_a_declared_duration_over_the_budget_is_named(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "week.mkv"
    _three_frames_a_week_apart(path)
    assert path.stat().st_size < 400_000
    rc, out, err = cli("verify", str(path), "--json", "--no-detect")
    assert rc == 1, out
    said = json.loads(out)["error"]
    assert "over the decoding budget" in said, said
    assert "its header declares a duration of 1,000,000 s (11.6 days)" in said, said
    assert "at 10 frames a second: 10,000,001 frames of 320x240" in said, said
