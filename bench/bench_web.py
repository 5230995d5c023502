"""What the web front-end costs on an upload, against the gRPC upload in the same run.

One service (gRPC on loopback) and the web app in front of it (uvicorn on loopback).
The same file is verified three ways: ``ProvenanceClient.verify_file`` (1 MiB gRPC
chunks, the baseline), ``POST /api/v1/verify`` (multipart, parsed as it streams and
relayed to the service) and ``hashlib.sha256`` over the bytes in memory. Also reports
the web process's resident memory growth during the HTTP uploads: the web stores no
file, so it should stay near the 8 MiB it may hold plus the relay queue.

Usage: python bench/bench_web.py [--mb 128] [--rounds 3] [--json out/bench_web.json]
Prints ratios; these machines are noisy, so only ratios from one run mean much.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
from results import Ratio, write_results  # bench/results.py, next to this script

from clients.api import ProvenanceClient
from provenance.core.errors import ProvenanceError
from provenance.server.rpc import ServerConfig, create_server
from provenance.server.service import ProvenanceService, ServiceConfig
from provenance.web.app import WebConfig
from provenance.web.serve import start_web


def _best(rounds: int, fn: Callable[[], object]) -> float:
    """Fastest of ``rounds`` runs of ``fn()``, in seconds."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _sha256_seconds(path: Path, rounds: int) -> float:
    """Best time of hashlib.sha256 over the file's bytes held in memory."""
    data = path.read_bytes()
    return _best(rounds, lambda: hashlib.sha256(data).digest())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=128, help="size of the uploaded file, MiB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path("out/bench_web.json"))
    args = ap.parse_args()
    me = psutil.Process()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        service = ProvenanceService(ServiceConfig(db=work / "b.db", log_key=work / "k.pem"))
        server, port = create_server("127.0.0.1:0", service, ServerConfig())
        web = start_web("127.0.0.1:0", WebConfig(f"127.0.0.1:{port}", uploads_per_minute=0))
        try:
            big = work / "clip.mp4"  # random bytes behind an MP4 header: upload and hashing cost
            with big.open("wb") as f:
                f.write(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2")
                for _ in range(args.mb):
                    f.write(os.urandom(1 << 20))
            size = big.stat().st_size
            t_hash = _sha256_seconds(big, args.rounds)

            def grpc_upload() -> None:
                # not a decodable video: the service says so after hashing it (the timed part)
                with (
                    ProvenanceClient(f"127.0.0.1:{port}") as c,
                    contextlib.suppress(ProvenanceError),
                ):
                    c.verify_file(big)

            statuses: list[int] = []

            def http_upload() -> None:
                with (
                    httpx.Client(base_url=f"http://{web.address}", timeout=600) as h,
                    big.open("rb") as f,
                ):
                    r = h.post("/api/v1/verify", files={"file": ("clip.mp4", f)})
                    statuses.append(r.status_code)

            t_grpc = _best(args.rounds, grpc_upload)
            rss0 = me.memory_info().rss
            t_http = _best(args.rounds, http_upload)
            rss1 = me.memory_info().rss
        finally:
            web.stop()
            server.stop(grace=1).wait()
            service.close()

    mb = size / 1e6
    out = {
        "file_mb": round(mb, 1),
        "sha256_in_memory_mb_s": round(mb / t_hash, 1),
        "grpc_verify_mb_s": round(mb / t_grpc, 1),
        "http_verify_mb_s": round(mb / t_http, 1),
        "ratio_http_to_grpc": round(t_grpc / t_http, 3),
        "http_statuses": statuses,
        "rss_growth_mb_during_http": round((rss1 - rss0) / 1e6, 1),
        "note": "client, web and service share one process here: RSS covers all three",
    }
    print(f"file: {mb:.1f} MB, best of {args.rounds}")
    print(f"hashlib.sha256 in memory:       {out['sha256_in_memory_mb_s']:8.1f} MB/s")
    print(f"VerifyFile over gRPC (baseline): {out['grpc_verify_mb_s']:8.1f} MB/s")
    print(f"POST /api/v1/verify via the web: {out['http_verify_mb_s']:8.1f} MB/s")
    print(f"ratio web/gRPC:                  {out['ratio_http_to_grpc']:8.3f}")
    print(f"RSS growth during HTTP uploads:  {out['rss_growth_mb_during_http']:8.1f} MB")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    write_results(
        "web",
        [
            Ratio(
                "POST /api/v1/verify via prov web",
                mb / t_http,
                "VerifyFile over gRPC",
                mb / t_grpc,
                "MB/s",
            )
        ],
    )


if __name__ == "__main__":
    main()
