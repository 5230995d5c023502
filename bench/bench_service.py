"""Throughput of the service against bare grpcio peers, client and servers in separate
processes, measured in the same run.

1. SubmitCapture calls/s (decode, signature check, group commit, fsync, receipt) with
   --callers concurrent callers, against a bare grpcio unary echo of the same serialized
   request bytes with the same number of callers.
2. VerifyFile MB/s (1 MiB chunk upload, streamed SHA-256, log lookup) of --mb MiB of
   bytes that are no media (nothing to decode), against a bare grpcio stream of the same
   serialized messages to a handler that only counts them.

Layout: `prov serve` runs in one child process; the bare echo/stream server in another
(a plain `grpc.server` with a 16-thread pool, as grpcio's examples do: the issue's
baseline, the ratios that count); a bare `grpc.aio` server with the same two handlers in
a third, on uvloop's event loop as `prov serve` (informative: how much of the gap is
grpc.aio's own cost, the floor of a server built like `prov serve`); for uploads, the bare sync server once more with the malloc
settings `prov serve` makes for itself (informative: without them a bare grpcio server
takes a page fault for most pages it receives), and that tuned peer again computing the
SHA-256 of every message it receives (`hashlib`, which gives the GIL away while it hashes):
the floor of any server that must compute the hard binding of the bytes, as VerifyFile
does (informative: SHA-256 runs about 1.3 GB/s on this class of CPU, so with the client
on the same two cores no hashing server can reach 0.9 of the tuned bare stream). This process is the client for all: a
`grpc.aio` channel with one task per caller sending pre-serialized requests, so
client-side protobuf and signing cost nothing in any measurement. Rounds of each path
and its peers alternate (so all see the same share of a shared machine; each round
starts with the next one); each rate is the median of --rounds rounds. Also the work per
CPU-second of each server process (utime + stime), which a busy machine disturbs less.
Prints the ratios and writes them to out/bench/service.json (bench/results.py).

Usage: python bench/bench_service.py [--callers 64] [--seconds 3] [--mb 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import psutil
import uvloop
from prov_server import start  # bench/prov_server.py, next to this script
from results import Ratio, write_results  # bench/results.py, next to this script

from clients.api import ProvenanceClient
from provenance.core.binding import PerceptualHash
from provenance.core.claims import Claim, HardBinding, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.keys import DeviceKey
from provenance.server.allocator import MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES
from provenance.v1 import provenance_pb2 as pb
from provenance.wire import convert as wire
from provenance.wire.contract import UPLOAD_CHUNK_BYTES

#: The soft binding of the made-up image claims: the PDQ hash of a flat picture (quality 0,
#: kept out of the near-duplicate index); a claim of an image states one (and its size).
FLAT_PDQ = PerceptualHash("pdq", bytes(32), 0)
ADMIN = "bench-admin-token-0123456789"
ROOT = Path(__file__).resolve().parents[1]
SUBMIT = "/provenance.v1.Captures/SubmitCapture"
VERIFY = "/provenance.v1.Verification/VerifyFile"
BIG = [("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)]


def serve_echo(sha256: bool = False) -> None:
    """Child process: the bare sync peers (unary echo, stream sink); prints its port.
    ``sha256``: the sink also hashes every message it receives (SHA-256, one running
    digest per stream, as VerifyFile's hard binding)."""

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    def sink(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        if not sha256:
            return str(sum(len(r) for r in requests)).encode()
        h = hashlib.sha256()
        for r in requests:
            h.update(r)  # hashlib releases the GIL for inputs over 2 KiB
        return h.digest()

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Sink": grpc.stream_unary_rpc_method_handler(sink),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=BIG)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


async def serve_echo_aio() -> None:
    """Child process: the same peers on a bare `grpc.aio` server (run on uvloop's loop, as
    `prov serve`'s server is); prints its port."""

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    async def sink(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        n = 0
        async for r in requests:
            n += len(r)
        return str(n).encode()

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Sink": grpc.stream_unary_rpc_method_handler(sink),
        },
    )
    server = grpc.aio.server(options=BIG)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


def _start(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    return start(cmd, env=env)


def _claim(key: DeviceKey, seq: int, sha256: bytes, size: int = 1) -> SignedClaim:
    data = wire.encode_claim(
        Claim(
            device_id=key.key_id,
            sequence=seq,
            captured_at=datetime.now(UTC),
            media_type="image/jpeg",
            size_bytes=size,
            hard_binding=HardBinding(sha256=sha256),
            soft_bindings=(FLAT_PDQ,),
            width=4,
            height=3,
        )
    )
    return SignedClaim(
        PAYLOAD_TYPE_CLAIM, data, key.key_id, sign_payload(key, PAYLOAD_TYPE_CLAIM, data)
    )


def _request(signed: SignedClaim) -> bytes:
    return pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(signed)).SerializeToString()


async def _unary_rate(
    address: str, method: str, callers: int, seconds: float, request: Callable[[int], bytes]
) -> float:
    """Calls/s of ``method`` with ``callers`` tasks, each sending ``request(caller)``."""
    async with grpc.aio.insecure_channel(address, options=BIG) as chan:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = chan.unary_unary(method)
        await call(request(0), timeout=30)  # connect outside the timed part
        count = 0
        stop = time.perf_counter() + seconds

        async def caller(w: int) -> None:
            nonlocal count
            while time.perf_counter() < stop:
                await call(request(w), timeout=30)
                count += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(caller(w) for w in range(callers)))
        return count / (time.perf_counter() - t0)


