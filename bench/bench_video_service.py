"""A ~200 MB video through the real service: flat memory and MB/s.

Starts `prov serve` as a child process, signs a 200 MB MP4 (the bundled clip followed by
filler bytes, so it still decodes), then verifies it with `VerifyFile` while sampling the
server's resident memory. Prints the verification rate against plain hashlib.sha256 over
the same file (read in 1 MiB pieces) in the same run, and the server's peak RSS growth.

Usage: python bench/bench_video_service.py [--mb 200]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

import psutil
from prov_server import PeakRss, enrolled_server  # bench/prov_server.py, next to this script
from results import Ratio, write_results  # bench/results.py, next to this script

from clients.api import ProvenanceClient
from clients.cli import main as prov

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "clients" / "samples" / "fabric_pattern.mp4"


def make_video(path: Path, mb: int) -> None:
    """The real clip, then filler up to ``mb`` MiB (decoders stop after the last box)."""
    with path.open("wb") as f:
        f.write(CLIP.read_bytes())
        block = os.urandom(1 << 20)
        while f.tell() < mb << 20:
            f.write(block)


def sha256_file(path: Path) -> float:
    t0 = time.perf_counter()
    h = hashlib.sha256()
    with path.open("rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return time.perf_counter() - t0


def measure(mb: int) -> dict[str, float]:
    """Sign and verify an ``mb`` MiB video; return rates and the server's memory figures."""
    with tempfile.TemporaryDirectory() as tmp, enrolled_server(Path(tmp)) as (proc, address):
        video = Path(tmp) / "big.mp4"
        make_video(video, mb)
        assert prov(["sign", str(video)]) == 0
        server = psutil.Process(proc.pid)
        with PeakRss(server, 0.02) as rss:
            t0 = time.perf_counter()
            with ProvenanceClient(address) as c:
                report = c.verify_file(video)
            t_verify = time.perf_counter() - t0
        assert report.status.value == "SIGNED_ORIGINAL", report.reasons
        t_hash = sha256_file(video)
        size = video.stat().st_size
    return {
        "mb": size / 1e6,
        "verify_mb_s": size / 1e6 / t_verify,
        "sha256_mb_s": size / 1e6 / t_hash,
        "rss_base_mb": rss.base / 1e6,
        "rss_growth_mb": rss.growth / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200)
    r = measure(ap.parse_args().mb)
    print(f"video of {r['mb']:.0f} MB verified through the service (SIGNED_ORIGINAL)")
    print(f"  VerifyFile:                {r['verify_mb_s']:8.0f} MB/s")
    print(f"  hashlib.sha256 from disk:  {r['sha256_mb_s']:8.0f} MB/s")
    print(f"  ratio verify/sha256:       {r['verify_mb_s'] / r['sha256_mb_s']:8.3f}")
    print(
        f"  server RSS {r['rss_base_mb']:.0f} MB at rest, peak growth {r['rss_growth_mb']:.0f} MB"
        f" ({r['rss_growth_mb'] / r['mb']:.2f} MB per MB uploaded)"
    )
    write_results(
        "video_service",
        [
            Ratio(
                "VerifyFile of a signed video",
                r["verify_mb_s"],
                "SHA-256 from disk",
                r["sha256_mb_s"],
                "MB/s",
            )
        ],
        note=f"server RSS peak growth {r['rss_growth_mb']:.0f} MB",
    )


if __name__ == "__main__":
    main()
