"""Still images: what downscale-first PDQ costs in bits, and a 12 MP JPEG verify's CPU and RSS.

1. Bits: every JPEG of the shared PDQ vectors (../shared/fixtures/phash, README.tsv) and
   12-megapixel JPEGs made from them (upscaled, quality 90) hashed at full size and at
   each libjpeg DCT scale (1/2, 1/4, 1/8); Hamming distances grouped by the reduced
   image's shorter side, and those of the scales `provenance.media.image.pdq_scale` picks
   (median and worst bits).
2. Verify: `prov serve --no-detector` in a child process; a device signs a 12 MP JPEG
   (4000 x 3000, quality 90); VerifyFile of it three times, measuring the server's CPU
   seconds (user + system, psutil) and its peak RSS growth per call. Baseline: the bare
   work on the same file in this process, Pillow's full-size decode + `pdqhash.compute`
   (what a verify did before downscale-first decoding), CPU seconds per file.

Rates are files per CPU second; ratio = verify / bare. Usage: python bench/bench_image.py
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pdqhash
import psutil
from PIL import Image
from prov_server import PeakRss, enrolled_server  # bench/prov_server.py, next to this script
from results import Ratio, no_options, write_results  # bench/results.py, next to this script

from clients.api import ProvenanceClient
from clients.cli import main as prov
from provenance.core.binding import hamming
from provenance.core.pdq_core import pdq_hash256
from provenance.media.image import PDQ_MIN_SIDE, pdq_scale

ROOT = Path(__file__).resolve().parents[1]
PHASH = ROOT.parent / "shared" / "fixtures" / "phash"
#: Sources of the 12 MP JPEGs (upscaled to 4000 pixels on the longer side).
BIG_SOURCES = (
    "pdq/bridge-mods/aaa-orig.jpg",
    "pdq/bridge-mods/sharpen-a-lot.jpg",
    "pdq/bridge-mods/blur-a-lot.jpg",
    "pdq/dih/bridge-2-rotate-90.jpg",
    "pdq/labelme-subset/q0122.jpg",
    "pdq/misc-images/small.jpg",
    "python-threatexchange/letterboxed_sample-b.jpg",
)


def jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def upscaled(path: Path, long_side: int = 4000) -> bytes:
    im = Image.open(path).convert("RGB")
    k = long_side / max(im.size)
    return jpeg(im.resize((round(im.width * k), round(im.height * k)), Image.Resampling.LANCZOS))


def hash_at(data: bytes, scale: int) -> tuple[bytes, tuple[int, int]]:
    im = Image.open(io.BytesIO(data))
    if scale > 1:
        im.draft("RGB", (im.width // scale, im.height // scale))
    rgb = np.ascontiguousarray(np.asarray(im.convert("RGB")))
    return pdq_hash256(rgb)[0], (rgb.shape[1], rgb.shape[0])


def bench_bits() -> tuple[str, list[tuple[str, int, int]]]:
    """Print the bit table; return a summary line and (name, scale, bits) of picked scales."""
    files = {str(p.relative_to(PHASH)): p.read_bytes() for p in sorted(PHASH.rglob("*.jp*g"))}
    for name in BIG_SOURCES:
        files[f"12MP<-{name}"] = upscaled(PHASH / name)
    by_side: dict[int, list[int]] = {}
    picked: list[tuple[str, int, int]] = []
    for name, data in files.items():
        full, (w, h) = hash_at(data, 1)
        chosen = pdq_scale(w, h)
        for scale in (2, 4, 8):
            small, size = hash_at(data, scale)
            bits = hamming(full, small)
            for side in (128, 256, 512, 1024):
                if min(size) >= side:
                    by_side.setdefault(side, []).append(bits)
            if scale == chosen:
                picked.append((name, scale, bits))
    print("PDQ bits from the full-size hash, JPEG decoded at a DCT scale (all scales):")
    for side, side_bits in sorted(by_side.items()):
        print(
            f"  reduced shorter side >= {side:4d}: {len(side_bits):3d} hashes, median "
            f"{statistics.median(side_bits):4.1f}, worst {max(side_bits):2d} bits"
        )
    print(f"scales the rule picks (shorter side >= {PDQ_MIN_SIDE}):")
    for name, scale, bits in picked:
        print(f"  {name:<58} 1/{scale}  {bits:2d} bits")
    values = [b for _, _, b in picked]
    summary = (
        f"downscale-first PDQ (shorter side >= {PDQ_MIN_SIDE}) vs full size over {len(values)}"
        f" reduced JPEGs: median {statistics.median(values):g}, worst {max(values)} bits"
    )
    print(summary)
    return summary, picked


def bare_cpu(data: bytes) -> float:
    """CPU seconds of the old path: full-size decode + pdqhash.compute."""
    t0 = time.process_time()
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    pdqhash.compute(rgb)
    return time.process_time() - t0


def bench_verify(data: bytes) -> tuple[float, float, float]:
    """(median server CPU s per verify, median peak RSS growth MB, server RSS at rest MB)."""
    with tempfile.TemporaryDirectory() as tmp, enrolled_server(Path(tmp)) as (proc, address):
        image = Path(tmp) / "12mp.jpg"
        image.write_bytes(data)
        assert prov(["sign", str(image)]) == 0
        server = psutil.Process(proc.pid)
        cpus, growths = [], []
        rest = server.memory_info().rss
        for _ in range(3):
            with PeakRss(server) as rss:
                before = server.cpu_times()
                with ProvenanceClient(address) as c:
                    report = c.verify_file(image)
                after = server.cpu_times()
            assert report.status.value == "SIGNED_ORIGINAL", report.reasons
            cpus.append(after.user + after.system - before.user - before.system)
            growths.append(rss.growth / 1e6)
    return statistics.median(cpus), statistics.median(growths), rest / 1e6


def main() -> None:
    summary, _ = bench_bits()
    data = upscaled(PHASH / "pdq/bridge-mods/aaa-orig.jpg")
    data = jpeg(Image.open(io.BytesIO(data)).resize((4000, 3000), Image.Resampling.LANCZOS))
    bare = statistics.median(bare_cpu(data) for _ in range(3))
    cpu, growth, rest = bench_verify(data)
    print(f"12 MP JPEG (4000x3000, {len(data) / 1e6:.1f} MB), medians of 3:")
    print(f"  bare full-size decode + pdqhash.compute  {bare * 1e3:7.0f} ms CPU")
    print(f"  VerifyFile, server CPU                   {cpu * 1e3:7.0f} ms (goal <= 150 ms)")
    print(f"  server peak RSS growth                   {growth:7.0f} MB (goal <= 150 MB)")
    write_results(
        "image",
        [
            Ratio(
                "VerifyFile of a 12 MP JPEG (server CPU)",
                1 / cpu,
                "full decode+PDQ",
                1 / bare,
                "files/cpu-s",
            )
        ],
        note=f"{summary}; server CPU {cpu * 1e3:.0f} ms per verify, peak RSS growth "
        f"{growth:.0f} MB (server at rest {rest:.0f} MB)",
    )


if __name__ == "__main__":
    no_options(__doc__)
    main()
