"""The C2PA reader's time on TIFFs of many IFD entries, given the file (as before the
IFD bound: every TIFF went to the reader) and through `read_c2pa` (the bound: a TIFF of
more than MAX_TIFF_IFD_UNITS IFDs and entries is refused unread, TooLarge), alternated in
one window, on: the review's file (a first IFD of 65,535 entries, each its own tag; and
with tags repeated), 4 SubIFD offsets naming
one IFD of 65,535 entries, a file at the limit, and the shared DNG. Prints the median of
each over REPEATS.
Usage: PYTHONPATH=. .venv/bin/python bench/bench_tiff_ifds.py
"""

from __future__ import annotations

import json
import statistics
import time

from results import no_options  # bench/results.py, next to this script

from provenance.c2pa import ReaderPool, read_c2pa, reader_settings
from provenance.c2pa.container import MAX_TIFF_IFD_UNITS, tiff_ifd_count
from provenance.c2pa.reader import C2paLimits
from tests.test_tiff_ifds import DNG, _tiff

REPEATS = 5


def main() -> int:
    plain = tiff_ifd_count(_tiff())
    files = {
        "first IFD of 65,535 entries": (_tiff(extra=65_535 - 20, distinct=True), "image/tiff"),
        "first IFD of 65,535, tags repeated": (_tiff(extra=65_535 - 20), "image/tiff"),
        "4 SubIFDs naming 65,535 entries": (_tiff(subifds=4, sub_entries=65_535), "image/tiff"),
        f"at the limit ({MAX_TIFF_IFD_UNITS:,})": (
            _tiff(extra=MAX_TIFF_IFD_UNITS - plain),
            "image/tiff",
        ),
        "shared C.dng": (DNG.read_bytes(), "image/dng"),
    }
    settings, limits = json.dumps(reader_settings(None)), C2paLimits()
    with ReaderPool(workers=1) as pool:
        for name, (data, media_type) in files.items():
            given: list[float] = []
            bounded: list[float] = []
            for _ in range(REPEATS):
                start = time.perf_counter()
                pool.read(
                    data=data,
                    media_type=media_type,
                    settings_json=settings,
                    manifest=None,
                    timeout_s=limits.timeout_s,
                    memory_bytes=limits.memory_bytes,
                )
                given.append(time.perf_counter() - start)
                start = time.perf_counter()
                result = read_c2pa(data, media_type, pool=pool)
                bounded.append(time.perf_counter() - start)
            print(
                f"{name:34} {len(data):>9,} B  reader given it {statistics.median(given):6.3f} s"
                f"  read_c2pa {statistics.median(bounded):6.3f} s  ({result.error_kind or 'read'})"
            )
    return 0


if __name__ == "__main__":
    no_options(__doc__)
    raise SystemExit(main())
