"""Batch scanning and near-duplicate search against baselines measured in the same run.

1. ``prov scan`` of a folder of N small JPEGs (default 10^4, 160x120, made once and kept
   in a temporary folder) through the local process pool and a real server on loopback,
   against a bare hashlib SHA-256 pass over the same files (read + hash, one process).
   Scanning also decodes and PDQ-hashes each image and looks the hashes up in batches,
   so the ratio says what those cost on top of reading and hashing; a third figure is
   decode + PDQ alone in one process (times the workers: what the pipeline could reach),
   and a fourth the CPU seconds per file of the whole scan (workers, driver and server)
   against those of decode + PDQ alone, which a busy machine does not skew.
2. Near-duplicate query time at M registered PDQ hashes (default 10^6): `MihIndex`
   (multi-index hashing) against the exhaustive `PdqIndex`, over queries half of which
   are planted neighbours at 0..31 bits; recall is the share of the exhaustive answers
   that MIH returns (1.0 by construction).

Usage: python bench/bench_scan.py [--files 10000] [--hashes 1000000] [--queries 300]
    [--workers N] [--rounds 3]
Scan and baseline are run --rounds times, alternated, and the medians reported.
Prints figures and ratios; these machines are noisy, so only ratios from one run mean much.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import resource
import statistics
import tempfile
import time
from multiprocessing import forkserver
from pathlib import Path

import numpy as np
import psutil
from PIL import Image
from results import Ratio, write_results  # bench/results.py, next to this script

from clients.scan.engines import LocalEngine
from clients.scan.pipeline import run_scan
from clients.scan.worker import ScanConfig
from provenance.core.binding import PerceptualHash
from provenance.index.mih import MihIndex
from provenance.index.pdq_index import PdqIndex
from provenance.media.assets import AssetLimits, inspect_image
from provenance.server.rpc import ServerConfig, create_server
from provenance.server.service import ProvenanceService, ServiceConfig


def photo_folder(n: int) -> Path:
    """A folder of n distinct small JPEGs (smooth colour fields with texture), made once."""
    base = Path(tempfile.gettempdir()) / f"prov-bench-scan-{n}"
    folder, done = base / "images", base / "complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2024)
    for k in range(n):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        im = np.asarray(
            Image.fromarray(coarse).resize((160, 120), Image.Resampling.BICUBIC), dtype=np.int16
        )
        im = np.clip(im + rng.integers(-12, 13, im.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "JPEG", quality=85)
        (folder / f"img{k:06d}.jpg").write_bytes(buf.getvalue())
    done.touch()
    return folder


def sha_pass(files: list[Path]) -> tuple[float, int]:
    """Seconds and bytes of reading and SHA-256 hashing every file once."""
    t = time.perf_counter()
    total = 0
    for f in files:
        data = f.read_bytes()
        hashlib.sha256(data).digest()
        total += len(data)
    return time.perf_counter() - t, total


def pdq_pass(files: list[Path]) -> tuple[float, float]:
    """Seconds and CPU seconds to read, SHA-256, decode and PDQ-hash every file in this
    one process."""
    t, cpu = time.perf_counter(), time.process_time()
    for f in files:
        data = f.read_bytes()
        inspect_image(hashlib.sha256(data).digest(), data, AssetLimits())
    return time.perf_counter() - t, time.process_time() - cpu


def cpu_seconds() -> float:
    """CPU seconds of this process and of its reaped children, plus those of the
    multiprocessing fork server and of the workers it forked and reaped (the scan's
    workers are its children, not ours; it runs from the first scan to our exit)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)  # private: no public way
    if pid is not None:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system + t.children_user + t.children_system
    return total


def one_scan(folder: Path, n: int, workers: int) -> tuple[float, float]:
    """Wall seconds and CPU seconds (workers, driver and server) of one ``prov scan`` of
    ``folder`` through a fresh server on loopback."""
    with tempfile.TemporaryDirectory() as tmp:
        service = ProvenanceService(
            ServiceConfig(db=Path(tmp) / "p.db", log_key=Path(tmp) / "k.pem")
        )
        server, port = create_server("127.0.0.1:0", service, ServerConfig(admin_token=None))
        cpu_before = cpu_seconds()
        try:
            result = run_scan(
                [str(folder)],
                Path(tmp) / "scan.jsonl",
                ScanConfig(server=f"127.0.0.1:{port}"),
                LocalEngine(workers),
            )
        finally:
            server.stop(grace=1).wait()
            service.close()
        scan_cpu = cpu_seconds() - cpu_before
    assert result.scanned == n, f"scanned {result.scanned} of {n} files"
    return result.elapsed_s, scan_cpu


