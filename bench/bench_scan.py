"""Batch scanning and near-duplicate search against baselines measured in the same run.

1. ``prov scan`` of a folder of N small JPEGs (default 10^4, 160x120, made once and kept
   in a temporary folder) with W local workers against a real ``prov serve`` child process
   on loopback, against the bare work on the same files measured in the same run, each
   round alternated with the scan: decode + PDQ (`image_pdq`: the decode at PDQ's scale
   and PDQ's 8 dihedral hashes from one DCT, which the scan sends, as bytes; not
   `inspect_image`, whose facts and hash objects are no decode or PDQ work) of the files'
   bytes already in memory, in one process; the issue's baseline is W times that rate.
   Also shown: the same bare work split over W processes started together (what this
   machine gives W processes now: under load, less than W times one), the CPU seconds
   per file of the whole scan (workers, driver and server) against those of the bare
   work (which a busy machine skews less), and a per-file breakdown of where the scan's
   CPU goes beyond the bare work (measured in this process on the same files).
2. Near-duplicate query time at M registered PDQ hashes (default 10^6): `MihIndex`
   (multi-index hashing) against the exhaustive `PdqIndex`, over queries half of which
   are planted neighbours at 0..31 bits; recall is the share of the exhaustive answers
   that MIH returns (1.0 by construction).

Usage: python bench/bench_scan.py [--files 10000] [--hashes 1000000] [--queries 300]
    [--workers N] [--rounds 3]
Scan and baselines are run --rounds times, alternated, and the medians reported.
Prints figures and ratios; these machines are noisy, so only ratios from one run mean much.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import pickle
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import forkserver
from pathlib import Path

import numpy as np
import psutil
from PIL import Image
from prov_server import served, wait_settled  # bench/prov_server.py, next to this script
from results import Ratio, write_results  # bench/results.py, next to this script

from clients.api import ProvenanceClient, Query, _lookup_request
from clients.scan.engines import LocalEngine, _worker_context
from clients.scan.hashing import decode_ahead, measure, read_ahead
from clients.scan.pipeline import DEFAULT_BATCH, run_scan
from clients.scan.report import csv_row, row_key
from clients.scan.rows import measured_row
from clients.scan.sources import FileItem, ScanLimits, iter_items
from clients.scan.worker import ScanConfig, query
from provenance.c2pa.container import may_hold_manifest_store
from provenance.core.binding import PerceptualHash
from provenance.core.errors import TransportError
from provenance.index.mih import MihIndex
from provenance.index.pdq_index import PdqIndex
from provenance.media.assets import AssetLimits, image_pdq
from provenance.media.image import SNIFF_BYTES, sniff_media_type
from provenance.server.rpc import ServerConfig, VerificationServicer
from provenance.server.service import ProvenanceService, ServiceConfig
from provenance.v1 import provenance_pb2 as pb


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


def _bare(datas: list[bytes]) -> None:
    limits = AssetLimits()
    for data in datas:
        image_pdq(data, limits)


def bare_pass(datas: list[bytes]) -> tuple[float, float]:
    """Seconds and CPU seconds of decode + PDQ (`image_pdq`) of every file's bytes,
    already in memory, in this process."""
    t, cpu = time.perf_counter(), time.process_time()
    _bare(datas)
    return time.perf_counter() - t, time.process_time() - cpu


def _bare_share(paths: list[str], start_at: float) -> tuple[float, float]:
    """In a pool process: read the files, wait for ``start_at`` (time.time()), run the bare
    work; (start, end) times."""
    datas = [Path(p).read_bytes() for p in paths]
    _bare(datas[:1])  # first-call costs (decoder plugins), as the scan's workers pay once
    time.sleep(max(0.0, start_at - time.time()))
    t = time.time()
    _bare(datas)
    return t, time.time()


def fork_server_start(workers: int) -> float:
    """Seconds from a first pool of scan workers to its first answer: the fork server's
    start (its imports) and one worker. ``prov scan`` pays this once per command; every
    later pool in this process reuses the fork server, so the scans timed here do not."""
    t = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=_worker_context()) as pool:
        pool.submit(time.time).result()
    return time.perf_counter() - t


def parallel_bare_pass(files: list[Path], workers: int) -> float:
    """Seconds for ``workers`` processes started together to do the bare work of one share
    of the files each."""
    with ProcessPoolExecutor(workers, mp_context=_worker_context()) as pool:
        start_at = time.time() + 3.0  # every process started and its share read by then
        spans = list(
            pool.map(
                _bare_share,
                [[str(f) for f in files[k::workers]] for k in range(workers)],
                [start_at] * workers,
            )
        )
    return max(e for _, e in spans) - min(s for s, _ in spans)


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process (the scan's driver) and of the scan's workers: the
    multiprocessing fork server's reaped children (the workers are its children, not
    ours; it runs from the first scan to our exit) and itself."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    driver = own.ru_utime + own.ru_stime
    workers = 0.0
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)  # private: no public way
    if pid is not None:
        t = psutil.Process(pid).cpu_times()
        workers = t.user + t.system + t.children_user + t.children_system
    return driver, workers


def _server_cpu(proc: subprocess.Popen[str]) -> float:
    t = psutil.Process(proc.pid).cpu_times()
    return float(t.user + t.system)


def one_scan(folder: Path, n: int, workers: int) -> dict[str, float]:
    """One ``prov scan`` of ``folder`` against a fresh ``prov serve`` child: wall seconds,
    CPU seconds of driver, workers and server, seconds to the first rows and after the
    last rows (the reports)."""
    with tempfile.TemporaryDirectory() as tmp:
        with served(Path(tmp) / "scan.db") as (proc, address):
            with ProvenanceClient(address) as warm:
                warm.lookup([Query("warm-up", bytes(32))])
            wait_settled(proc)  # the server's start done (its decoder process's imports)
            times: list[float] = []
            driver0, workers0 = cpu_seconds()
            server0 = _server_cpu(proc)
            t0 = time.monotonic()
            result = run_scan(
                [str(folder)],
                Path(tmp) / "scan.jsonl",
                ScanConfig(server=address),
                LocalEngine(workers),
                on_rows=lambda rows: times.append(time.monotonic()),
            )
            end = time.monotonic()
            server1 = _server_cpu(proc)
            driver1, workers1 = cpu_seconds()
    assert result.scanned == n, f"scanned {result.scanned} of {n} files"
    return {
        "wall": result.elapsed_s,
        "driver": driver1 - driver0,
        "workers": workers1 - workers0,
        "server": server1 - server0,
        "first_rows": times[0] - t0,
        "after_last_rows": end - times[-1],
    }


def breakdown(
    folder: Path, files: list[Path], server: subprocess.Popen[str], address: str, rounds: int = 5
) -> dict[str, float]:
    """Microseconds of CPU per file of each part of a scan's work, in this process, on the
    same files: what a worker does (measure: open, read, SHA-256, sniffing, decode + PDQ;
    then the Lookup and the row), what the server does per file, and what the driver does
    (walk the folder, pickled rows in, the journal line, the CSV row and counts). The parts
    are timed one after another, ``rounds`` times over (so a change of load hits all of
    them alike), and the median of each reported."""
    limits = AssetLimits()
    per_call = DEFAULT_BATCH  # files per Lookup and per batch, as a scan sends them
    paths = [str(f) for f in files]
    datas = [f.read_bytes() for f in files]
    items = [FileItem(p, p, len(d)) for p, d in zip(paths, datas, strict=True)]
    n = len(files)
    measured = [measure(i, limits) for i in items]
    queries = [query(m) for m in measured]
    proc = psutil.Process(server.pid)
    client = ProvenanceClient(address)
    answers = [
        r for k in range(0, n, per_call) for _, r in client.lookup_wire(queries[k : k + per_call])
    ]
    reports = [r for r in answers if not isinstance(r, TransportError)]
    assert len(reports) == n, "the server could not answer every file"
    rows = [measured_row(m, None, r) for m, r in zip(measured, reports, strict=True)]
    batches = [rows[k : k + per_call] for k in range(0, n, per_call)]
    walked = sum(1 for _ in iter_items([str(folder)], ScanLimits()))

    def read() -> None:  # as a worker reads a batch's small files
        for k in range(0, n, per_call):
            read_ahead(items[k : k + per_call], limits)

    def sha() -> None:
        for d in datas:
            hashlib.sha256(d).digest()

    def sniff() -> None:
        for d in datas:
            mt = sniff_media_type(d[:SNIFF_BYTES])
            may_hold_manifest_store(d, mt or "")

    def measure_all() -> None:
        for i in items:
            measure(i, limits)

    def measure_read_ahead() -> None:
        for k in range(0, n, per_call):
            batch = items[k : k + per_call]
            read = read_ahead(batch, limits)
            decoded = decode_ahead(read, limits)
            for i in batch:
                measure(i, limits, read.pop(i.ref, None), decoded.pop(i.ref, None))

    def lookups() -> None:  # as a scan's worker asks: an answer per file, not converted
        for k in range(0, n, per_call):
            client.lookup_wire(queries[k : k + per_call])

    def row_all() -> None:  # the row's report fields read from the wire report
        for m, r in zip(measured, reports, strict=True):
            measured_row(m, None, r)

    def pickled() -> None:
        for b in batches:
            pickle.loads(pickle.dumps(b, pickle.HIGHEST_PROTOCOL))

    def journal() -> None:
        for r in rows:
            json.dumps(r, separators=(",", ":"))

    def table() -> None:
        w = csv.writer(io.StringIO())
        for r in rows:
            w.writerow(csv_row(r))
            row_key(r)

    def walk() -> None:
        for _ in iter_items([str(folder)], ScanLimits()):
            pass

    parts: list[tuple[str, Callable[[], None], int]] = [
        ("open + read (a batch read ahead)", read, n),
        ("SHA-256", sha, n),
        ("sniff + C2PA marker search", sniff, n),
        ("decode + PDQ (bare)", lambda: _bare(datas), n),
        ("measure() (all of the above), file by file", measure_all, n),
        ("the same, a batch read and decoded ahead (as a worker)", measure_read_ahead, n),
        ("Lookup, worker CPU (request, reply)", lookups, n),
        ("row from the reply", row_all, n),
        ("rows pickled to the driver and back", pickled, n),
        ("journal line (JSON)", journal, n),
        ("CSV row + counts", table, n),
        ("walk the folder (per item)", walk, walked),
    ]
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, fn, count in parts:
            server0 = proc.cpu_times()
            t = time.process_time()
            fn()
            times.setdefault(name, []).append((time.process_time() - t) / count * 1e6)
            if fn is lookups:
                server1 = proc.cpu_times()
                spent = server1.user + server1.system - server0.user - server0.system
                times.setdefault("Lookup, server CPU", []).append(spent / count * 1e6)
    client.close()
    return {name: statistics.median(v) for name, v in times.items()}


def bench_scan(n: int, workers: int, rounds: int) -> tuple[list[Ratio], str]:
    """The scan's ratios, and its CPU per file and Lookup figures as a sentence."""
    folder = photo_folder(n)
    files = sorted(folder.glob("*.jpg"))
    sha_pass(files)  # warm the page cache
    sha_s, size = sha_pass(files)
    datas = [f.read_bytes() for f in files]
    _bare(datas[:1])
    started = fork_server_start(workers)
    runs = []  # (bare s, bare CPU s, parallel bare s, scan figures) per round
    for _ in range(rounds):  # baselines and scan alternated: all see the same machine
        runs.append(
            (*bare_pass(datas), parallel_bare_pass(files, workers), one_scan(folder, n, workers))
        )

    def med(f: Callable[[tuple[float, float, float, dict[str, float]]], float]) -> float:
        return statistics.median(f(r) for r in runs)

    bare_rate = med(lambda r: n / r[0])
    bare_cpu_us = med(lambda r: r[1] / n * 1e6)
    par_rate = med(lambda r: n / r[2])
    scan_rate = med(lambda r: n / r[3]["wall"])
    part_us = {}
    for k in ("workers", "driver", "server"):
        part_us[k] = statistics.median(r[3][k] / n * 1e6 for r in runs)
    scan_cpu_us = med(lambda r: sum(r[3][k] for k in ("workers", "driver", "server")) / n * 1e6)
    print(
        f"scan of {n} JPEGs ({size / 1e6:.1f} MB), {workers} workers, a prov serve child on"
        f" loopback, median of {rounds}:"
    )
    print(f"  prov scan        {scan_rate:9.1f} files/s  {size / 1e6 * scan_rate / n:8.2f} MB/s")
    print(f"  hashlib SHA-256  {n / sha_s:9.1f} files/s  {size / 1e6 / sha_s:8.2f} MB/s")
    print(
        f"  decode+PDQ alone {bare_rate:9.1f} files/s in one process, x{workers} ="
        f" {bare_rate * workers:.1f}; in {workers} processes at once {par_rate:.1f}"
    )
    print(f"  ratio scan / ({workers} x decode+PDQ): {scan_rate / (bare_rate * workers):.3f}")
    print(f"  ratio scan / decode+PDQ in {workers} processes at once: {scan_rate / par_rate:.3f}")
    print(
        f"  fork server start and a first worker: {started:.2f} s (once per prov scan command;"
        " not in these figures: this process reuses it)"
    )
    print(
        f"  scan wall: first rows after {med(lambda r: r[3]['first_rows']):.2f} s, reports"
        f" after the last rows {med(lambda r: r[3]['after_last_rows']):.2f} s,"
        f" of {med(lambda r: r[3]['wall']):.2f} s"
    )
    print(
        f"  CPU per file: scan {scan_cpu_us:.0f} us (workers {part_us['workers']:.0f}, driver"
        f" {part_us['driver']:.0f}, server {part_us['server']:.0f}), decode+PDQ alone"
        f" {bare_cpu_us:.0f} us: ratio {bare_cpu_us / scan_cpu_us:.3f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        with served(Path(tmp) / "scan.db") as (proc, address):
            wait_settled(proc)
            parts = breakdown(folder, files[: min(n, 1024)], proc, address)
    print("  per-file CPU of each part, this process, same files (us):")
    for name, us in parts.items():
        print(f"    {name:<44} {us:8.1f}")
    note = (
        f"scan CPU per file {scan_cpu_us:.0f} us (workers {part_us['workers']:.0f}, driver"
        f" {part_us['driver']:.0f}, server {part_us['server']:.0f}), decode+PDQ alone"
        f" {bare_cpu_us:.0f} us; Lookup per file: server"
        f" {parts['Lookup, server CPU']:.0f} us, worker"
        f" {parts['Lookup, worker CPU (request, reply)']:.0f} us"
    )
    ratios = [
        Ratio(
            f"prov scan, {workers} workers",
            scan_rate,
            f"{workers} x decode+PDQ",
            bare_rate * workers,
            "files/s",
        ),
        Ratio(
            f"prov scan, {workers} workers",
            scan_rate,
            f"decode+PDQ in {workers} processes at once",
            par_rate,
            "files/s",
        ),
        Ratio(
            "prov scan, files per CPU second",
            1e6 / scan_cpu_us,
            "decode+PDQ per CPU second",
            1e6 / bare_cpu_us,
            "files/cpu-s",
        ),
    ]
    return ratios, note


def bench_stored(files: list[Path], stored: int, rounds: int) -> tuple[float, float, int]:
    """Server CPU per file of the Lookup (microseconds; the handler's work on the scan's
    requests of DEFAULT_BATCH files, in this process, without the gRPC shell) with an empty
    near-duplicate index and with one holding ``stored`` random PDQ hashes (a large log;
    none near the files, so both answer UNSIGNED), medians of ``rounds``; and the
    perceptual hashes searched per file."""
    limits = AssetLimits()
    measured = [measure(FileItem(str(f), str(f), f.stat().st_size), limits) for f in files]
    queries = [query(m) for m in measured]
    per_call = DEFAULT_BATCH
    requests = [
        _lookup_request(queries[k : k + per_call], True) for k in range(0, len(queries), per_call)
    ]
    searched = sum(len(q.soft_bindings) + len(q.pdq_dihedral) // 32 for q in queries)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(1) as pool:
        service = ProvenanceService(ServiceConfig(db=Path(tmp) / "p.db", log_key=Path(tmp) / "k"))
        handler = VerificationServicer(service, ServerConfig(), pool)

        def per_file() -> tuple[float, list[bytes]]:
            t = time.process_time()
            replies = [handler._lookup(r, time.monotonic() + 600, 600) for r in requests]
            return (time.process_time() - t) / len(files) * 1e6, [
                x.report.SerializeToString() for r in replies for x in r.results
            ]

        try:
            per_file()  # first-call costs
            empty = [per_file() for _ in range(rounds)]
            rng = np.random.default_rng(7)
            words = rng.integers(0, 2**63, (stored, 4), dtype=np.uint64, endpoint=True)
            service.pdq.add_arrays(np.arange(stored, dtype=np.int64) + 2**40, words)
            service.pdq.wait_warm()
            full = [per_file() for _ in range(rounds)]
        finally:
            service.close()
    verdicts = {pb.VerificationReport.FromString(r).status for _, rs in empty + full for r in rs}
    assert verdicts == {pb.Verdict.Value("UNSIGNED")}, verdicts
    return (
        statistics.median(us for us, _ in empty),
        statistics.median(us for us, _ in full),
        round(searched / len(files)),
    )


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
    t = time.perf_counter()  # as a Lookup asks: the 8 hashes of 32 files at once
    many = [r for k in range(0, queries, 256) for r in mih.search_many(qs[k : k + 256])]
    many_s = (time.perf_counter() - t) / queries
    relevant = sum(len(w) for w in want)
    found = sum(len(set(w) & set(g)) for w, g in zip(want, got, strict=True))
    print(f"near-duplicate search at {m:,} PDQ hashes, {queries} queries (radius 31):")
    print(f"  exhaustive PdqIndex  {exact_s * 1e3:8.3f} ms/query  (load {add_exact:.1f} s)")
    print(f"  MihIndex             {mih_s * 1e3:8.3f} ms/query  (load and build {add_mih:.1f} s)")
    print(f"  MihIndex, 256 at once {many_s * 1e3:7.3f} ms/query  (search_many, as a Lookup)")
    print(
        f"  speed-up {exact_s / mih_s:.1f}x;"
        f" recall {found}/{relevant} = {found / max(relevant, 1):.4f};"
        f" identical answers: {got == want} (256 at once: {many == want})"
    )
    return [
        Ratio(
            f"PDQ near-duplicate query (MIH), {m:,} hashes",
            1 / mih_s,
            "exhaustive scan",
            1 / exact_s,
            "queries/s",
        ),
        Ratio(
            f"PDQ near-duplicate queries (MIH), 256 at once, {m:,} hashes",
            1 / many_s,
            "one at a time",
            1 / mih_s,
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
    ap.add_argument(
        "--stored",
        type=int,
        default=0,
        help="also time the server's Lookup work per file against a near-duplicate index of"
        " this many stored PDQ hashes (e.g. 1000000), against an empty one (0: skip)",
    )
    a = ap.parse_args()
    rows, note = bench_scan(a.files, a.workers, a.rounds)
    if a.stored:
        files = sorted(photo_folder(a.files).glob("*.jpg"))[:1024]
        empty, full, searched = bench_stored(files, a.stored, a.rounds)
        print(
            f"Lookup, server CPU per file ({searched} perceptual hashes searched each; the"
            f" handler in this process): {empty:.0f} us with an empty index, {full:.0f} us"
            f" with {a.stored:,} stored hashes"
        )
        rows.append(
            Ratio(
                f"Lookup with {a.stored:,} stored hashes, files per server CPU second",
                1e6 / full,
                "the same with an empty index",
                1e6 / empty,
                "files/cpu-s",
            )
        )
        note += f"; Lookup server CPU per file {full:.0f} us at {a.stored:,} stored hashes"
    write_results("scan", rows + bench_index(a.hashes, a.queries), note)


if __name__ == "__main__":
    main()
