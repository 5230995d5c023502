"""What `prov sign --c2pa`'s check that the file is still the one read costs
(`provenance.c2pa.writer._still_holds`: open, fstat, and a second SHA-256 of the file,
just before the export is renamed over it), against the whole `embed_manifest`.

Media: bench/bench_c2pa.py's 1-megapixel JPEG and PNG and 3 s 640x480 MP4, the shared
720x1280 H.264 clip (ThreatExchange pattern-hd-no-bar, 2.2 MB) and a 2 s 1280x720 MP4
of noise frames (tens of MB). Each is embedded into a separate destination (the source
is left as it is), median of bench_c2pa.REPEATS calls after one untimed call; the check
alone is timed the same way on the source. Writes the rate of the embed against the
embed less the check's time (bench/results.py).

Usage: python bench/bench_embed_check.py
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from bench_c2pa import REPEATS, make_media  # bench/bench_c2pa.py
from results import Ratio, median_seconds, no_options, write_results  # bench/results.py

from provenance.c2pa.authority import init_authority, issue_device_certificate
from provenance.c2pa.writer import _still_holds, embed_manifest
from provenance.core.keys import DeviceKey

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "fixtures" / "phash" / "video" / "pattern-hd-no-bar.mp4"


def noisy_video(path: Path, frames: int) -> None:
    """A 1280x720 MPEG-4 Part 2 MP4 of ``frames`` frames of noise (large per frame)."""
    rng = np.random.default_rng(7)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30, (1280, 720))
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8))
    writer.release()


def main() -> int:
    now = datetime.now(UTC)
    key = DeviceKey.generate()
    rows: list[Ratio] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        authority = init_authority(root / "ca", now=now)
        chain = issue_device_certificate(authority, key.public_key, key.key_id.hex(), now=now)
        media = make_media(root)
        clip = root / "clip.mp4"
        clip.write_bytes(CLIP.read_bytes())
        noisy_video(root / "noise.mp4", 60)
        media += [(clip, "video/mp4"), (root / "noise.mp4", "video/mp4")]
        print(f"median of {REPEATS} calls")
        print(f"{'file':<10}{'bytes':>12}{'embed ms':>10}{'check ms':>10}{'share':>8}")
        for src, media_type in media:
            embed = partial(
                embed_manifest,
                src,
                root / f"out{src.suffix}",
                media_type,
                key,
                chain,
                {"claim": "x"},
                None,
            )
            digest = hashlib.sha256(src.read_bytes()).digest()
            t_embed = median_seconds(embed, REPEATS)
            t_check = median_seconds(partial(_still_holds, src, os.stat(src), digest), REPEATS)
            print(
                f"{src.name:<10}{src.stat().st_size:>12,}{t_embed * 1e3:>10.1f}"
                f"{t_check * 1e3:>10.2f}{t_check / t_embed:>8.1%}"
            )
            rows.append(
                Ratio(
                    f"embed {src.name}",
                    1 / t_embed,
                    "less the check",
                    1 / (t_embed - t_check),
                    "calls/s",
                )
            )
    write_results("bench_embed_check", rows, note="the check's share of embed_manifest")
    return 0


if __name__ == "__main__":
    no_options(__doc__)
    sys.exit(main())
