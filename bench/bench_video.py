"""Video bindings: hard-binding speed and memory, frame hashing against bare decoding.

1. Hard binding: `hash_file` (whole-file SHA-256 + RFC 9162 Merkle root over 1 MiB
   chunks, as `prov sign` computes it) against plain hashlib SHA-256, both reading the
   same ~200 MiB file in 1 MiB pieces, alternated three times; MB/s of each and the ratio
   of medians.
2. Flat memory: a fresh process hashes the same file with `hash_file` (a 1 MiB buffer
   per thread) and reports its peak RSS, against a process that reads the file whole.
3. Frames: every frame of a real 720x1280 H.264 clip (ThreatExchange pattern-hd-no-bar)
   decoded and PDQ-hashed (`iter_sampled_frames` at QUERY_RATE_HZ) against bare decoding
   of the same frames to RGB; frames/s of each and the ratio. Also the sandboxed
   `sample_frames` (adds the child process) for the same work, and the sandbox's cost per
   call on a short clip (fork, pipes, reply) against the same claim made in process.
4. Matching: a 10-minute query hashed at 30 fps against a 10-minute claim at 1 Hz.

The 200 MiB file is the real clip's bytes repeated (hashing does not care whether the
bytes decode). Run: .venv/bin/python bench/bench_video.py
"""

from __future__ import annotations

import hashlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVarTuple

import av
from results import Ratio, no_options, write_results  # bench/results.py, next to this script

from provenance.core.binding import PerceptualHash
from provenance.core.video_binding import DEFAULT_VIDEO_CHUNK, hash_file
from provenance.core.video_match import QUERY_RATE_HZ, match_video
from provenance.media.video.decode import sample_frames, start_decoder
from provenance.media.video.frames import StreamFacts, iter_sampled_frames

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "fixtures" / "phash" / "video"
CLIP = VIDEOS / "pattern-hd-no-bar.mp4"
BIG_BYTES = 200 << 20
PIECE = 1 << 20
MB = 1e6


def make_big_file(directory: Path) -> Path:
    clip = CLIP.read_bytes()
    path = directory / "big.mp4"
    with open(path, "wb") as f:
        written = 0
        while written < BIG_BYTES:
            part = clip[: BIG_BYTES - written]
            f.write(part)
            written += len(part)
    return path


def plain_sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    buf = bytearray(PIECE)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.digest()


def chunked(path: Path) -> bytes:
    """The hard binding as `prov sign` computes it (`hash_file`: this thread reads the file
    in 1 MiB pieces and hashes it whole while a helper thread reads it too and hashes the
    chunk leaves)."""
    with open(path, "rb") as f:
        return hash_file(f, DEFAULT_VIDEO_CHUNK).chunk_merkle_root


Ts = TypeVarTuple("Ts")


