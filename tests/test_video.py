"""Sandboxed video decoding and soft-binding matching on real footage.

The signed original is the shipped sample clients/samples/fabric_pattern.mp4 (real handheld
footage, 6.9 s, 360x640). Derived copies are made from it with PyAV: a smaller re-encode, a
clip trimmed at a cut that falls between the claim's sampled instants, a 25 fps conversion,
WebM and MOV versions, and copies with rotation metadata.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import grpc
import numpy as np
import psutil
import pytest
from PIL import Image

from provenance.cli.files import open_regular
from provenance.core.binding import hamming, pdq_hash
from provenance.core.errors import (
    DecoderCrashError,
    DecoderUnavailableError,
    MediaError,
    MediaTooLargeError,
    ProvenanceError,
)
from provenance.core.video_match import QUERY_RATE_HZ, match_video
from provenance.media.inspect import InspectConfig, Upload, inspect_upload
from provenance.media.video import decode as decode_module
from provenance.media.video.decode import VideoInfo, sample_frames, start_decoder
from provenance.media.video.transcode import transcode
from provenance.server.rpc import status_for

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "clients" / "samples" / "fabric_pattern.mp4"
FIXTURES = ROOT.parent / "shared" / "fixtures"
VIDEOS = FIXTURES / "phash" / "video"
PHOTOS = FIXTURES / "phash" / "pdq" / "labelme-subset"
FAST = {"preset": "ultrafast"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    made: dict[str, dict[str, Any]] = {
        "small": dict(width=180, height=320, crf=34),
        "trim": dict(width=180, height=320, start_s=2.1, end_s=5.0, crf=30),
        "fps25": dict(width=180, height=320, crf=30, frame_rate=25),
        "mov": dict(width=180, height=320, end_s=1.5, crf=30, container_format="mov"),
        **{
            f"rot{r}": dict(width=180, height=320, end_s=1.5, crf=24, rotation=r)
            for r in (0, 90, 180, 270)
        },
    }
    out = {}
    for name, kwargs in made.items():
        suffix = ".mov" if name == "mov" else ".mp4"
        out[name] = d / f"{name}{suffix}"
        transcode(SAMPLE, out[name], encoder_options=FAST, **kwargs)
    out["webm"] = d / "clip.webm"
    transcode(
        SAMPLE,
        out["webm"],
        180,
        320,
        end_s=1.5,
        crf=40,
        codec="libvpx-vp9",
        encoder_options={"deadline": "realtime", "cpu-used": "8"},
    )
    return out


@pytest.fixture(scope="module")
def claim() -> VideoInfo:
    """What a device would sign: the sample's frames at the default 1 Hz."""
    return sample_frames(SAMPLE)


def _query(path: Path, rate_hz: float = QUERY_RATE_HZ) -> VideoInfo:
    """How a verifier hashes a file under test: every frame."""
    return sample_frames(path, rate_hz=rate_hz)


@pytest.fixture(scope="module")
def source_claim() -> VideoInfo:
    """The ThreatExchange video the sample was made from, sampled at 1 Hz."""
    return sample_frames(VIDEOS / "pattern-hd-no-bar.mp4")


def test_signed_original_bindings(claim: VideoInfo) -> None:
    assert (claim.width, claim.height, claim.rotation) == (360, 640, 0)
    assert claim.media_type == "video/mp4"
    assert claim.frames_decoded == 206
    assert claim.duration_seconds == pytest.approx(206 / 30, abs=0.01)
    assert [f.timestamp_seconds for f in claim.frames] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert all(f.pdq.quality == 100 for f in claim.frames)
    assert all(f.pdq.timestamp_seconds == f.timestamp_seconds for f in claim.frames)
    assert claim.decode_error == ""
    again = sample_frames(SAMPLE)
    assert again.frames == claim.frames  # deterministic


def test_sample_is_derived_from_its_stated_source(
    claim: VideoInfo, source_claim: VideoInfo
) -> None:
    """clients/samples/SOURCES.md: a 360x640 re-encode of the ThreatExchange test video."""
    m = match_video([f.pdq for f in claim.frames], [f.pdq for f in source_claim.frames])
    assert m.matched and m.coverage == 1.0 and m.offset_seconds == 0.0
    assert m.median_distance is not None and m.median_distance <= 8