def bench_scan(n: int, workers: int, rounds: int) -> list[Ratio]:
    folder = photo_folder(n)
    files = sorted(folder.glob("*.jpg"))
    sha_pass(files)  # warm the page cache for both passes
    sha_s, size = sha_pass(files)
    sample = files[: min(len(files), 1000)]
    runs = []  # (pdq seconds, pdq CPU seconds, scan seconds, scan CPU seconds) per round
    for _ in range(rounds):  # baseline and scan alternated: both see the same machine
        runs.append((*pdq_pass(sample), *one_scan(folder, n, workers)))
    pdq_rate = statistics.median(len(sample) / r[0] for r in runs)
    pdq_cpu_rate = statistics.median(len(sample) / r[1] for r in runs)
    scan_rate = statistics.median(n / r[2] for r in runs)
    scan_cpu_rate = statistics.median(n / r[3] for r in runs)
    print(
        f"scan of {n} JPEGs ({size / 1e6:.1f} MB), {workers} workers, real server on loopback,"
        f" median of {rounds}:"
    )
    print(f"  prov scan        {scan_rate:9.1f} files/s  {size / 1e6 * scan_rate / n:8.2f} MB/s")
    print(
        f"  hashlib SHA-256  {n / sha_s:9.1f} files/s  {size / 1e6 / sha_s:8.2f} MB/s"
        f"  ({sha_s:.2f} s)"
    )
    print(
        f"  decode+PDQ alone {pdq_rate:9.1f} files/s  in one process, x{workers} workers ="
        f" {pdq_rate * workers:.1f} files/s"
    )
    print(f"  ratio scan / SHA-256 pass: {scan_rate * sha_s / n:.3f} (1.0 = as fast as hashing)")
    print(f"  ratio scan / ({workers} x decode+PDQ): {scan_rate / (pdq_rate * workers):.3f}")
    print(
        f"  CPU per file: scan (workers, driver, server) {1e3 / scan_cpu_rate:.1f} ms, decode+PDQ"
        f" alone {1e3 / pdq_cpu_rate:.1f} ms: ratio {scan_cpu_rate / pdq_cpu_rate:.3f}"
        " (the share of the scan's CPU that is the bare work; holds under a loaded machine)"
    )
    return [
        Ratio(
            f"prov scan, {workers} workers",
            scan_rate,
            f"{workers} x decode+PDQ",
            pdq_rate * workers,
            "files/s",
        ),
        Ratio(
            "prov scan, files per CPU second",
            scan_cpu_rate,
            "decode+PDQ per CPU second",
            pdq_cpu_rate,
            "files/cpu-s",
        ),
    ]


def _flip(code: np.ndarray, bits: np.ndarray) -> bytes:
    b = np.unpackbits(code)
    b[bits] ^= 1
    return np.packbits(b).tobytes()


def bench_index(m: int, queries: int) -> list[Ratio]:
    rng = np.random.default_rng(99)
    codes = rng.integers(0, 256, (m, 32), dtype=np.uint8)
    mih, exact = MihIndex(), PdqIndex()
    t = time.perf_counter()
    exact.add_many((i, PerceptualHash("pdq", codes[i].tobytes(), 90)) for i in range(m))
    add_exact = time.perf_counter() - t
    t = time.perf_counter()
    mih.add_many((i, PerceptualHash("pdq", codes[i].tobytes(), 90)) for i in range(m))
    mih.search(PerceptualHash("pdq", codes[0].tobytes(), 90))  # builds the tables
    add_mih = time.perf_counter() - t
    qs = []
    for k in range(queries):
        src = codes[rng.integers(m)]
        d = int(rng.integers(0, 32)) if k % 2 == 0 else 0
        code = (
            _flip(src, rng.choice(256, d, replace=False))
            if k % 2 == 0
            else rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
        )
        qs.append(PerceptualHash("pdq", code, 90))
    t = time.perf_counter()
    want = [exact.search(q) for q in qs]
    exact_s = (time.perf_counter() - t) / queries
    t = time.perf_counter()
    got = [mih.search(q) for q in qs]
    mih_s = (time.perf_counter() - t) / queries
    relevant = sum(len(w) for w in want)
    found = sum(len(set(w) & set(g)) for w, g in zip(want, got, strict=True))
    print(f"near-duplicate search at {m:,} PDQ hashes, {queries} queries (radius 31):")
    print(f"  exhaustive PdqIndex  {exact_s * 1e3:8.3f} ms/query  (load {add_exact:.1f} s)")
    print(f"  MihIndex             {mih_s * 1e3:8.3f} ms/query  (load and build {add_mih:.1f} s)")
    print(
        f"  speed-up {exact_s / mih_s:.1f}x;"
        f" recall {found}/{relevant} = {found / max(relevant, 1):.4f};"
        f" identical answers: {got == want}"
    )
    return [
        Ratio(
            f"PDQ near-duplicate query (MIH), {m:,} hashes",
            1 / mih_s,
            "exhaustive scan",
            1 / exact_s,
            "queries/s",
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--hashes", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3, help="scans (and baselines): median")
    a = ap.parse_args()
    rows = bench_scan(a.files, a.workers, a.rounds) + bench_index(a.hashes, a.queries)
    write_results("scan", rows)


if __name__ == "__main__":
    main()
