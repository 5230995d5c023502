"""The decoding budget of a video (`provenance.media.video.frames.MAX_SAMPLED_PIXELS`,
`MAX_DECODED_PIXELS`): a tiny file of many large frames is refused from its header before
a frame is decoded, a header that understates is caught while decoding, and `prov sign`
refuses what the server would, with the same words."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from clients.api import ProvenanceClient
from provenance.core.errors import DecodeBudgetError, TransportError
from provenance.media.video.decode import sample_frames
from provenance.media.video.frames import MIN_FRAME_COST_PIXELS
from tests.conftest import (
    ADMIN_TOKEN,
    Cli,
    ServerProc,
    enroll_key,
    read_line,
    signed_claim,
    start_server,
)


def _encode(
    path: Path, frames: Iterator[np.ndarray], fps: int, crf: str, live: bool = False
) -> None:
    """H.264 MP4 of RGB frames at ``fps``, libx264 ultrafast at ``crf``; ``live``: a
    Matroska file written as a live stream instead, whose header declares no duration."""
    how = {"format": "matroska", "options": {"live": "1"}} if live else {}
    last: tuple[np.ndarray, av.VideoFrame] | None = None
    with av.open(str(path), "w", **how) as out:  # type: ignore[call-overload]
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": crf})
        for i, pixels in enumerate(frames):
            if i == 0:
                stream.width, stream.height = pixels.shape[1], pixels.shape[0]
                stream.pix_fmt = "yuv420p"
            if last is None or last[0] is not pixels:  # the same array again: converted once
                yuv = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
                last = (pixels, yuv)
            frame = last[1]
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture(scope="module")
def big8k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The review's file: 40 flat 7680x4320 frames at 1 fps, CRF 51 (about 100-260 KB)."""
    path = tmp_path_factory.mktemp("v") / "big8k.mp4"
    grey = np.full((4320, 7680, 3), 128, np.uint8)
    _encode(path, (grey for _ in range(40)), 1, "51")
    return path