def test_reencoded_smaller_copy_matches_the_whole_original(
    clips: dict[str, Path], claim: VideoInfo
) -> None:
    query = _query(clips["small"])
    assert (query.width, query.height, len(query.frames)) == (180, 320, 206)
    m = match_video([f.pdq for f in query.frames], [f.pdq for f in claim.frames])
    assert m.matched and m.coverage == 1.0 and m.window_frames == 7
    assert (m.offset_seconds, m.original_start_s, m.original_end_s) == (0.0, 0.0, 6.0)
    assert m.median_distance is not None and m.median_distance <= 24


def test_trimmed_clip_is_placed_at_its_time_range(clips: dict[str, Path], claim: VideoInfo) -> None:
    query = _query(clips["trim"])
    assert query.frames[0].timestamp_seconds == 0.0
    assert query.duration_seconds == pytest.approx(2.9, abs=0.05)
    m = match_video([f.pdq for f in query.frames], [f.pdq for f in claim.frames])
    assert m.matched and m.coverage == 1.0
    assert m.offset_seconds == pytest.approx(2.1, abs=0.02)
    assert (m.original_start_s, m.original_end_s) == (3.0, 4.0)
    assert m.matched_share_original == pytest.approx(2 / 7)


def test_frame_rate_conversion_matches(clips: dict[str, Path], claim: VideoInfo) -> None:
    query = _query(clips["fps25"])
    assert len(query.frames) == 171  # 6.87 s at 25 fps
    m = match_video([f.pdq for f in query.frames], [f.pdq for f in claim.frames])
    assert m.matched and m.coverage == 1.0 and m.offset_seconds == 0.0


@pytest.mark.parametrize(
    ("name", "media_type"), [("webm", "video/webm"), ("mov", "video/quicktime")]
)
def test_webm_and_mov_decode_and_match(
    clips: dict[str, Path], claim: VideoInfo, name: str, media_type: str
) -> None:
    query = _query(clips[name])
    assert query.media_type == media_type
    assert (query.width, query.height, len(query.frames)) == (180, 320, 45)
    m = match_video([f.pdq for f in query.frames], [f.pdq for f in claim.frames])
    assert m.matched and (m.window_frames, m.aligned_frames) == (2, 2)


def test_unrelated_video_does_not_match(claim: VideoInfo) -> None:
    query = _query(VIDEOS / "doorknob-hd-no-bar.mp4", rate_hz=5.0)
    m = match_video([f.pdq for f in query.frames], [f.pdq for f in claim.frames])
    assert not m.matched and m.query_matched_frames == 0


def test_greyscale_pillarboxed_copy_matches_thanks_to_bar_trimming(
    source_claim: VideoInfo,
) -> None:
    """ThreatExchange's pattern-sd-grey-bar is pattern-hd-no-bar made greyscale, SD and
    pillarboxed, frame for frame. PDQ alone misses it (88 bits); without the bars it
    matches."""
    original_hashes = [f.pdq for f in source_claim.frames]
    copy = sample_frames(VIDEOS / "pattern-sd-grey-bar.mp4")
    m = match_video([f.pdq for f in copy.frames], original_hashes)
    assert m.matched and m.coverage == 1.0 and m.window_frames == 7
    assert m.median_distance is not None and m.median_distance <= 8
    whole = sample_frames(VIDEOS / "pattern-sd-grey-bar.mp4", strip_bars=False)
    assert not match_video([f.pdq for f in whole.frames], original_hashes).matched


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_metadata_is_applied(
    clips: dict[str, Path], claim: VideoInfo, degrees: int
) -> None:
    upright = _query(clips["rot0"], rate_hz=2.0)
    turned = _query(clips[f"rot{degrees}"], rate_hz=2.0)
    with av.open(str(clips[f"rot{degrees}"])) as container:
        stored = container.streams.video[0]
        stored_size = (stored.width, stored.height)
    assert stored_size == ((320, 180) if degrees % 180 else (180, 320))
    assert (turned.rotation, turned.width, turned.height) == (degrees, 180, 320)
    assert upright.rotation == 0
    assert len(turned.frames) == len(upright.frames) == 3
    for a, b in zip(upright.frames, turned.frames, strict=True):
        assert hamming(a.pdq.hash, b.pdq.hash) <= 16
    m = match_video([f.pdq for f in turned.frames], [f.pdq for f in claim.frames])
    assert m.matched and (m.window_frames, m.aligned_frames) == (2, 2)