def timed(fn: Callable[[*Ts], object], *args: *Ts) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def rss_child(mode: str, path: str) -> None:
    """Child mode: hash (or read whole) the file, print peak RSS in KiB."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "stream":
        chunked(Path(path))
    else:
        data = Path(path).read_bytes()
        hashlib.sha256(data).digest()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(before, peak)


def peak_rss(mode: str, path: Path) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", mode, str(path)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout.split()
    return int(out[0]), int(out[1])


def bench_hard_binding(directory: Path) -> list[Ratio]:
    path = make_big_file(directory)
    size_mb = path.stat().st_size / MB
    plain_sha256(path)  # warm the page cache
    plain, ours = [], []
    for _ in range(3):
        plain.append(timed(plain_sha256, path))
        ours.append(timed(chunked, path))
    plain_rate = size_mb / statistics.median(plain)
    our_rate = size_mb / statistics.median(ours)
    print(f"hard binding, {size_mb:.0f} MB in 1 MiB pieces (median of 3):")
    print(f"  hashlib SHA-256              {plain_rate:8.0f} MB/s")
    print(
        f"  hash_file (SHA + Merkle)     {our_rate:8.0f} MB/s   ratio {our_rate / plain_rate:.2f}"
        " (each byte is hashed twice: whole file and its chunk leaf)"
    )
    base, peak = peak_rss("stream", path)
    whole_base, whole_peak = peak_rss("whole", path)
    print("peak RSS of a fresh process hashing the file:")
    print(
        f"  streamed, 1 MiB pieces   {peak / 1024:7.1f} MiB (+{(peak - base) / 1024:.1f} MiB "
        "over the interpreter)"
    )
    print(
        f"  read whole               {whole_peak / 1024:7.1f} MiB "
        f"(+{(whole_peak - whole_base) / 1024:.1f} MiB)"
    )
    return [
        Ratio("video hard binding (SHA + Merkle)", our_rate, "SHA-256 alone", plain_rate, "MB/s")
    ]


def bare_decode(path: Path) -> int:
    frames = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = 2
        for frame in container.decode(stream):
            frame.to_ndarray(format="rgb24")
            frames += 1
    return frames


def bench_sandbox_overhead() -> None:
    """Median of 3: a 1 Hz claim of a short clip in the sandbox against in process."""
    clip = ROOT / "clients" / "samples" / "fabric_pattern.mp4"
    sample_frames(clip)  # the decoder process is warm, as in a running server

    def in_process() -> None:
        list(iter_sampled_frames(clip, 1.0, 100))

    sandboxed = statistics.median(timed(sample_frames, clip) for _ in range(3))
    direct = statistics.median(timed(in_process) for _ in range(3))
    print(
        f"sandbox overhead per call ({clip.name}, 1 Hz): {(sandboxed - direct) * 1e3:.0f} ms"
        f" ({sandboxed:.2f} s sandboxed, {direct:.2f} s in process)"
    )


def bench_frames() -> list[Ratio]:
    start_decoder()  # as `prov serve` does: its imports overlap the passes below
    with av.open(str(CLIP)) as container:
        s = container.streams.video[0]
        desc = f"{s.width}x{s.height} {s.codec_context.name}"
    n = bare_decode(CLIP)
    decode_s = min(timed(bare_decode, CLIP) for _ in range(2))
    start = time.perf_counter()
    hashed = sum(
        1
        for item in iter_sampled_frames(CLIP, QUERY_RATE_HZ, 10_000)
        if not isinstance(item, StreamFacts)
    )
    hash_s = time.perf_counter() - start
    start = time.perf_counter()
    info = sample_frames(CLIP, rate_hz=QUERY_RATE_HZ, max_frames=10_000)
    sandbox_s = time.perf_counter() - start
    start = time.perf_counter()
    claim = sample_frames(CLIP)
    claim_s = time.perf_counter() - start
    assert hashed == n == len(info.frames)
    print(f"frames: {n} frames of {CLIP.name} ({desc}):")
    print(f"  bare decode to RGB              {n / decode_s:7.1f} frames/s")
    print(
        f"  decode + PDQ, in process        {n / hash_s:7.1f} frames/s   ratio "
        f"{decode_s / hash_s:.2f}"
    )
    print(
        f"  decode + PDQ, sandboxed child   {n / sandbox_s:7.1f} frames/s   ratio "
        f"{decode_s / sandbox_s:.2f}"
    )
    print(
        f"  claim at 1 Hz (sandboxed, {len(claim.frames)} hashes of {n} frames): "
        f"{claim_s:.2f} s, {claim.duration_seconds / claim_s:.1f}x real time"
    )
    return [
        Ratio(
            "video frames decoded + PDQ, in process",
            n / hash_s,
            "bare decode",
            n / decode_s,
            "frames/s",
        ),
        Ratio(
            "video frames decoded + PDQ, sandboxed",
            n / sandbox_s,
            "bare decode",
            n / decode_s,
            "frames/s",
        ),
    ]


def bench_match() -> None:
    rows = (VIDEOS / "vpdq-expected" / "pattern-hd-no-bar.txt").read_text().split()
    hashes = [bytes.fromhex(r.split(",")[2]) for r in rows]
    minutes = 10
    query = [
        PerceptualHash("pdq", hashes[i % len(hashes)], 100, i / 30)
        for i in range(minutes * 60 * 30)
    ]
    claim = [
        PerceptualHash("pdq", hashes[(30 * i) % len(hashes)], 100, float(i))
        for i in range(minutes * 60)
    ]
    start = time.perf_counter()
    m = match_video(query, claim)
    elapsed = time.perf_counter() - start
    print(
        f"match: {len(query)} query frames against {len(claim)} claimed frames: "
        f"{elapsed:.2f} s (matched={m.matched}, coverage {m.coverage:.2f})"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_hard_binding(Path(tmp))
    rows += bench_frames()
    bench_sandbox_overhead()
    bench_match()
    write_results("video", rows)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rss-child":
        rss_child(sys.argv[2], sys.argv[3])
    else:
        no_options(__doc__)
        main()
