"""`prov web --tiles-dir`: does one client fetching gzipped entry bundles hold up the rest?

A `prov web` subprocess serves a tiled log whose one full entry bundle holds 256 entries
of --entry-kb KiB each (about the largest a log entry may be: 1,000 video frames),
incompressible as PDQ hashes are. Phase 1 (the baseline): one client fetches
``/tlog/checkpoint`` in a loop for --seconds. Phase 2: the same, while --hostile clients
fetch the bundle with ``Accept-Encoding: gzip`` in a loop (compressed anew each time up
to the bundle size `tlogtiles.GZIP_MAX_BYTES`; this one, larger, is sent as it is, as to
any client that does not ask for gzip).
Prints the checkpoint fetches per second and their p50/p99 in each phase, and the ratio
of phase 2 to phase 1 (1.0: the bundles cost the other client nothing), and writes it as
JSON (out/bench/tlog_serve.json); and the bundles the flooding clients got a second and
the refusals (429: over their client's share of tile bytes in flight, `TileShares`; all
of them and the checkpoint client are one client, 127.0.0.1), which they retry at once,
ignoring Retry-After, as a hostile client would.

Usage: nice -n 5 python bench/bench_tlog_serve.py [--seconds 5] [--hostile 4]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prov_server import prov_command, running  # bench/prov_server.py, next to this script
from results import Ratio, write_results  # bench/results.py, next to this script

from provenance.log.checkpoint import LogSigner
from provenance.log.tiles import encode_bundle

ROOT = Path(__file__).resolve().parents[1]


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _fetch(url: str, gzip: bool = False) -> None:
    headers = {"Accept-Encoding": "gzip"} if gzip else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as r:
        r.read()


def _phase(base: str, seconds: float, hostile: int) -> tuple[list[float], int, int]:
    """Latencies (s) of the checkpoint fetches of one client for ``seconds``, with
    ``hostile`` clients fetching the gzipped bundle meanwhile; and the bundles they got
    and the refusals (429 or 503) they met."""
    stop = threading.Event()
    counts = {"got": 0, "refused": 0}

    def flood() -> None:
        while not stop.is_set():
            try:
                _fetch(f"{base}/tlog/tile/entries/000", gzip=True)
                counts["got"] += 1
            except urllib.error.HTTPError as e:
                if e.code not in (429, 503):
                    raise
                counts["refused"] += 1

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(hostile)]
    for t in threads:
        t.start()
    time.sleep(0.5 if hostile else 0)
    took: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        _fetch(f"{base}/tlog/checkpoint")
        took.append(time.perf_counter() - t0)
    stop.set()
    for t in threads:
        t.join()
    return took, counts["got"], counts["refused"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--hostile", type=int, default=4)
    ap.add_argument("--entry-kb", type=int, default=52)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "tile/entries").mkdir(parents=True)
        entry = os.urandom(args.entry_kb * 1024)
        (folder / "tile/entries/000").write_bytes(encode_bundle([entry] * 256))
        # a signed note, as `prov web` serves nothing else at /tlog/checkpoint (a 500:
        # damaged); the root is not the bundle's, which the web does not check
        signer = LogSigner(Ed25519PrivateKey.generate(), "bench.test/log")
        checkpoint = signer.sign_text("bench.test/log\n256\n" + "A" * 43 + "=\n")
        (folder / "checkpoint").write_text(checkpoint)
        command = prov_command("web", "--server", _closed_port(), "--listen", "127.0.0.1:0")
        with running([*command, "--tiles-dir", str(folder)], "web on ") as (_, base):
            alone, _, _ = _phase(base, args.seconds, 0)
            flooded, got, refused = _phase(base, args.seconds, args.hostile)
    for name, took in (("alone", alone), ("flooded", flooded)):
        q = statistics.quantiles(took, n=100)
        print(
            f"{name}: {len(took) / args.seconds:.0f} checkpoint fetches/s,"
            f" p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms"
        )
    print(
        f"flooding clients: {got / args.seconds:.1f} bundles/s,"
        f" {refused / args.seconds:.0f} refusals/s"
    )
    write_results(
        "tlog_serve",
        [
            Ratio(
                f"checkpoint fetches/s, {args.hostile} clients fetching a gzipped"
                f" {args.entry_kb * 256 // 1024} MiB bundle",
                len(flooded) / args.seconds,
                "no bundle fetches",
                len(alone) / args.seconds,
                "calls/s",
            )
        ],
    )


if __name__ == "__main__":
    main()
