"""`prov sign`'s measuring of a video (`clients.device.measure`: hard binding, frames
sampled at 1 Hz and PDQ-hashed in the sandboxed decoder) for the code of one or two
checkouts, alternated round by round in the same window.

Since signing checks that the decoded frames came from the hashed bytes (the file's
identity before and after, and a second SHA-256 of it: `clients.device.
_still_the_hashed_bytes`), each signature of a video reads its bytes once more. This
bench times `measure` of a real 720x1280 H.264 clip (ThreatExchange pattern-hd-no-bar,
2.2 MB) and of a 64 MiB one (the clip's frames and a 62 MiB tail that the decoder skips
but the hashes read, the worst case for the extra read) in a fresh process per checkout
and round (the decoder started and one call made before timing). With ``--old``, writes
new/old rate ratios, and always the share of the check in the new code's time
(bench/results.py).

Usage: python bench/bench_sign_video.py [--old /work/main] [--rounds 3] [--calls 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from results import Ratio, write_results  # bench/results.py, next to this script

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "fixtures" / "phash" / "video" / "pattern-hd-no-bar.mp4"
BIG_BYTES = 64 << 20

#: Run in the child, with the checkout first on sys.path: median seconds of `measure`
#: and, where the checkout has it, of the check alone (else null).
CHILD = """
import hashlib, json, os, statistics, sys, time
from pathlib import Path
from clients import device
from provenance.media.video.decode import start_decoder
start_decoder()
path, calls = Path(sys.argv[1]), int(sys.argv[2])
device.measure(path)
times, checks = [], []
check = getattr(device, "_still_the_hashed_bytes", None)
for _ in range(calls):
    t = time.perf_counter()
    device.measure(path)
    times.append(time.perf_counter() - t)
    if check is not None:
        with open(path, "rb") as f:
            before, sha = os.fstat(f.fileno()), hashlib.file_digest(f, "sha256").digest()
            t = time.perf_counter()
            check(path, f, before, sha)
            checks.append(time.perf_counter() - t)
print(json.dumps([statistics.median(times), statistics.median(checks) if checks else None]))
"""


def timed(code: Path, path: Path, calls: int, child: str) -> tuple[float, float | None]:
    """Median seconds of one measure of ``path`` by the checkout ``code``, in a fresh
    process running ``child`` (`CHILD`: `clients.device.measure`), and of its check that
    the frames came from the hashed bytes (None: none there)."""
    done = subprocess.run(
        [sys.executable, "-c", child, str(path), str(calls)],
        capture_output=True,
        text=True,
        cwd=code,
        env={"PYTHONPATH": str(code), "PATH": "/usr/bin:/bin"},
        check=True,
        timeout=600,
    )
    measured, check = json.loads(done.stdout.strip().splitlines()[-1])
    return float(measured), None if check is None else float(check)


def compare(
    codes: dict[str, Path], rounds: int, calls: int, child: str, prefix: str, unit: str
) -> list[Ratio]:
    """`timed` of the two clips for each checkout of ``codes`` ("new", and "old" if
    given) running ``child``, alternated round by round: rows (named ``prefix`` CLIP ...)
    of new/old rates, and of the new code's rate with its check against without (its
    median taken off), in ``unit`` (1/seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.mp4"
        clip = CLIP.read_bytes()
        big.write_bytes(clip + b"\0" * (BIG_BYTES - len(clip)))
        files = {"clip 2.2 MB": CLIP, "clip + tail 64 MiB": big}
        seconds: dict[tuple[str, str], list[float]] = {}
        checks: dict[str, list[float]] = {}
        for r in range(rounds):
            for name in codes if r % 2 == 0 else reversed(list(codes)):
                for label, path in files.items():
                    s, check = timed(codes[name], path, calls, child)
                    seconds.setdefault((name, label), []).append(s)
                    alone = "" if check is None else f"; the check alone {check * 1000:.1f} ms"
                    if check is not None and name == "new":
                        checks.setdefault(label, []).append(check)
                    print(f"round {r + 1} {name:<4} {label:<20} {s * 1000:8.1f} ms{alone}")
    rows = []
    for label in files:
        new = statistics.median(seconds["new", label])
        if label in checks:  # the same process's rate with the check and less its median
            check = statistics.median(checks[label])
            rows.append(
                Ratio(
                    f"{prefix} {label}, with/without check",
                    1 / new,
                    "without",
                    1 / (new - check),
                    unit,
                )
            )
        if "old" in codes:
            old = statistics.median(seconds["old", label])
            rows.append(Ratio(f"{prefix} {label}, new/old", 1 / new, "old", 1 / old, unit))
    return rows


def main(
    doc: str = __doc__ or "",
    child: str = CHILD,
    bench: str = "bench_sign_video",
    prefix: str = "measure",
    unit: str = "signs/s",
) -> None:
    """Parse the command line (usage in ``doc``), `compare` and write the rows as
    ``bench`` (bench/results.py)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout measured as new")
    parser.add_argument("--old", type=Path, help="checkout measured as old, alternated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    codes = {"new": args.code.resolve()}
    if args.old:
        codes["old"] = args.old.resolve()
    rows = compare(codes, args.rounds, args.calls, child, prefix, unit)
    write_results(bench, rows, "medians of rounds; rates are 1/seconds")


if __name__ == "__main__":
    main()
