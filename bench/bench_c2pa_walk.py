"""The walk that bounds what the C2PA reader is given (`read_c2pa`'s boxes, chunks and
IFD entries check, `provenance.c2pa.container.reader_walk_problem`) over a file on disk:
read by position as it walks (`provenance.core.files.FileView`, as `read_c2pa` walks: a
file cut short is an error) against the same walk over a mapping of the file (``mmap``: a
file cut short kills the process with SIGBUS).
Both open the file and take its size each time; the file is page-cached; the time is
CPU time (the system's share included: the reads, the page faults).

Files: a 128 MiB PNG with a C2PA manifest store (a ``caBX`` chunk after 128 MiB of
another chunk: the walk reads 5 chunk headers), the biggest file of the shared C2PA
fixtures that a walk reads (a MOV), and a file at each walk's limit, where it costs
most (MAX_PNG_CHUNKS, MAX_BMFF_BOXES, MAX_WEBP_CHUNKS, MAX_TIFF_IFD_UNITS). Median of
RUNS (more for the fast files), the two alternated, after one untimed walk of each;
walks/s of each and the ratio,
written to out/bench/c2pa_walk.json. Usage: PYTHONPATH=. python bench/bench_c2pa_walk.py
"""

from __future__ import annotations

import mmap
import statistics
import struct
import tempfile
import time
import zlib
from pathlib import Path
from typing import cast

from results import Ratio, no_options, write_results  # bench/results.py

from provenance.c2pa.container import (
    MAX_BMFF_BOXES,
    MAX_PNG_CHUNKS,
    MAX_TIFF_IFD_UNITS,
    MAX_WEBP_CHUNKS,
    reader_walk_problem,
    tiff_ifd_count,
)
from provenance.c2pa.reader import _opened, _walk_problem
from tests.conftest import FIXTURES
from tests.test_bmff_boxes import _webp_with_chunks, _with_boxes
from tests.test_png_chunks import _with_empty_chunks
from tests.test_tiff_ifds import _tiff

#: Timed walks of a file at a limit; a walk of a few headers is timed FAST_RUNS times.
RUNS, FAST_RUNS = 7, 201


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_128mib() -> bytes:
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    idat = _chunk(b"IDAT", zlib.compress(b"\0\0"))
    store = _chunk(b"caBX", b"jumb" + bytes(64) + b"c2pa")
    body = ihdr + _chunk(b"zzZz", bytes(128 << 20)) + idat + store + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _mapped(path: Path, media_type: str) -> str | None:
    """The walk over a mapping of the file (``mmap``)."""
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return reader_walk_problem(cast(bytes, m), media_type)  # a mapping reads as bytes


def _by_position(path: Path, media_type: str) -> str | None:
    """The walk as `read_c2pa` makes it: the file opened once (`_opened`), walked by
    position through that descriptor."""
    with _opened(str(path)) as view:
        return _walk_problem(view, media_type)


def _alternated(path: Path, media_type: str, runs: int) -> tuple[float, float]:
    """Median CPU seconds (this process's, `time.process_time`: on a shared machine a
    walk's wall time is mostly its waits for a core) of ``runs`` walks of ``path`` by
    position and of as many over a mapping, alternated (one of each in turn, after one
    untimed of each), so that a change of the machine's load falls on both."""
    by_position, mapped = [], []
    _by_position(path, media_type)
    _mapped(path, media_type)
    for _ in range(runs):
        start = time.process_time()
        _by_position(path, media_type)
        by_position.append(time.process_time() - start)
        start = time.process_time()
        _mapped(path, media_type)
        mapped.append(time.process_time() - start)
    return statistics.median(by_position), statistics.median(mapped)


def main() -> None:
    no_options(__doc__)
    fixtures = [
        p for p in (FIXTURES / "c2pa").rglob("*") if p.suffix.lower() in {".mp4", ".mov", ".png"}
    ]
    biggest = max(fixtures, key=lambda p: p.stat().st_size)
    plain = tiff_ifd_count(_tiff())
    files = {
        "PNG 128 MiB with a C2PA store": (_png_128mib, "image/png", FAST_RUNS),
        f"shared {biggest.name}": (biggest.read_bytes, "video/quicktime", FAST_RUNS),
        f"PNG at the limit ({MAX_PNG_CHUNKS:,} chunks)": (
            lambda: _with_empty_chunks(MAX_PNG_CHUNKS - 3),
            "image/png",
            RUNS,
        ),
        f"MP4 at the limit ({MAX_BMFF_BOXES:,} boxes)": (
            lambda: _with_boxes(MAX_BMFF_BOXES),
            "video/mp4",
            RUNS,
        ),
        f"WebP at the limit ({MAX_WEBP_CHUNKS:,} chunks)": (
            lambda: _webp_with_chunks(MAX_WEBP_CHUNKS - 1),
            "image/webp",
            RUNS,
        ),
        f"TIFF at the limit ({MAX_TIFF_IFD_UNITS:,} IFD units)": (
            lambda: _tiff(extra=MAX_TIFF_IFD_UNITS - plain),
            "image/tiff",
            RUNS,
        ),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (make, media_type, runs) in files.items():
            path = Path(tmp) / "walked"
            path.write_bytes(make())
            by_position = _by_position(path, media_type)
            assert by_position == _mapped(path, media_type) is None, (name, by_position)
            read, mapped = _alternated(path, media_type, runs)
            print(
                f"{name}: {path.stat().st_size:,} B, by position {read * 1e3:.3f} ms,"
                f" mapped {mapped * 1e3:.3f} ms"
            )
            rows.append(
                Ratio(
                    path=f"walk by position, {name}",
                    value=1 / read,
                    baseline_name="the walk of a mapping (before walk54)",
                    baseline=1 / mapped,
                    unit="walks/s",
                )
            )
    write_results("c2pa_walk", rows, note="read_c2pa's walk bound: pread (FileView) vs mmap")


if __name__ == "__main__":
    main()
