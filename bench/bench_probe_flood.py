"""What a flood of gRPC server reflection costs another client of a real `prov serve`,
for two checkouts alternated in one run.

The server listens on ``[::]``; the flooder, ``--threads`` threads from 127.0.0.1,
each keeps a bidirectional ``ServerReflectionInfo`` stream busy with list-services
requests (a stream that ends is opened again); the honest client, on ``[::1]`` (another
client by `client_key`), calls ``GetLogKey`` one after another for ``--seconds``. Prints
the honest calls' p50/p99 without and with the flood, and the flood's answers and
refusals a second.

Usage: PYTHONPATH=. python bench/bench_probe_flood.py --old /work/main --new . \\
    [--threads 4] [--seconds 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from prov_server import prov_command, start, stopping  # noqa: E402  # bench/prov_server.py

from provenance.v1 import provenance_pb2 as pb  # noqa: E402
from provenance.v1 import provenance_pb2_grpc as rpc  # noqa: E402


def _start(root: Path, db: Path) -> tuple[subprocess.Popen[str], int]:
    proc, address = start(
        prov_command("serve", "--db", str(db), "--listen", "[::]:0", "--no-detector")
        + ["--c2pa-workers", "0"],
        cwd=root,
        env={"PROV_ADMIN_TOKEN": "bench-admin-token-0123456789"},
    )
    return proc, int(address.rpartition(":")[2])


def _requests(stop: threading.Event) -> Iterator[reflection_pb2.ServerReflectionRequest]:
    while not stop.is_set():
        yield reflection_pb2.ServerReflectionRequest(list_services="")


def _flooder(port: int, stop: threading.Event, counts: list[int]) -> None:
    """Keep one reflection stream busy until ``stop``; counts[0] answers, counts[1]
    refusals (RESOURCE_EXHAUSTED)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # typed Incomplete
        while not stop.is_set():
            try:
                for _ in stub.ServerReflectionInfo(_requests(stop)):
                    counts[0] += 1
                    if stop.is_set():
                        break
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    counts[1] += 1


def _honest(port: int, seconds: float) -> list[float]:
    """Latencies (seconds) of GetLogKey calls from [::1], one after another."""
    times: list[float] = []
    with grpc.insecure_channel(f"[::1]:{port}") as channel:
        stub = rpc.LogStub(channel)
        stub.GetLogKey(pb.GetLogKeyRequest(), timeout=10)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            stub.GetLogKey(pb.GetLogKeyRequest(), timeout=10)
            times.append(time.perf_counter() - t)
            time.sleep(0.005)
    return times


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def _round(root: Path, threads: int, seconds: float) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = _start(root, Path(tmp) / "prov.db")
        with stopping(proc):
            quiet = _honest(port, seconds / 2)
            stop = threading.Event()
            counts = [[0, 0] for _ in range(threads)]
            workers = [threading.Thread(target=_flooder, args=(port, stop, c)) for c in counts]
            for w in workers:
                w.start()
            time.sleep(1.0)
            before = [list(c) for c in counts]
            flooded = _honest(port, seconds)
            after = [list(c) for c in counts]
            stop.set()
            for w in workers:
                w.join(timeout=15)
    answers = sum(a[0] - b[0] for a, b in zip(after, before, strict=True)) / seconds
    refused = sum(a[1] - b[1] for a, b in zip(after, before, strict=True)) / seconds
    return (
        f"GetLogKey quiet p50 {_pct(quiet, 0.5):.1f} p99 {_pct(quiet, 0.99):.1f} ms;"
        f" flooded p50 {_pct(flooded, 0.5):.1f} p99 {_pct(flooded, 0.99):.1f} ms"
        f" ({len(flooded)} calls); flood {answers:.0f} answers/s, {refused:.1f} refusals/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for _ in range(args.rounds):
        for name, root in (("old", args.old), ("new", args.new)):
            print(f"{name}: {_round(root.resolve(), args.threads, args.seconds)}", flush=True)


if __name__ == "__main__":
    main()
