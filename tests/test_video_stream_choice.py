"""A video whose first video track is in a codec the decoder refuses (an MJPEG track
before the H.264 one) is refused naming it, in `prov sign` and the real server alike:
the first track is the one a player shows, and a supported track behind it compared in
its place let a signed video hidden there verify as a copy of it."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.conftest import Cli, write_video


def _frames(seed: int, n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48, 64, 3), np.uint8) for _ in range(n)]


def _mjpeg_then_h264(path: Path, with_h264: bool = True, shown_seed: int = 21) -> None:
    """An MKV of an MJPEG track, then (``with_h264``) an H.264 track of 3 frames of
    seed 21; the MJPEG track's frames are those of ``shown_seed``."""
    frames, shown = _frames(21), _frames(shown_seed)
    with av.open(str(path), "w", format="matroska") as out:
        mjpeg = out.add_stream("mjpeg", rate=1)
        mjpeg.width, mjpeg.height, mjpeg.pix_fmt = 64, 48, "yuvj420p"
        streams = [mjpeg]
        if with_h264:
            h264 = out.add_stream("libx264", rate=1, options={"preset": "ultrafast"})
            h264.width, h264.height, h264.pix_fmt = 64, 48, "yuv420p"
            streams.append(h264)
        for i, (pixels, seen) in enumerate(zip(frames, shown, strict=True)):
            for stream in streams:
                rgb = seen if stream is mjpeg else pixels
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame = frame.reformat(format=stream.pix_fmt)
                frame.pts, frame.time_base = i, Fraction(1, 1)
                for packet in stream.encode(frame):
                    out.mux(packet)
        for stream in streams:
            for packet in stream.encode():
                out.mux(packet)


def test_a_first_track_in_another_codec_is_refused_naming_it(enrolled: Cli, tmp_path: Path) -> None:
    """The track sampled is the first (the one a player shows): one in a codec the
    decoder refuses is refused naming it, and the supported track behind it."""
    path = tmp_path / "two.mkv"
    _mjpeg_then_h264(path)
    with av.open(str(path)) as c:
        assert [s.codec_context.name for s in c.streams.video] == ["mjpeg", "h264"]
    rc, out, err = enrolled("sign", str(path))
    assert rc == 1, err
    assert "unsupported video codec: its first video track is mjpeg (supported: av1, h264" in err
    assert "its h264 track behind it is not compared in its place" in err, err

    only = tmp_path / "mjpeg.mkv"
    _mjpeg_then_h264(only, with_h264=False)
    rc, out, err = enrolled("sign", str(only))
    assert rc == 1
    assert "its first video track is mjpeg (supported: av1, h264" in err, err
    assert "behind it" not in err, err


def test_a_signed_video_hidden_behind_another_track_is_not_its_copy(
    enrolled: Cli, tmp_path: Path
) -> None:
    """A signed video's frames put in a second track behind an MJPEG track of other
    pictures (which a player shows: the first video track) must not verify as a copy of
    the signed video. Before, the MJPEG track was passed over and the hidden track
    compared: DERIVED, "a transcoded, resized or trimmed copy of the signed video", for
    a file that plays something else."""
    signed = tmp_path / "signed.mp4"
    write_video(signed, _frames(21))
    rc, out, err = enrolled("sign", str(signed))
    assert rc == 0, err
    hidden = tmp_path / "hidden.mkv"
    _mjpeg_then_h264(hidden, shown_seed=99)
    rc, out, err = enrolled("verify", str(hidden), "--json", "--no-detect", "--no-sidecar")
    report = json.loads(out)
    assert report["status"] != "DERIVED", report  # before: DERIVED
    said = " ".join(report["reasons"])
    assert "mjpeg" in said, report
