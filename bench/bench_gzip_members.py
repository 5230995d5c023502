"""What inflating a gzip body of many members costs `prov log audit --tiles URL`
(`provenance.log.tiledir._gunzip`), CPU seconds, for two checkouts in one run.

Bodies: ``--empty`` empty members (20 bytes each; 838,000 fill the 16 MiB a file may be)
followed by a small file's member, and a bgzip-like 16 MiB file (real bytes: this
repository's sources and fixtures, repeated) sent as 256 members of 64 KiB each. A
checkout whose `MAX_GZIP_MEMBERS` refuses a body of many members is run with that cap
lifted, to time its loop itself; ``--old-empty`` sets the (smaller) count it is given, as
its cost grows with the count squared.

Usage: PYTHONPATH=. python bench/bench_gzip_members.py --old /work/main --new . \\
    [--empty 838000] [--old-empty 40000]
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import gzip, sys, time
from pathlib import Path
from provenance.log import tiledir
if hasattr(tiledir, "MAX_GZIP_MEMBERS"):
    tiledir.MAX_GZIP_MEMBERS = 10**9
body = Path(sys.argv[1]).read_bytes()
start = time.process_time()
out = tiledir._gunzip(body, "bench")
print(f"{time.process_time() - start:.3f} s CPU, {len(out):,} bytes out")
"""


def _real_bytes(size: int) -> bytes:
    """``size`` bytes of this repository's sources and test fixtures, repeated."""
    root = Path(__file__).resolve().parent.parent
    parts: list[bytes] = []
    got = 0
    for path in sorted(root.glob("provenance/**/*.py")) + sorted(
        Path("/work/shared/fixtures").glob("**/*.json")
    ):
        parts.append(path.read_bytes())
        got += len(parts[-1])
        if got >= size:
            break
    data = b"".join(parts)
    return (data * (size // max(len(data), 1) + 1))[:size]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--empty", type=int, default=838_000)
    ap.add_argument("--old-empty", type=int, default=40_000)
    ap.add_argument("--work", default="/tmp/bench_gzip_members")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    empty = gzip.compress(b"", mtime=0)
    tail = gzip.compress(b"a small file\n", mtime=0)
    real = _real_bytes(256 * 65536)
    bodies = {
        "bgzf": b"".join(
            gzip.compress(real[i : i + 65536], mtime=0) for i in range(0, len(real), 65536)
        ),
        "empty": empty * args.empty + tail,
        "old-empty": empty * args.old_empty + tail,
        "old-empty-x2": empty * (2 * args.old_empty) + tail,
    }
    for name, body in bodies.items():
        (work / name).write_bytes(body)
        print(f"{name}: {len(body):,} bytes of body")
    runs = [
        ("old", args.old, ["bgzf", "old-empty", "old-empty-x2"]),
        ("new", args.new, ["bgzf", "old-empty", "old-empty-x2", "empty"]),
    ]
    for label, checkout, names in runs:
        for name in names:
            result = subprocess.run(
                [sys.executable, "-c", _CHILD, str(work / name)],
                cwd=checkout,
                env={"PYTHONPATH": str(Path(checkout).resolve())},
                capture_output=True,
                text=True,
                check=False,
            )
            print(f"{label} {name}: {(result.stdout or result.stderr).strip()[-300:]}")


if __name__ == "__main__":
    main()