async def _stream_rate(address: str, method: str, messages: list[bytes], mb: float) -> float:
    """MB/s of one client-streaming call sending ``messages``."""
    async with grpc.aio.insecure_channel(address, options=BIG) as chan:
        await chan.channel_ready()
        t0 = time.perf_counter()
        stream: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = chan.stream_unary(method)
        reply: bytes = await stream(iter(messages), timeout=600)
        rate = mb / (time.perf_counter() - t0)
    if method == VERIFY:
        status = pb.VerificationReport.FromString(reply).status
        if status != pb.SIGNED_ORIGINAL:
            raise SystemExit(f"VerifyFile answered {status}, not SIGNED_ORIGINAL")
    return rate


@dataclass(frozen=True)
class Peer:
    """One measured path: its server process and how to run one round (work units/s)."""

    proc: psutil.Process
    measure: Callable[[], Coroutine[Any, Any, float]]


def _cpu_s(proc: psutil.Process) -> float:
    """CPU seconds (user + system) of ``proc``, its live child processes and its children
    that exited and were waited for: a server's work done in its children counts as its
    own (`prov serve`'s video decoder and C2PA readers, a log writer in a child process)."""
    t = proc.cpu_times()
    own = t.user + t.system + t.children_user + t.children_system
    for child in proc.children(recursive=True):
        try:
            own += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return own


