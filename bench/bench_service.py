"""Throughput of the service against baselines measured in the same run.

1. Capture submissions/s through SubmitCapture (signature check, group commit, fsync,
   receipt) against a bare grpcio echo call of a similar size, both with the same number
   of concurrent callers on loopback.
2. File verification MB/s through VerifyFile (1 MiB chunk upload, streamed SHA-256,
   log lookup) of bytes that are no media (nothing to decode) against a bare grpcio
   stream of the same serialized chunks to a handler that only counts them. Chunks are
   `UPLOAD_CHUNK_BYTES` (1 MiB), above the server's 64 KiB minimum chunk size; the file
   stays far below the 2 GiB upload limit.

Each rate is the median of --rounds rounds, measured in one run with its baseline.
Usage: python bench/bench_service.py [--callers 64] [--seconds 3] [--mb 64] [--rounds 3]
Prints ratios and writes them to out/bench/service.json (bench/results.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import UTC, datetime
from pathlib import Path

import grpc
from results import Ratio, write_results  # bench/results.py, next to this script

from clients.api import ProvenanceClient
from provenance import wire
from provenance.binding import sha256_file
from provenance.claims import Claim, HardBinding, SignedClaim
from provenance.contract import UPLOAD_CHUNK_BYTES
from provenance.envelope import PAYLOAD_TYPE_CLAIM, PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.keys import DeviceKey
from provenance.limits import ServerLimits
from provenance.server import ServerConfig, create_server
from provenance.service import ProvenanceService, ServiceConfig
from provenance.v1 import provenance_pb2 as pb

ADMIN = "bench-admin-token"


def _echo_server() -> tuple[grpc.Server, int]:
    """Bare grpcio peers: a unary echo and a stream sink that only counts bytes."""

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    def sink(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return str(sum(len(r) for r in requests)).encode()

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Sink": grpc.stream_unary_rpc_method_handler(sink),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _run_callers(callers: int, seconds: float, call: Callable[[int, int], object]) -> float:
    """Run ``call(worker_index, i)`` from ``callers`` threads for ``seconds``; calls/s."""
    stop = threading.Event()
    counts = [0] * callers

    def loop(w: int) -> None:
        i = 0
        while not stop.is_set():
            call(w, i)
            i += 1
        counts[w] = i

    threads = [threading.Thread(target=loop, args=(w,)) for w in range(callers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def _claim(key: DeviceKey, seq: int, sha256: bytes | None = None, size: int = 1) -> SignedClaim:
    data = wire.encode_claim(
        Claim(
            device_id=key.key_id,
            sequence=seq,
            captured_at=datetime.now(UTC),
            media_type="image/jpeg",
            size_bytes=size,
            hard_binding=HardBinding(sha256=sha256 or os.urandom(32)),
        )
    )
    return SignedClaim(
        PAYLOAD_TYPE_CLAIM, data, key.key_id, sign_payload(key, PAYLOAD_TYPE_CLAIM, data)
    )


def _median_rate(rounds: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(rounds))


def _non_media_file(path: Path, mb: int) -> None:
    """``mb`` MiB of random bytes behind a text line: no decoder recognizes them."""
    with path.open("wb") as f:
        f.write(b"bench: bytes that are no media\n")
        for _ in range(mb):
            f.write(os.urandom(1 << 20))


def _chunks(path: Path) -> Iterator[bytes]:
    """The file's VerifyFile data messages, serialized as the client sends them."""
    with path.open("rb") as f:
        while block := f.read(UPLOAD_CHUNK_BYTES):
            yield pb.VerifyFileChunk(data=block).SerializeToString()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--callers", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0, help="per submission round")
    ap.add_argument("--mb", type=int, default=64, help="size of the verified file, MiB")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per rate (median)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        service = ProvenanceService(ServiceConfig(db=work / "b.db", log_key=work / "k.pem"))
        # per-device quotas off: 64 devices submitting flat out is the load measured
        limits = ServerLimits(quota_claims_per_minute=0, quota_bytes_per_minute=0)
        config = ServerConfig(admin_token=ADMIN, limits=limits)
        server, port = create_server("127.0.0.1:0", service, config)
        addr = f"127.0.0.1:{port}"
        echo_srv, echo_port = _echo_server()
        chan = grpc.insecure_channel(f"127.0.0.1:{echo_port}")
        try:
            keys = []
            with ProvenanceClient(addr, admin_token=ADMIN) as c:
                for _ in range(args.callers):
                    k = DeviceKey.generate()
                    tok, _ = c.create_enrollment_token()
                    c.enroll(tok, k.public_key, sign_payload(k, PAYLOAD_TYPE_ENROLL, tok.encode()))
                    keys.append(k)
            # pre-sign so the benchmark measures the service, not the client's signing
            per = int(args.rounds * args.seconds * 2000 / args.callers) + 50
            signed = [[_claim(k, s + 1) for s in range(per)] for k in keys]
            payload = len(wire.signed_to_pb(signed[0][0]).SerializeToString())

            echo = chan.unary_unary("/bench.Echo/Echo")
            blob = os.urandom(payload)
            echo_rate = _median_rate(
                args.rounds,
                lambda: _run_callers(
                    args.callers, args.seconds, lambda w, i: echo(blob, timeout=10)
                ),
            )
            clients = [ProvenanceClient(addr) for _ in range(4)]
            next_seq = [0] * args.callers

            def submit(w: int, i: int) -> None:
                if next_seq[w] < per:
                    clients[w % 4].submit(signed[w][next_seq[w]])
                    next_seq[w] += 1
                else:
                    time.sleep(0.01)

            submit_rate = _median_rate(
                args.rounds, lambda: _run_callers(args.callers, args.seconds, submit)
            )
            for c in clients:
                c.close()
            print(
                f"callers={args.callers} payload={payload} B, log size: {service.store.tree_size()}"
            )

            big = work / "bytes.bin"
            _non_media_file(big, args.mb)
            mb = big.stat().st_size / 1e6
            # logged, so the server judges the bytes by their hash instead of refusing
            # them as an unrecognised format
            with ProvenanceClient(addr) as c:
                c.submit(_claim(keys[0], next_seq[0] + 1, *sha256_file(big)))
            sink = chan.stream_unary("/bench.Echo/Sink")

            def bare_stream() -> float:
                t0 = time.perf_counter()
                sink(_chunks(big), timeout=600)
                return mb / (time.perf_counter() - t0)

            statuses = set()

            def verify() -> float:
                with ProvenanceClient(addr) as c:
                    t0 = time.perf_counter()
                    statuses.add(c.verify_file(big).status.value)
                    return mb / (time.perf_counter() - t0)

            stream_rate = _median_rate(args.rounds, bare_stream)
            verify_rate = _median_rate(args.rounds, verify)
            print(f"verified {mb:.0f} MB of non-media bytes -> {sorted(statuses)}")
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
                ],
                note="client and server in one process; machine shared (only ratios count)",
            )
        finally:
            chan.close()
            server.stop(0)
            echo_srv.stop(0)
            service.close()


if __name__ == "__main__":
    main()
