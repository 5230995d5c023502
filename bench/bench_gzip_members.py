"""What inflating a gzip body of many members costs `prov log audit --tiles URL`
(`provenance.log.tiledir._gunzip`), against the bare peer: one `zlib` inflate of the real
bytes sent as a single member (per MB of compressed body: linear work is a flat rate). Rates in MB of body per CPU-second, one process, the
median of ``--repeats``.

Bodies: a bgzip-like file of real bytes (this repository's sources, repeated) sent as
members of 64 KiB each, and ``--empty`` empty members (20 bytes each; 838,000 fill the
16 MiB a file may be) before a small file's member. Before 6 December each member was
read from a fresh copy of the rest of the body, so the second's cost grew with the
count squared (80,000 members 2.98 s, 838,000 killed after 15 min); it is linear now.
Writes out/bench/gzip_members.json.

Usage: PYTHONPATH=. python bench/bench_gzip_members.py [--mib 16] [--empty 838000]
"""

from __future__ import annotations

import argparse
import gzip
import time
import zlib
from functools import partial
from pathlib import Path

from results import Ratio, median_seconds, write_results  # bench/results.py, next to this script

from provenance.log.tiledir import _gunzip


def _real_bytes(size: int) -> bytes:
    """``size`` bytes of this repository's Python sources, repeated."""
    root = Path(__file__).resolve().parent.parent
    data = b"".join(p.read_bytes() for p in sorted(root.glob("provenance/**/*.py")))
    return (data * (size // max(len(data), 1) + 1))[:size]


def _bare(body: bytes) -> bytes:
    """One zlib inflate of a single-member gzip body (wbits 31: the gzip wrapper)."""
    return zlib.decompress(body, 31)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mib", type=int, default=16, help="MiB of real bytes (default 16)")
    ap.add_argument("--empty", type=int, default=838_000, help="empty members (default 838000)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each (default 3)")
    args = ap.parse_args()
    real = _real_bytes(args.mib << 20)
    block = 65536
    members = b"".join(
        gzip.compress(real[i : i + block], mtime=0) for i in range(0, len(real), block)
    )
    tail = b"a small file\n"
    empty = gzip.compress(b"", mtime=0) * args.empty + gzip.compress(tail, mtime=0)
    single = gzip.compress(real, mtime=0)
    assert _gunzip(members, "bench") == _bare(single) == real
    assert _gunzip(empty, "bench") == tail
    bare = (
        len(single)
        / 1e6
        / median_seconds(
            lambda: _bare(single), args.repeats, clock=time.process_time, warm_up=False
        )
    )
    rows = []
    for name, body in (
        (f"{len(real) // block} members of 64 KiB", members),
        (f"{args.empty:,} empty members", empty),
    ):
        ours = median_seconds(
            partial(_gunzip, body, "bench"), args.repeats, clock=time.process_time, warm_up=False
        )
        print(f"{name}: {len(body):,} bytes of body, {ours:.3f} s CPU")
        rows.append(
            Ratio(
                path=f"_gunzip, {name}",
                value=len(body) / 1e6 / ours if ours else 0.0,
                baseline_name=f"zlib inflate of the {args.mib} MiB as one member",
                baseline=bare,
                unit="MB of body per CPU-second",
            )
        )
    write_results("gzip_members", rows, note="tiles' Content-Encoding: gzip, any member count")


if __name__ == "__main__":
    main()
