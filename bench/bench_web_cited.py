"""What checking the service's answer adds to an upload through `prov web`:
the SHA-256 of the bytes relayed, taken as they go up, and for a JPEG, PNG, MP4 or MOV
their spool to an unlinked temporary file (for the stripped hash, read only when the
claim cited does not bind the bytes as sent).

A real `prov serve --no-detector` (this checkout), two real `prov web` in front of it:
the checkout --before (default /work/main: no check) and this one. Each uploads a
--mb MiB PNG of noise (hashed and spooled) and a TIFF of as many bytes (hashed only)
to POST /api/v1/verify?detect=0, alternating before and after, --runs times each after
one untimed upload; prints the medians (s) and their ratio, and writes
out/bench/web_cited.json.

Usage: PYTHONPATH=. python bench/bench_web_cited.py [--mb 50] [--runs 5] [--before DIR]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import Ratio, write_results  # noqa: E402  (bench/results.py, next to this script)

from tests.conftest import start_server, start_web  # noqa: E402


def _noise(mb: int, fmt: str) -> bytes:
    """An image of random pixels about ``mb`` MiB uncompressed, as ``fmt`` (PNG or TIFF)."""
    side = int((mb * 1024 * 1024 / 3) ** 0.5)
    pixels = np.random.default_rng(5).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    if fmt == "PNG":
        Image.fromarray(pixels).save(buf, fmt, compress_level=0)
    else:
        Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def _upload(base: str, name: str, data: bytes) -> float:
    with httpx.Client(base_url=base, timeout=600) as http:
        t = time.perf_counter()
        r = http.post("/api/v1/verify", files={"file": (name, data)}, params={"detect": "0"})
        took = time.perf_counter() - t
    assert r.status_code == 200 and r.json()["status"] == "UNSIGNED", r.text[:300]
    return took


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--before", type=Path, default=Path("/work/main"))
    args = ap.parse_args()
    files = {"png": _noise(args.mb, "PNG"), "tiff": _noise(args.mb, "TIFF")}
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "prov.db", "--no-detector")
        webs = {
            "before": start_web(server.address, root=args.before),
            "after": start_web(server.address),
        }
        rows = []
        try:
            for kind, data in files.items():
                times: dict[str, list[float]] = {"before": [], "after": []}
                for web in webs.values():
                    _upload(web.address, f"noise.{kind}", data)  # untimed
                for _ in range(args.runs):
                    for which, web in webs.items():
                        times[which].append(_upload(web.address, f"noise.{kind}", data))
                before, after = (statistics.median(times[w]) for w in ("before", "after"))
                print(
                    f"{kind} {len(data) / 1e6:.1f} MB: before {before:.3f} s, after"
                    f" {after:.3f} s (x{after / before:.3f}, +{(after - before) * 1000:.0f} ms);"
                    f" runs before {[round(t, 3) for t in times['before']]}, after"
                    f" {[round(t, 3) for t in times['after']]}",
                    flush=True,
                )
                mb = len(data) / 1e6
                rows.append(
                    Ratio(f"upload_{kind}_{args.mb}mb", mb / after, "before", mb / before, "MB/s")
                )
        finally:
            for web in webs.values():
                web.stop()
            server.stop()
    write_results("web_cited", rows)


if __name__ == "__main__":
    main()
