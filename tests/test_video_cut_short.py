"""An MP4 cut short (an interrupted recording, a partial download) is refused in words
that say so, not only FFmpeg's "Invalid data found when processing input" or "no video
stream (audio-only or empty container)" (real server, real files)."""

from __future__ import annotations

import json
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from provenance.media.video.cut_short import cut_short
from tests.conftest import Cli, write_video


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.integers(0, 256, (48, 64, 3), np.uint8) for _ in range(4)]


def _faststart(path: Path) -> None:
    """The same 4 frames with the index ('moov') first, as a streaming export writes it."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=1, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i, pixels in enumerate(_frames()):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 1)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _reasons(cli: Cli, path: Path) -> list[str]:
    rc, out, err = cli("verify", str(path), "--json", "--no-detect", "--no-sidecar")
    report = json.loads(out)
    assert (rc, report["status"]) == (11, "UNSIGNED"), (out, err)
    reasons: list[str] = report["reasons"]
    return reasons


def test_a_recording_cut_short_says_so(cli: Cli, tmp_path: Path) -> None:
    whole = tmp_path / "whole.mp4"
    write_video(whole, _frames())  # PyAV writes the index ('moov') last, as cameras do
    data = whole.read_bytes()
    assert data.index(b"moov") > data.index(b"mdat")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    said = _reasons(cli, cut)[-1]
    assert said.startswith("could not decode the video: cannot open the mov container"), said
    assert "the file is cut short: it ends " in said, said
    assert "-byte 'mdat' box (its media data) and has no 'moov' box (the index" in said, said

    fast = tmp_path / "fast.mp4"
    _faststart(fast)
    data = fast.read_bytes()
    moov = data.index(b"moov") - 4
    (length,) = struct.unpack(">I", data[moov : moov + 4])
    inside = tmp_path / "inside.mp4"
    inside.write_bytes(data[: moov + 100])  # the index itself cut
    said = _reasons(cli, inside)[-1]
    into = f"it ends 100 bytes into a {length:,}-byte 'moov' box (its index), so its frames"
    assert into in said, said

    assert cut_short(whole) == cut_short(fast) == ""  # whole files are not cut short
    damaged = tmp_path / "damaged.mp4"  # a box size of 3: damaged, not cut short
    damaged.write_bytes(data[:32] + b"\x00\x00\x00\x03" + data[36:])
    assert cut_short(damaged) == ""