@pytest.fixture(scope="module")
def clip4k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1.5 s of 3840x2160 at 30 fps, a moving texture (two 1 Hz samples)."""
    path = tmp_path_factory.mktemp("v") / "clip4k.mp4"
    rng = np.random.default_rng(3)
    tile = np.repeat(np.repeat(rng.integers(0, 256, (270, 480, 3), np.uint8), 8, 0), 8, 1)
    _encode(path, (np.roll(tile, 24 * i, axis=1) for i in range(45)), 30, "28")
    return path


def test_the_review_8k_file_is_refused_from_its_header_by_a_real_server(
    big8k: Path, clip4k: Path, tmp_path: Path
) -> None:
    """gRPC RESOURCE_EXHAUSTED and HTTP 413 naming the limit, from the header's numbers
    (before, the server decoded and hashed every 8K frame and answered UNSIGNED); a 4K
    clip is still verified."""
    srv = start_server(tmp_path / "p.db", "--http", "127.0.0.1:0")
    try:
        web = read_line(srv.proc, "web on ", timeout=60)
        with ProvenanceClient(srv.address, ADMIN_TOKEN) as c:
            with pytest.raises(TransportError) as e:
                c.verify_file(big8k)
            report = c.verify_file(clip4k)
        with httpx.Client(base_url=web, timeout=120) as http:
            r = http.post("/api/v1/verify", files={"file": (big8k.name, big8k.read_bytes())})
    finally:
        srv.stop()
    assert e.value.code == "RESOURCE_EXHAUSTED", e.value
    assert "decoding budget of 1,200,000,000 pixels of frames sampled at 1 Hz" in str(e.value)
    assert "its header declares 40 frames of 7680x4320 to sample" in str(e.value)
    assert r.status_code == 413, r.text
    assert "decoding budget" in r.text
    assert report.status.value == "UNSIGNED", report
    assert len(report.evidence.file.soft_bindings) == 2  # its two 1 Hz frames hashed


def test_sign_refuses_the_file_the_server_refuses_with_the_same_words(
    enrolled: Cli, big8k: Path, server: ServerProc
) -> None:
    """Signing and verifying sample with the same rule, so a device never logs a video
    that no server would hash (before, `prov sign` decoded and signed it)."""
    rc, _, err = enrolled("sign", str(big8k))
    assert rc == 1, err
    assert "decoding budget of 1,200,000,000 pixels of frames sampled at 1 Hz" in err
    assert "its header declares 40 frames of 7680x4320 to sample" in err
    with ProvenanceClient(server.address, ADMIN_TOKEN) as c, pytest.raises(TransportError) as e:
        c.verify_file(big8k)
    said = str(e.value)
    assert said[said.index("the video is over") :].split(";")[0] in " ".join(err.split())


def _understate_duration(path: Path) -> None:
    """Rewrite the media header's (mdhd, version 0) duration to 1 tick: the header then
    declares a video of a fraction of a second; the frames and their times are unchanged."""
    data = bytearray(path.read_bytes())
    at = data.index(b"mdhd") + 4
    assert data[at] == 0  # version 0: 32-bit times
    data[at + 16 : at + 20] = struct.pack(">I", 1)
    path.write_bytes(bytes(data))


def test_a_header_that_understates_is_caught_while_decoding(tmp_path: Path) -> None:
    """20 one-second frames of 320x240 under a budget of 5 sampled frames: refused from
    the header; with the header's duration rewritten to one tick it passes the header
    check and is stopped at the 6th sampled frame. The decoded-frame budget likewise."""
    path = tmp_path / "liar.mp4"
    rng = np.random.default_rng(5)
    _encode(path, (rng.integers(0, 256, (240, 320, 3), np.uint8) for _ in range(20)), 1, "30")
    px = 320 * 240
    with pytest.raises(DecodeBudgetError, match="header declares 20 frames of 320x240 to"):
        sample_frames(path, max_sampled_pixels=5 * px)
    assert len(sample_frames(path, max_sampled_pixels=20 * px).frames) == 20
    _understate_duration(path)
    with av.open(str(path)) as c:  # the lie took: the stream header says under a second
        stream = c.streams.video[0]
        assert stream.duration is not None and stream.time_base is not None
        assert stream.duration * stream.time_base < 1
    with pytest.raises(DecodeBudgetError, match=r"its first 6 sampled frames: 460,800 pix"):
        sample_frames(path, max_sampled_pixels=5 * px)
    with pytest.raises(DecodeBudgetError, match="header declares 20 frames of 320x240:"):
        sample_frames(path, max_decoded_pixels=19 * px)


def test_a_header_that_declares_no_length_is_counted_while_decoding(tmp_path: Path) -> None:
    """A live-stream Matroska file declares neither duration nor frame count: both budgets
    stop it while decoding, at the first frame over."""
    path = tmp_path / "live.mkv"
    rng = np.random.default_rng(6)
    frames = (rng.integers(0, 256, (240, 320, 3), np.uint8) for _ in range(20))
    _encode(path, frames, 1, "30", live=True)
    with av.open(str(path)) as c:
        assert c.duration is None and c.streams.video[0].frames == 0
    px = 320 * 240
    with pytest.raises(DecodeBudgetError, match=r"its first 20 frames: 1,536,000 pixels"):
        sample_frames(path, max_decoded_pixels=19 * px)
    with pytest.raises(DecodeBudgetError, match=r"its first 6 sampled frames: 460,800 pix"):
        sample_frames(path, max_sampled_pixels=5 * px)
    assert len(sample_frames(path, max_decoded_pixels=20 * px).frames) == 20


def test_a_logged_video_over_the_budget_still_reads_signed_original(
    big8k: Path, server: ServerProc
) -> None:
    """A video logged before this budget (or by another signer) whose exact bytes are
    uploaded keeps its verdict: SHA-256 decides, and a reason says the frames were not
    decoded, as for an image over the decode budget (before, the server decoded every
    8K frame)."""
    with ProvenanceClient(server.address, ADMIN_TOKEN) as c:
        c.submit(signed_claim(enroll_key(c), 1, hashlib.sha256(big8k.read_bytes()).digest()))
        report = c.verify_file(big8k)
    assert report.status.value == "SIGNED_ORIGINAL", report
    assert any("frames were not decoded" in r for r in report.reasons), report.reasons


def test_a_refusal_says_what_the_budget_covers_at_its_frame_size_and_what_to_do(
    big8k: Path, tmp_path: Path
) -> None:
    """The refusal names the limit, the file's figure, and, at the file's frame size,
    how long a video the budget covers, then what fits (a shorter clip, a smaller
    copy: the words serve `prov sign` and the server alike). Before, it ended 'it would hold a decoder too long', so a user with a
    10-minute 1080p video could not tell that 9.6 minutes pass."""
    with pytest.raises(DecodeBudgetError) as e:
        sample_frames(big8k)
    said = str(e.value)
    assert "its header declares 40 frames of 7680x4320 to sample" in said, said
    assert "at 7680x4320 the budget covers 36 frames sampled at 1 Hz (36 s of video)" in said
    assert "a clip of at most that length, or a copy at a smaller frame size, fits" in said
    path = tmp_path / "small.mp4"
    rng = np.random.default_rng(8)
    _encode(path, (rng.integers(0, 256, (240, 320, 3), np.uint8) for _ in range(20)), 1, "30")
    with pytest.raises(DecodeBudgetError) as e:
        sample_frames(path, max_decoded_pixels=19 * 320 * 240 + 1)
    said = str(e.value)
    assert "at 320x240 the budget covers 19 decoded frames" in said, said
    assert "a shorter clip, or a copy at a smaller frame size or frame rate, fits" in said


def test_frames_smaller_than_the_floor_are_counted_at_the_floor(tmp_path: Path) -> None:
    """Decoding a frame costs time whatever its size (FFmpeg's and the decode loop's own
    work per frame), so each frame counts at least `MIN_FRAME_COST_PIXELS` against the
    decoded budget, from the header and while decoding. Before (h-media50), a 20 MB MP4 of
    1.5 million 16x16 frames at 1,000 fps was 384 million pixels, 1% of the budget, and
    held a decode slot for 86 s here; 3 million would have reached the 120 s time limit."""
    assert MIN_FRAME_COST_PIXELS == 256 * 256
    flat = np.zeros((16, 16, 3), np.uint8)
    path = tmp_path / "tiny.mp4"
    _encode(path, (flat for _ in range(200)), 30, "30")
    budget = 100 * MIN_FRAME_COST_PIXELS  # 25,600 frames of 16x16 by their own pixels
    with pytest.raises(DecodeBudgetError) as e:
        sample_frames(path, max_decoded_pixels=budget)
    said = str(e.value)
    assert "its header declares 200 frames of 16x16, each counted as 65,536" in said, said
    assert "at 16x16 the budget covers 100 decoded frames" in said, said
    assert len(sample_frames(path, max_decoded_pixels=200 * MIN_FRAME_COST_PIXELS).frames) == 7
    live = tmp_path / "tiny.mkv"  # no length in its header: counted while decoding
    _encode(live, (flat for _ in range(200)), 30, "30", live=True)
    with pytest.raises(DecodeBudgetError) as e:
        sample_frames(live, max_decoded_pixels=budget)
    said = str(e.value)
    assert "its first 101 frames, each counted as 65,536 pixels, the least a frame" in said
    assert "counts: 6,619,136 pixels" in said, said
