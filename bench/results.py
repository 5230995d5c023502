"""Ratios every bench writes to `out/bench/<name>.json`, collected by bench/run_all.py.

A row is one measured path against its same-run baseline: ``value`` and ``baseline`` in
the same ``unit`` (a rate: higher is better), ``ratio`` = value / baseline. Only ratios
from one run mean much on a shared machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

#: Where each bench writes its JSON (git-ignored: /out/ in .gitignore); the environment
#: variable PROV_BENCH_RESULTS names another folder (the tests' dry runs use one; set
#: but empty, it is ignored).
RESULTS_DIR = Path(
    os.environ.get("PROV_BENCH_RESULTS") or Path(__file__).resolve().parents[1] / "out" / "bench"
)


def no_options(doc: str | None) -> None:
    """Answer ``--help`` with ``doc`` (the bench's module docstring) and exit 0, or refuse
    any argument (exit 2), for a bench that takes no options: before, such a bench ran
    whole when asked for help."""
    argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()


def median_seconds(
    fn: Callable[[], object],
    runs: int,
    *,
    warm_up: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """The median of ``runs`` timings of ``fn()``, in seconds of ``clock``
    (`time.perf_counter`: wall time; `time.process_time`: this process's CPU), after one
    untimed call when ``warm_up``."""
    if warm_up:
        fn()
    times = []
    for _ in range(runs):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


@dataclass(frozen=True)
class Ratio:
    """One path against its bare peer, both rates in ``unit`` (e.g. calls/s, MB/s)."""

    path: str
    value: float
    baseline_name: str
    baseline: float
    unit: str

    @property
    def ratio(self) -> float:
        """value / baseline (0 when the baseline is 0)."""
        return self.value / self.baseline if self.baseline else 0.0


def sha256_file(path: Path) -> bytes:
    """The SHA-256 digest (32 bytes) of the file at ``path``, read in 1 MiB blocks: the
    hashing an upload of it does anyway, the baseline of `upload_plus_check`."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.digest()


def upload_plus_check(
    check: str, name: str, size: float, unit: str, upload: float, checked: float
) -> Ratio:
    """The row for what a client-side check of an answer (``check``: "check_cited") adds to
    an upload of ``name``: ``size`` (in MB or MiB, as ``unit`` says: "MB/s", "MiB/s") per
    second of the upload's SHA-256 (``upload`` seconds, `sha256_file`) plus the check
    (``checked`` seconds), against ``size`` per second of the SHA-256 alone."""
    return Ratio(
        path=f"upload SHA-256 + {check}, {name}",
        value=size / (upload + checked),
        baseline_name="the upload's SHA-256 alone",
        baseline=size / upload,
        unit=unit,
    )


def write_results(bench: str, rows: list[Ratio], note: str = "") -> Path:
    """Print ``rows`` and write them to RESULTS_DIR/<bench>.json; return the file's path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{bench}.json"
    payload = {
        "bench": bench,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": [round(x, 2) for x in os.getloadavg()],  # at the end: 1, 5, 15 min
        "note": note,
        "rows": [asdict(r) | {"ratio": round(r.ratio, 4)} for r in rows],
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    for r in rows:
        print(
            f"{r.path:<44} {r.value:>11.1f} {r.unit:<10} / {r.baseline_name} {r.baseline:.1f}"
            f" = {r.ratio:.3f}"
        )
    print(f"wrote {out}")
    return out
