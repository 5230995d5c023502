"""What `clients.cited.check_cited` adds to `prov verify` and `prov scan`: the check
that the claim a verdict rests on binds the bytes sent.

1. A 256 MiB file whose claim binds its plain SHA-256 (every file without Content
   Credentials): the check is a comparison of the hash the upload computed anyway;
   timed against the SHA-256 of the file the upload already does.
2. A 128 MiB PNG with a C2PA manifest store (a `caBX` chunk) whose claim binds the
   SHA-256 without it: the check reads the file again and strips the store
   (`clients.cited._content_sha256`), only when the first comparison fails.

Median of 5 runs each, after one untimed run; ratios of the upload's hashing plus the
check against the hashing alone, written to out/bench/cited.json. Usage:
PYTHONPATH=. python bench/bench_cited.py
"""

from __future__ import annotations

import hashlib
import struct
import tempfile
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# bench/results.py, next to this script
from results import Ratio, median_seconds, no_options, sha256_file, upload_plus_check, write_results

from clients.cited import _content_sha256, check_cited
from provenance.core.claims import Verdict


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _report(file_sha: bytes, bound: bytes) -> Any:
    claim = SimpleNamespace(
        hard_binding=SimpleNamespace(sha256=bound), device_id=bytes(32), sequence=1
    )
    return SimpleNamespace(
        status=Verdict.SIGNED_ORIGINAL,
        evidence=SimpleNamespace(
            file=SimpleNamespace(sha256=file_sha),
            claim=SimpleNamespace(claim=claim),
            hash_match=True,
        ),
    )


def main() -> None:
    no_options(__doc__)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain.bin"
        plain.write_bytes(bytes(range(256)) * (1 << 20))  # 256 MiB
        sha = sha256_file(plain)
        report = _report(sha, sha)
        upload = median_seconds(lambda: sha256_file(plain), 5)
        check = median_seconds(lambda: check_cited(report, sha, plain, "bench"), 1001)
        print(
            f"plain 256 MiB: the upload's SHA-256 {upload * 1e3:.0f} ms;"
            f" check_cited {check * 1e6:.2f} us ({check / upload:.1e} of it)"
        )
        rows.append(_row("plain 256 MiB", 256, upload, check))

        ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
        idat = _chunk(b"IDAT", zlib.compress(b"\0\0"))
        content = b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"zzZz", bytes(128 << 20)) + idat
        store = _chunk(b"caBX", b"jumb" + bytes(64) + b"c2pa")
        png = Path(tmp) / "c2pa.png"
        png.write_bytes(content + store + _chunk(b"IEND", b""))
        bound = hashlib.sha256(content + _chunk(b"IEND", b"")).digest()
        assert _content_sha256(png) == bound, "the store was not stripped"
        sent = sha256_file(png)
        upload = median_seconds(lambda: sha256_file(png), 5)
        check = median_seconds(lambda: check_cited(_report(sent, bound), sent, png, "bench"), 5)
        print(
            f"C2PA PNG 128 MiB: the upload's SHA-256 {upload * 1e3:.0f} ms;"
            f" check_cited {check * 1e3:.0f} ms ({check / upload:.2f}x it)"
        )
        rows.append(_row("C2PA PNG 128 MiB", 128, upload, check))
    write_results("cited", rows, note="client-side check that a cited claim binds the bytes")


def _row(name: str, mib: int, upload: float, check: float) -> Ratio:
    """The upload's hashing plus the check against the hashing alone, MiB/s."""
    return upload_plus_check("check_cited", name, mib, "MiB/s", upload, check)


if __name__ == "__main__":
    main()
