"""A burst of concurrent calls at a real `prov serve`: how each call ends, and the server's
memory meanwhile.

A `prov serve` child (SQLite, no detector, device quotas off) on loopback; --devices
devices enrolled. Each burst fires N calls at once from this process over --channels
channels (each its own TCP connection), half GetCheckpoint and half SubmitCapture
(pre-signed claims, each device its next sequence number), and counts the status codes
each call ends with (and, for each failing code, its first message). The server's
resident memory is sampled every 5 ms during each burst (peak over the value before it).
``--root`` runs the server from another checkout (e.g. main) to compare. Prints a table
and writes the counts as JSON (--json).

Usage: nice -n 5 python bench/bench_burst.py [--sizes 500,1000,2000,4000] [--channels 8]
       [--repeat 1] [--root PATH] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import psutil
from bench_service import _claim, _request  # next to this script
from prov_server import PeakRss, start, stopping

from clients.api import ProvenanceClient
from provenance.core.argtypes import positive_ints
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.keys import DeviceKey
from provenance.v1 import provenance_pb2 as pb

ADMIN = "bench-burst-admin-token-0123456789"
ROOT = Path(__file__).resolve().parents[1]
SUBMIT = "/provenance.v1.Captures/SubmitCapture"
CHECKPOINT = "/provenance.v1.Log/GetCheckpoint"


def start_server(
    root: Path, db: Path, extra: Sequence[str] = ()
) -> tuple[subprocess.Popen[str], str]:
    """A `prov serve` child run from checkout ``root``, and its HOST:PORT."""
    env = {"PROV_ADMIN_TOKEN": ADMIN, "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "clients.cli", "serve", "--db", str(db)]
    cmd += ["--listen", "127.0.0.1:0", "--no-detector", "--c2pa-workers", "0"]
    cmd += ["--quota-claims-per-minute", "0", "--quota-claim-kb-per-minute", "0", *extra]
    return start(cmd, cwd=root, env=env)


def presigned(key: DeviceKey, seq: int) -> bytes:
    """A serialized SubmitCaptureRequest of a fresh claim numbered ``seq`` by ``key``."""
    return _request(_claim(key, seq, os.urandom(32)))


def padding(kib: int) -> bytes:
    """``kib`` KiB as an unknown length-delimited field (number 1000) of a request."""
    if not kib:
        return b""
    body = b"\0" * (kib * 1024)
    n, size = len(body), b""
    while True:
        size += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            break
    return b"\xc2\x3e" + size + body  # tag: field 1000, wire type 2


def enroll(address: str, n: int) -> list[DeviceKey]:
    """``n`` devices enrolled at ``address``."""
    keys = []
    with ProvenanceClient(address, admin_token=ADMIN) as c:
        for _ in range(n):
            k = DeviceKey.generate()
            tok, _ = c.create_enrollment_token()
            c.enroll(tok, k.public_key, sign_payload(k, PAYLOAD_TYPE_ENROLL, tok.encode()))
            keys.append(k)
    return keys


async def burst(
    address: str, channels: int, requests: list[tuple[str, bytes]], timeout: float
) -> Counter[tuple[str, str]]:
    """Fire ``requests`` ((method, serialized request)) at once over ``channels``
    connections; count (status code name, first 120 characters of its message: "" for
    OK)."""
    # a local subchannel pool per channel: each its own TCP connection
    chans = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    try:
        await asyncio.gather(*(c.channel_ready() for c in chans))

        async def one(i: int, method: str, req: bytes) -> tuple[str, str]:
            try:
                call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
                call = chans[i % channels].unary_unary(method)
                await call(req, timeout=timeout)
            except grpc.aio.AioRpcError as e:
                return e.code().name, (e.details() or "")[:120]
            return "OK", ""

        ends = await asyncio.gather(*(one(i, m, r) for i, (m, r) in enumerate(requests)))
        return Counter(ends)
    finally:
        await asyncio.gather(*(c.close() for c in chans))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes", type=positive_ints, default="500,1000,2000,4000", help="calls per burst"
    )
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1, help="bursts of each size")
    ap.add_argument("--timeout", type=float, default=60.0, help="each call's deadline, s")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout the server runs from")
    ap.add_argument(
        "--pad-kib", type=int, default=0, help="unknown-field bytes per checkpoint call"
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    sizes: tuple[int, ...] = args.sizes
    devices = max(sizes) // 2
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = start_server(args.root.resolve(), Path(tmp) / "burst.db")
        with stopping(proc):
            keys = enroll(address, devices)
            server = psutil.Process(proc.pid)
            seq = 0
            for n in sizes:
                for r in range(args.repeat):
                    seq += 1
                    reqs = [(SUBMIT, presigned(keys[i], seq)) for i in range(n // 2)]
                    ckpt = pb.GetCheckpointRequest().SerializeToString() + padding(args.pad_kib)
                    reqs += [(CHECKPOINT, ckpt)] * (n - n // 2)
                    # interleaved: both kinds arrive together
                    reqs = [reqs[i // 2 + (i % 2) * (n // 2)] for i in range(n)]
                    with PeakRss(server) as rss:
                        ends = asyncio.run(burst(address, args.channels, reqs, args.timeout))
                    row = {
                        "calls": n,
                        "round": r,
                        "ends": {f"{c}: {m}" if m else c: k for (c, m), k in ends.most_common()},
                        "rss_before_mib": round(rss.base / 2**20, 1),
                        "rss_peak_growth_mib": round(rss.growth / 2**20, 1),
                        "load": [round(x, 2) for x in os.getloadavg()],
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
