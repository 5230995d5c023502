"""What `prov scan --log-key` costs: each verdict citing a logged claim has its receipt
checked here (checkpoint signature by the pinned key, inclusion proof), as `prov verify
--log-key` does for one file.

A real `prov serve` (no detector) and an enrolled device; N images of the shared
detector fixtures (the smallest, copied into one folder), the first half signed with
`prov sign`, the rest unsigned. `prov scan` of the folder in this process (--workers 0,
so only the scan's own work is timed, not a pool's start), without and with --log-key,
alternating, median of 5 runs each after one untimed run of each. Also the cost of the
check alone per signed file, with the checkpoint's signature checked once (the scan's
`EvidenceChecker`) and, for comparison, once per file (`check_evidence` per report).
Written to out/bench/scan_log_key.json. Usage:
PYTHONPATH=. python bench/bench_scan_log_key.py [--files N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from prov_server import enrolled_server  # bench/prov_server.py, next to this script
from results import Ratio, write_results  # bench/results.py, next to this script

from clients.api import ProvenanceClient
from clients.cited import EvidenceChecker, check_evidence
from clients.cli import main as prov
from provenance.core.claims import Verdict

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def _images(n: int) -> list[Path]:
    """The ``n`` smallest JPEG and PNG images of the shared detector fixtures."""
    found = [
        p
        for folder in ("detector", "detector_more")
        for p in (FIXTURES / folder).rglob("*")
        if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file()
    ]
    found.sort(key=lambda p: (p.stat().st_size, str(p)))
    if len(found) < n:
        raise SystemExit(f"only {len(found)} fixture images, {n} asked for")
    return found[:n]


def _scan(folder: Path, report: Path, *extra: str) -> float:
    """Seconds one `prov scan FOLDER` takes, in this process; its report removed first."""
    for p in (report, report.with_suffix(".csv"), report.with_suffix(".html")):
        p.unlink(missing_ok=True)
    t = time.perf_counter()
    rc = prov(["scan", str(folder), "--report", str(report), "--workers", "0", *extra])
    dt = time.perf_counter() - t
    assert rc == 0, rc
    return dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=300, help="images scanned (default 300)")
    files = parser.parse_args().files
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = work / "photos"
        folder.mkdir()
        copies = [
            Path(shutil.copy(p, folder / f"{i:04d}{p.suffix.lower()}"))
            for i, p in enumerate(_images(files))
        ]
        with enrolled_server(work) as (_, address):
            signed = copies[: files // 2]
            assert prov(["sign", *map(str, signed)]) == 0
            for p in signed:  # the sidecars would make the scan upload each file
                Path(f"{p}.prov").unlink()
            with ProvenanceClient(address) as c:
                log_key = c.log_key()[0]
            report = work / "scan.jsonl"
            size = sum(p.stat().st_size for p in copies) / 1e6
            _scan(folder, report)
            _scan(folder, report, "--log-key", log_key)
            plain, pinned = [], []
            for _ in range(5):
                plain.append(_scan(folder, report))
                pinned.append(_scan(folder, report, "--log-key", log_key))
            # the check alone, on the server's answers for the signed files
            with ProvenanceClient(address) as c:
                reports = [c.verify_file(p) for p in signed]
            assert all(r.status is Verdict.SIGNED_ORIGINAL for r in reports)
            t = time.perf_counter()
            checker = EvidenceChecker(log_key)
            for r in reports:
                checker.check(r, address)
            once = (time.perf_counter() - t) / len(reports)
            t = time.perf_counter()
            for r in reports:
                check_evidence(r, log_key, address)
            each = (time.perf_counter() - t) / len(reports)
    bare, keyed = statistics.median(plain), statistics.median(pinned)
    print(f"{files} files ({len(signed)} signed), {size:.1f} MB; os.cpu_count {os.cpu_count()}")
    print(f"scan: {files / bare:.1f} files/s without --log-key, {files / keyed:.1f} with")
    print(f"check per signed file: {once * 1e6:.0f} us (checkpoint once), {each * 1e6:.0f} us")
    write_results(
        "scan_log_key",
        [
            Ratio("prov scan --log-key", files / keyed, "prov scan", files / bare, "files/s"),
            Ratio(
                "check, checkpoint signature once",
                1 / once,
                "checked per file",
                1 / each,
                "files/s",
            ),
        ],
        note=f"{files} images ({len(signed)} signed, {size:.1f} MB), --workers 0, median of 5",
    )


if __name__ == "__main__":
    main()