def _alternated(rounds: int, *peers: Peer) -> list[tuple[float, float]]:
    """Rounds of ``peers`` alternated, so all see the same share of a shared machine, each
    round starting with the next peer (the first of a round measured faster or slower by
    up to 10%); for each, (median rate, median work per CPU-second of its server
    process and its children)."""
    out: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(peers))}
    for r in range(rounds):
        for i in [(r + k) % len(peers) for k in range(len(peers))]:
            peer = peers[i]
            cpu0 = _cpu_s(peer.proc)
            t0 = time.perf_counter()
            rate: float = asyncio.run(peer.measure())
            wall = time.perf_counter() - t0
            cpu = _cpu_s(peer.proc) - cpu0
            out[i].append((rate, rate * wall / cpu if cpu else 0.0))
    return [
        (statistics.median(r for r, _ in out[i]), statistics.median(c for _, c in out[i]))
        for i in out
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--callers", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0, help="per submission round")
    ap.add_argument("--mb", type=int, default=256, help="size of the verified bytes, MiB")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per rate (median)")
    ap.add_argument("--serve-echo", choices=["sync", "sync-sha", "aio"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_echo in ("sync", "sync-sha"):
        serve_echo(sha256=args.serve_echo == "sync-sha")
        return
    if args.serve_echo == "aio":
        uvloop.run(serve_echo_aio())
        return

    env = {
        **os.environ,
        "PROV_ADMIN_TOKEN": ADMIN,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with tempfile.TemporaryDirectory() as tmp:
        serve = [sys.executable, "-m", "clients.cli", "serve", "--db", f"{tmp}/b.db"]
        serve += ["--listen", "127.0.0.1:0", "--no-detector", "--c2pa-workers", "0"]
        # per-device quotas off: 64 devices submitting flat out is the load measured
        serve += ["--quota-claims-per-minute", "0", "--quota-claim-kb-per-minute", "0"]
        prov, addr = _start(serve, env)
        echo, echo_addr = _start([sys.executable, __file__, "--serve-echo", "sync"], env)
        aio, aio_addr = _start([sys.executable, __file__, "--serve-echo", "aio"], env)
        # informative: the sync peer with the malloc settings `prov serve` makes for itself
        # (provenance/server/allocator.py), which spare it a page fault per page received
        malloc_env = {
            **env,
            "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES),
            "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES),
        }
        tuned, tuned_addr = _start([sys.executable, __file__, "--serve-echo", "sync"], malloc_env)
        # informative: the tuned peer hashing every byte, the floor of a hashing server
        hashing, hashing_addr = _start(
            [sys.executable, __file__, "--serve-echo", "sync-sha"], malloc_env
        )
        try:
            keys = []
            with ProvenanceClient(addr, admin_token=ADMIN) as c:
                for _ in range(args.callers):
                    k = DeviceKey.generate()
                    tok, _ = c.create_enrollment_token()
                    c.enroll(tok, k.public_key, sign_payload(k, PAYLOAD_TYPE_ENROLL, tok.encode()))
                    keys.append(k)
            # pre-signed and pre-serialized: the client's cost is the same for both peers
            per = int(args.rounds * args.seconds * 3000 / args.callers) + 100
            signed = [
                [_request(_claim(k, s + 1, os.urandom(32))) for s in range(per)] for k in keys
            ]
            nxt = [0] * args.callers

            def submission(w: int) -> bytes:
                nxt[w] += 1
                if nxt[w] > per:
                    raise SystemExit("pre-signed claims ran out: raise the 3000/s estimate")
                return signed[w][nxt[w] - 1]

            blob = signed[0][-1]

            def echoed(proc: subprocess.Popen[str], address: str) -> Peer:
                return Peer(
                    psutil.Process(proc.pid),
                    lambda: _unary_rate(
                        address, "/bench.Echo/Echo", args.callers, args.seconds, lambda w: blob
                    ),
                )

            [(submit_rate, submit_cpu), (echo_rate, echo_cpu), (aecho_rate, aecho_cpu)] = (
                _alternated(
                    args.rounds,
                    Peer(
                        psutil.Process(prov.pid),
                        lambda: _unary_rate(addr, SUBMIT, args.callers, args.seconds, submission),
                    ),
                    echoed(echo, echo_addr),
                    echoed(aio, aio_addr),
                )
            )
            print(f"callers={args.callers} request={len(blob)} B, submitted {sum(nxt)}")

            data = b"bench: bytes that are no media\n" + os.urandom(args.mb << 20)
            mb = len(data) / 1e6
            last = max(nxt[0], 1)  # the next sequence number of device 0
            with ProvenanceClient(addr) as c:  # logged, so the bytes are judged by their hash
                c.submit(_claim(keys[0], last + 1, hashlib.sha256(data).digest(), len(data)))
            header = pb.VerifyFileHeader(filename="bytes.bin", size_bytes=len(data))
            messages = [pb.VerifyFileChunk(header=header).SerializeToString()]
            messages += [
                pb.VerifyFileChunk(data=data[i : i + UPLOAD_CHUNK_BYTES]).SerializeToString()
                for i in range(0, len(data), UPLOAD_CHUNK_BYTES)
            ]
            del data

            def sunk(proc: subprocess.Popen[str], address: str) -> Peer:
                return Peer(
                    psutil.Process(proc.pid),
                    lambda: _stream_rate(address, "/bench.Echo/Sink", messages, mb),
                )

            [
                (verify_rate, verify_cpu),
                (stream_rate, stream_cpu),
                (astream_rate, astream_cpu),
                (tstream_rate, tstream_cpu),
                (hstream_rate, hstream_cpu),
            ] = _alternated(
                args.rounds,
                Peer(psutil.Process(prov.pid), lambda: _stream_rate(addr, VERIFY, messages, mb)),
                sunk(echo, echo_addr),
                sunk(aio, aio_addr),
                sunk(tuned, tuned_addr),
                sunk(hashing, hashing_addr),
            )
            write_results(
                "service",
                [
                    Ratio(
                        f"SubmitCapture, {args.callers} callers",
                        submit_rate,
                        "bare grpcio echo",
                        echo_rate,
                        "calls/s",
                    ),
                    Ratio(
                        f"VerifyFile, {args.mb} MiB non-media",
                        verify_rate,
                        "bare grpcio stream",
                        stream_rate,
                        "MB/s",
                    ),
                    Ratio(
                        "SubmitCapture per server CPU-second",
                        submit_cpu,
                        "bare grpcio echo",
                        echo_cpu,
                        "calls/CPU-s",
                    ),
                    Ratio(
                        "VerifyFile per server CPU-second",
                        verify_cpu,
                        "bare grpcio stream",
                        stream_cpu,
                        "MB/CPU-s",
                    ),
                    # informative: the floor of a grpc.aio server, as `prov serve` is
                    Ratio(
                        f"SubmitCapture, {args.callers} callers",
                        submit_rate,
                        "bare grpc.aio echo",
                        aecho_rate,
                        "calls/s",
                    ),
                    Ratio(
                        f"VerifyFile, {args.mb} MiB non-media",
                        verify_rate,
                        "bare grpc.aio stream",
                        astream_rate,
                        "MB/s",
                    ),
                    Ratio(
                        "bare grpc.aio echo (info)",
                        aecho_rate,
                        "bare grpcio echo",
                        echo_rate,
                        "calls/s",
                    ),
                    Ratio(
                        "bare grpc.aio stream (info)",
                        astream_rate,
                        "bare grpcio stream",
                        stream_rate,
                        "MB/s",
                    ),
                    Ratio(
                        "bare grpc.aio echo per CPU-s (info)",
                        aecho_cpu,
                        "bare grpcio echo",
                        echo_cpu,
                        "calls/CPU-s",
                    ),
                    Ratio(
                        "bare grpc.aio stream per CPU-s (info)",
                        astream_cpu,
                        "bare grpcio stream",
                        stream_cpu,
                        "MB/CPU-s",
                    ),
                    Ratio(
                        f"VerifyFile, {args.mb} MiB non-media",
                        verify_rate,
                        "bare grpcio stream, prov's malloc settings",
                        tstream_rate,
                        "MB/s",
                    ),
                    Ratio(
                        "VerifyFile per server CPU-second",
                        verify_cpu,
                        "bare grpcio stream, prov's malloc settings",
                        tstream_cpu,
                        "MB/CPU-s",
                    ),
                    # informative: the floor of a server that hashes every byte
                    Ratio(
                        f"VerifyFile, {args.mb} MiB non-media",
                        verify_rate,
                        "bare grpcio stream + SHA-256, prov's malloc settings",
                        hstream_rate,
                        "MB/s",
                    ),
                    Ratio(
                        "VerifyFile per server CPU-second",
                        verify_cpu,
                        "bare grpcio stream + SHA-256, prov's malloc settings",
                        hstream_cpu,
                        "MB/CPU-s",
                    ),
                    Ratio(
                        "bare stream + SHA-256 (info)",
                        hstream_rate,
                        "bare grpcio stream, prov's malloc settings",
                        tstream_rate,
                        "MB/s",
                    ),
                ],
                note="client, prov serve and the bare peers in separate processes; medians of"
                f" {args.rounds}; machine shared (only ratios count)",
            )
        finally:
            for p in (prov, echo, aio, tuned, hashing):
                p.terminate()
                p.wait(timeout=30)


if __name__ == "__main__":
    main()
