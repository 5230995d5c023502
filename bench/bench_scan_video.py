"""`prov scan`'s measuring of a video on disk (`clients.scan.hashing.measure`: SHA-256,
frames sampled at 1 Hz and PDQ-hashed in the sandboxed decoder) for the code of one or
two checkouts, alternated round by round in the same window.

Since the scan checks that the decoded frames came from the hashed bytes (the file's
identity before and after, and a second SHA-256 of it: `clients.files.still_the_file`),
each video scanned is read once more. Timed on the clips of bench/bench_sign_video.py
(2.2 MB 720p, and 64 MiB of which the decoder skips 62), in a fresh process per checkout
and round, the decoder started and one call made before timing (`bench_sign_video.
compare`). With ``--old``, writes new/old rate ratios, and always the share of the
check in the new code's time (bench/results.py).

Usage: python bench/bench_scan_video.py [--old /work/main] [--rounds 3] [--calls 5]
"""

from __future__ import annotations

from bench_sign_video import main  # bench/, next to this script

#: Run in the child, with the checkout first on sys.path: median seconds of `measure`
#: and, where the checkout has it, of the check alone (else null).
CHILD = """
import hashlib, json, os, statistics, sys, time
from clients import files
from clients.scan.hashing import measure
from clients.scan.sources import FileItem
from provenance.media.assets import AssetLimits
from provenance.media.video.decode import start_decoder
start_decoder()
path, calls = sys.argv[1], int(sys.argv[2])
item, limits = FileItem(path, path, 0), AssetLimits()
assert measure(item, limits).soft
times, checks = [], []
check = getattr(files, "still_the_file", None)
for _ in range(calls):
    t = time.perf_counter()
    measure(item, limits)
    times.append(time.perf_counter() - t)
    if check is not None:
        with open(path, "rb") as f:
            before, sha = os.fstat(f.fileno()), hashlib.file_digest(f, "sha256").digest()
            t = time.perf_counter()
            assert check(path, f, before, sha)
            checks.append(time.perf_counter() - t)
print(json.dumps([statistics.median(times), statistics.median(checks) if checks else None]))
"""


if __name__ == "__main__":
    main(__doc__ or "", CHILD, "bench_scan_video", "scan measure", "files/s")
