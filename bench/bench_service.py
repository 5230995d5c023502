"""Throughput of the service against baselines measured in the same run.

1. Capture submissions/s through SubmitCapture (signature check, group commit, fsync,
   receipt) against a bare grpcio echo call of a similar size, both with the same number
   of concurrent callers on loopback.
2. File verification MB/s through VerifyFile (1 MiB chunk upload, streamed SHA-256,
   log lookup) against plain hashlib.sha256 over the same bytes in memory.

Usage: python bench/bench_service.py [--callers 64] [--seconds 5] [--mb 128]
Prints ratios; these machines are noisy, so only ratios from one run mean much.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import threading
import time
from concurrent import futures
from datetime import UTC, datetime
from pathlib import Path

import grpc

from clients.api import ProvenanceClient
from provenance import wire
from provenance.claims import Claim, HardBinding, SignedClaim
from provenance.envelope import PAYLOAD_TYPE_CLAIM, PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.keys import DeviceKey
from provenance.server import ServerConfig, create_server
from provenance.service import ProvenanceService, ServiceConfig

ADMIN = "bench-admin-token"


def _echo_server() -> tuple[grpc.Server, int]:
    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _run_callers(callers: int, seconds: float, call: callable) -> float:  # type: ignore[valid-type]
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


def _claim(key: DeviceKey, seq: int) -> SignedClaim:
    data = wire.encode_claim(
        Claim(
            device_id=key.key_id,
            sequence=seq,
            captured_at=datetime.now(UTC),
            media_type="image/jpeg",
            size_bytes=1,
            hard_binding=HardBinding(sha256=os.urandom(32)),
        )
    )
    return SignedClaim(
        PAYLOAD_TYPE_CLAIM, data, key.key_id, sign_payload(key, PAYLOAD_TYPE_CLAIM, data)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--callers", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--mb", type=int, default=128, help="size of the verified file, MiB")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        service = ProvenanceService(ServiceConfig(db=work / "b.db", log_key=work / "k.pem"))
        server, port = create_server("127.0.0.1:0", service, ServerConfig(admin_token=ADMIN))
        addr = f"127.0.0.1:{port}"
        echo_srv, echo_port = _echo_server()
        try:
            keys = []
            with ProvenanceClient(addr, admin_token=ADMIN) as c:
                for _ in range(args.callers):
                    k = DeviceKey.generate()
                    tok, _ = c.create_enrollment_token()
                    c.enroll(tok, k.public_key, sign_payload(k, PAYLOAD_TYPE_ENROLL, tok.encode()))
                    keys.append(k)
            # pre-sign so the benchmark measures the service, not the client's signing
            per = int(args.seconds * 2000 / args.callers) + 50
            signed = [[_claim(k, s + 1) for s in range(per)] for k in keys]
            payload = len(wire.signed_to_pb(signed[0][0]).SerializeToString())

            chan = grpc.insecure_channel(f"127.0.0.1:{echo_port}")
            echo = chan.unary_unary("/bench.Echo/Echo")
            blob = os.urandom(payload)
            echo_rate = _run_callers(
                args.callers, args.seconds, lambda w, i: echo(blob, timeout=10)
            )
            chan.close()

            clients = [ProvenanceClient(addr) for _ in range(4)]
            submit_rate = _run_callers(
                args.callers,
                args.seconds,
                lambda w, i: clients[w % 4].submit(signed[w][i]) if i < per else time.sleep(0.01),
            )
            for c in clients:
                c.close()
            size = service.store.tree_size()
            print(f"callers={args.callers} payload={payload} B, log size after run: {size}")
            print(f"bare grpcio echo:          {echo_rate:9.0f} calls/s")
            print(f"SubmitCapture (durable):   {submit_rate:9.0f} submissions/s")
            print(f"ratio submit/echo:         {submit_rate / echo_rate:9.3f}")

            big = work / "clip.mp4"
            with big.open("wb") as f:
                f.write(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2")
                for _ in range(args.mb):
                    f.write(os.urandom(1 << 20))
            data = big.read_bytes()
            t0 = time.perf_counter()
            hashlib.sha256(data).digest()
            t_hash = time.perf_counter() - t0
            with ProvenanceClient(addr) as c:
                t0 = time.perf_counter()
                report = c.verify_file(big)
                t_verify = time.perf_counter() - t0
            mb = len(data) / 1e6
            print(f"verified {mb:.0f} MB -> {report.status.value}")
            print(f"hashlib.sha256 in memory:  {mb / t_hash:9.0f} MB/s")
            print(f"VerifyFile over gRPC:      {mb / t_verify:9.0f} MB/s")
            print(f"ratio verify/sha256:       {t_hash / t_verify:9.3f}")
        finally:
            server.stop(0)
            echo_srv.stop(0)
            service.close()


if __name__ == "__main__":
    main()
