"""Per-frame video decode cost by frame size, for the decoded-pixel budget.

For clips at 1920x1080, 3840x2160 and 7680x4320 (textured moving content, H.264, 30 fps,
CRF 23) and for the review's hostile clip (7680x4320 at 1 fps, CRF 51, ultrafast), prints
per frame: bare decoding (FFmpeg, two decoder threads, as in the sandbox) and decoding
+ RGB + PDQ of a sampled frame (`iter_sampled_frames` sampling every frame), and their
difference, the cost of one sample. Then `sample_frames` (the sandbox) of the hostile clip
end to end, under the decoding budget (refused from its header). Clips are kept in DIR.
Usage: PYTHONPATH=. .venv/bin/python bench/bench_video_budget.py [DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from provenance.core.errors import MediaError
from provenance.media.video.decode import sample_frames, start_decoder
from provenance.media.video.frames import DECODER_THREADS, iter_sampled_frames

SIZES = ((1920, 1080, 20), (3840, 2160, 12), (7680, 4320, 6))


def make_clip(
    path: Path,
    width: int,
    height: int,
    frames: int,
    fps: int,
    crf: str,
    preset: str,
    textured: bool,
) -> None:
    """An H.264 MP4 of ``frames`` frames: a moving texture (or flat grey)."""
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(base, 8, axis=0), 8, axis=1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": preset, "crf": crf})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.roll(texture, 16 * i, axis=1) if textured else np.full_like(texture, 128)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def bare_decode_s(path: Path) -> tuple[float, int]:
    start = time.perf_counter()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        s.codec_context.thread_count = DECODER_THREADS
        n = sum(1 for _ in c.decode(s))
    return time.perf_counter() - start, n


def sampled_s(path: Path) -> float:
    start = time.perf_counter()
    # the budget off: this measures what it costs to decode, not what is refused
    list(
        iter_sampled_frames(
            path, 1000.0, 100_000, max_sampled_pixels=1 << 60, max_decoded_pixels=1 << 60
        )
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "dir", nargs="?", type=Path, help="folder for the clips, kept (default: a new temp folder)"
    )
    given = parser.parse_args().dir
    folder = given if given is not None else Path(tempfile.mkdtemp())
    clips = []
    for w, h, n in SIZES:
        p = folder / f"tex_{w}x{h}.mp4"
        if not p.exists():
            make_clip(p, w, h, n, 30, "23", "veryfast", True)
        clips.append((f"{w}x{h} textured 30 fps", p))
    hostile = folder / "big8k.mp4"
    if not hostile.exists():
        make_clip(hostile, 7680, 4320, 40, 1, "51", "ultrafast", False)
    clips.append(("7680x4320 flat 1 fps CRF 51 (review)", hostile))
    print(
        "clip | bytes | frames | decode ms/frame | decode+RGB+PDQ ms/frame | sample ms | ns/px decode, sample"
    )
    for name, p in clips:
        bare = [bare_decode_s(p) for _ in range(3)]
        n = bare[0][1]
        d = statistics.median(t for t, _ in bare) / n
        s = statistics.median(sampled_s(p) for _ in range(3)) / n
        with av.open(str(p)) as c:
            px = c.streams.video[0].codec_context.width * c.streams.video[0].codec_context.height
        print(
            f"{name} | {p.stat().st_size:,} | {n} | {d * 1e3:.1f} | {s * 1e3:.1f} | "
            f"{(s - d) * 1e3:.1f} | {d / px * 1e9:.2f}, {(s - d) / px * 1e9:.2f}"
        )
    start_decoder()
    start = time.perf_counter()
    try:
        info = sample_frames(hostile)
        outcome = f"{len(info.frames)} frames hashed"
    except MediaError as e:
        outcome = f"refused: {e}"
    print(f"sample_frames(big8k.mp4): {time.perf_counter() - start:.2f} s, {outcome}")


if __name__ == "__main__":
    main()