def test_variable_frame_rate_is_sampled_by_presentation_time(tmp_path: Path) -> None:
    """Five real photographs shown at irregular times; 1 Hz sampling takes the first frame
    presented in each second, so seconds 1 and 4 (no frame) are skipped."""
    photos = [
        np.asarray(Image.open(PHOTOS / name).convert("RGB").resize((160, 120)))
        for name in ("q0122.jpg", "q0291.jpg", "q0746.jpg", "q1050.jpg", "q2821.jpg")
    ]
    times_ms = [0, 500, 900, 2600, 2700, 3050, 5500]
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30, options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(photos[i % 5], format="rgb24")
            frame.pts = ms
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    info = sample_frames(path)
    assert [f.timestamp_seconds for f in info.frames] == [0.0, 2.6, 3.05, 5.5]
    assert info.frames_decoded == 7
    shown = [photos[0], photos[3], photos[0], photos[1]]  # frames 0, 3, 5, 6
    for sample, photo in zip(info.frames, shown, strict=True):
        assert hamming(sample.pdq.hash, pdq_hash(photo).hash) <= 16


def test_kept_rgb_frames_cross_the_process_boundary_intact(claim: VideoInfo) -> None:
    native = sample_frames(SAMPLE, keep_rgb_every=3, max_rgb_frames=2)
    kept = [f for f in native.frames if f.rgb is not None]
    assert [f.timestamp_seconds for f in kept] == [0.0, 3.0]
    for f in kept:
        assert f.rgb is not None and f.rgb.shape == (640, 360, 3) and f.rgb.dtype == np.uint8
        assert pdq_hash(f.rgb).hash == f.pdq.hash
    small = sample_frames(SAMPLE, keep_rgb_every=1, max_rgb_frames=16, rgb_max_side=64)
    shapes = {f.rgb.shape for f in small.frames if f.rgb is not None}
    assert shapes == {(64, 36, 3)}
    assert [f.pdq for f in small.frames] == [f.pdq for f in claim.frames]


# --- damaged, hostile and unsupported input ---------------------------------------------


def test_garbage_appended_decodes_like_the_original(tmp_path: Path, claim: VideoInfo) -> None:
    path = tmp_path / "appended.mp4"
    path.write_bytes(SAMPLE.read_bytes() + os.urandom(100_000))
    info = sample_frames(path)
    assert [f.pdq for f in info.frames] == [f.pdq for f in claim.frames]


def test_one_flipped_byte_still_decodes(tmp_path: Path, claim: VideoInfo) -> None:
    data = bytearray(SAMPLE.read_bytes())
    data[200_000] ^= 0x01  # inside the media data
    path = tmp_path / "flipped.mp4"
    path.write_bytes(bytes(data))
    info = sample_frames(path)
    assert len(info.frames) == 7
    m = match_video([f.pdq for f in info.frames], [f.pdq for f in claim.frames])
    assert m.matched


def test_truncated_file_with_index_at_the_end_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "truncated.mp4"
    path.write_bytes(SAMPLE.read_bytes()[:200_000])  # the moov box is at the end
    with pytest.raises(MediaError, match="cannot open the mov container"):
        sample_frames(path)


def test_truncated_file_with_index_first_yields_the_frames_before_the_cut(
    tmp_path: Path,
) -> None:
    source = (VIDEOS / "pattern-sd-grey-bar.mp4").read_bytes()  # moov first
    path = tmp_path / "truncated.mp4"
    path.write_bytes(source[: len(source) // 2])
    info = sample_frames(path)
    assert 2 <= len(info.frames) < 7
    assert info.decode_error != ""
    full = sample_frames(VIDEOS / "pattern-sd-grey-bar.mp4")
    assert [f.pdq for f in info.frames[:2]] == [f.pdq for f in full.frames[:2]]
    empty = tmp_path / "no-media.mp4"
    empty.write_bytes(source[: 8287 + 8])  # ftyp, moov, free and the mdat header only
    with pytest.raises(MediaError, match="no decodable frames"):
        sample_frames(empty)


def test_file_claiming_to_be_mp4_that_is_not(tmp_path: Path) -> None:
    jpeg = tmp_path / "photo.mp4"
    jpeg.write_bytes((FIXTURES / "phash" / "pdq" / "dih" / "bridge-1-original.jpg").read_bytes())
    with pytest.raises(MediaError, match="looks like image/jpeg"):
        sample_frames(jpeg)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 10)
    with pytest.raises(MediaError, match="not recognised"):
        sample_frames(text)
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(SAMPLE.read_bytes()[:32] + os.urandom(20_000))  # an ftyp, then noise
    with pytest.raises(MediaError, match="cannot open the mov container"):
        sample_frames(fake)
    with pytest.raises(MediaError, match="cannot read"):
        sample_frames(tmp_path / "missing.mp4")


def test_audio_only_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=44100)
        tone = np.sin(np.arange(1024 * 20) * 2 * np.pi * 440 / 44100).astype(np.float32)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(
                tone[None, i * 1024 : (i + 1) * 1024], format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 44100, i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with pytest.raises(MediaError, match="no video stream"):
        sample_frames(path)


def test_limits_on_frames_and_memory() -> None:
    with pytest.raises(MediaTooLargeError, match="more than 3 frames"):
        sample_frames(SAMPLE, max_frames=3)
    with pytest.raises(MediaError, match="memory limit"):
        sample_frames(SAMPLE, max_memory_bytes=128 << 20)
    with pytest.raises(MediaError, match="rate_hz"):
        sample_frames(SAMPLE, rate_hz=0)


@pytest.fixture
def stalled_fifo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A named pipe that delivers the first 4 KiB of a real MP4 and then nothing: a decoder
    reading it blocks, as on a hostile or stalled input.

    `sample_frames` refuses a FIFO before its decoding child starts (its sniff opens
    through `provenance.cli.files.open_regular`); the child opens the path by name, so a
    FIFO renamed over a checked file reaches it, bounded by the deadline. The sniff here
    is of the real MP4 (a file checked, then swapped), so the child meets the FIFO."""
    path = tmp_path / "stalled.mp4"
    os.mkfifo(path)
    checked = open_regular

    def checked_before_the_swap(asked: Any, refuse: type[Exception]) -> Any:
        return checked(SAMPLE if Path(asked) == path else asked, refuse)

    monkeypatch.setattr(decode_module, "open_regular", checked_before_the_swap)
    release = threading.Event()

    def writer() -> None:
        with open(path, "wb") as f:
            f.write(SAMPLE.read_bytes()[:4096])
            f.flush()
            release.wait(30)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    yield path
    release.set()
    thread.join(5)


def _decoder_workers() -> list[psutil.Process]:
    """Live decoding children (forked by the pre-started decoder process, which is this
    process's child); zombies ignored."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            parent = p.parent()
            if (
                p.status() != psutil.STATUS_ZOMBIE
                and parent is not None
                and parent.pid != os.getpid()
                and "provenance.media.video.worker" in " ".join(parent.cmdline())
            ):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return found


def test_a_hanging_decoder_is_stopped_at_the_deadline(stalled_fifo: Path) -> None:
    # the deadline's own error (without one the read of the stalled FIFO never ends:
    # pytest's timeout stops the test)
    with pytest.raises(MediaError, match="did not finish within 1.5 s"):
        sample_frames(stalled_fifo, timeout_s=1.5)
    # SIGKILL is delivered asynchronously: give the pre-started process a moment to reap
    gone_by = time.monotonic() + 30  # a hang guard: a loaded machine reaps late
    while _decoder_workers() and time.monotonic() < gone_by:
        time.sleep(0.05)
    assert not _decoder_workers()


def _signal_the_decoder_mid_read(fifo: Path, sig: signal.Signals) -> BaseException:
    """Start a decode of ``fifo`` (20 s deadline) on a thread, send the decoding child
    ``sig`` once it blocks on the read, and return the MediaError the call raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            sample_frames(fifo, timeout_s=20)
        except MediaError as e:
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    workers: list[psutil.Process] = []
    while not workers and time.monotonic() < deadline:
        workers = _decoder_workers()
        time.sleep(0.05)
    assert workers
    time.sleep(0.5)  # let it reach the blocking read
    os.kill(workers[0].pid, sig)
    thread.join(10)
    assert len(errors) == 1
    return errors[0]


def test_a_crashing_decoder_is_reported(stalled_fifo: Path) -> None:
    error = _signal_the_decoder_mid_read(stalled_fifo, signal.SIGSEGV)
    assert "decoder process died (killed by SIGSEGV)" in str(error)
    # a crash is told apart (inspect_upload decodes again without pixels after one)
    assert isinstance(error, DecoderCrashError), repr(error)


def test_a_decoder_ended_by_its_own_deadline_timer_reports_the_deadline(
    stalled_fifo: Path,
) -> None:
    """The decoding child arms a SIGALRM timer at the same deadline as the parent; on a
    loaded machine it can fire before the parent's wait ends. That is the deadline too, and
    must be said so, not "the decoder process died (killed by SIGALRM)" (seen in CI)."""
    error = _signal_the_decoder_mid_read(stalled_fifo, signal.SIGALRM)
    assert "decoding did not finish within 20 s" in str(error), error


def test_the_decoder_process_is_reused_and_restarted_when_it_dies() -> None:
    """Each file gets a fresh forked child, but the pre-started process that forks them
    survives between calls; killed, it is started again at the next call."""
    start_decoder()
    zygote = decode_module._zygote
    assert zygote is not None
    first = sample_frames(SAMPLE, rate_hz=0.5)
    assert decode_module._zygote is zygote and zygote.process.poll() is None
    zygote.process.kill()
    zygote.process.wait()
    again = sample_frames(SAMPLE, rate_hz=0.5)
    assert again.frames == first.frames
    assert decode_module._zygote is not None and decode_module._zygote is not zygote


def test_a_decoder_that_cannot_be_started_is_the_servers_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spawning the decoder process fails for real (the interpreter it runs is gone): that
    is the server's fault, so UNAVAILABLE with a sentence that names no server path, not
    INVALID_ARGUMENT blaming the caller's file; the OSError stays for the server's log."""
    start_decoder()
    zygote = decode_module._zygote
    assert zygote is not None
    zygote.process.kill()
    zygote.process.wait()
    gone = tmp_path / "python-that-was-removed"
    monkeypatch.setattr(sys, "executable", str(gone))
    with pytest.raises(ProvenanceError) as caught:
        sample_frames(SAMPLE, rate_hz=0.5)
    error = caught.value
    assert status_for(error) == grpc.StatusCode.UNAVAILABLE, (type(error), str(error))
    assert error.public == "the server cannot decode video now; try again later"
    assert str(gone) in str(error)  # the operator's detail, for the server's log
    # the server's own path: not taken for an undecodable file, judged with a note
    # naming the server's Python ("could not decode the video: cannot start ...")
    cfg = InspectConfig()
    with Upload(cfg.limits.max_bytes) as upload:
        upload.write(SAMPLE.read_bytes())
        with pytest.raises(DecoderUnavailableError):
            inspect_upload(upload, cfg, True, judge_undecodable=True)
    monkeypatch.undo()
    assert sample_frames(SAMPLE, rate_hz=0.5).frames  # started again once it can be


def test_a_decoder_that_cannot_load_its_libraries_is_the_servers_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decoder process starts but its imports fail (an `av` on its path that raises,
    as a broken PyAV install would): the server's fault too, UNAVAILABLE, not a caller's
    file that "is not a decodable video"."""
    start_decoder()
    zygote = decode_module._zygote
    assert zygote is not None
    zygote.process.kill()
    zygote.process.wait()
    (tmp_path / "av.py").write_text("raise ImportError('PyAV is broken here')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(ProvenanceError) as caught:
        sample_frames(SAMPLE, rate_hz=0.5)
    error = caught.value
    assert status_for(error) == grpc.StatusCode.UNAVAILABLE, (type(error), str(error))
    assert error.public == "the server cannot decode video now; try again later"
    assert "could not load PyAV and NumPy" in str(error)
    monkeypatch.undo()
    assert sample_frames(SAMPLE, rate_hz=0.5).frames
