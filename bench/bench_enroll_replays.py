"""One client flooding Enroll must not crowd honest callers out: replays of one logged
certificate enrollment (answered again, each checked: two signatures and the chain,
registry reads) against a flood of GetDevice (a plain read) and of Enroll calls with a
guessed token (refused, charged as failed authentications).

A real `prov serve --ca` on loopback ([::]; device quotas off). An honest caller on ::1
submits new claims one after another and every fifth time enrolls a new key by token
(an admin CreateEnrollmentToken, then Enroll), first alone, then during each flood,
which one process sends from 127.0.0.1 (another client address), --inflight calls at
once, for --seconds. Prints per phase: the flood's answers by outcome and answered
calls a second; the honest submissions' and enrollments' count, p50 and p99 (ms).

Measured 4 December (2 shared cores, --inflight 64 / 1000): before replays were metered,
809 / 1,014 replays answered a second, honest enrollment p50 2.6 -> 91 / 1,171 ms;
metered (--auth-failures-per-minute, 20): 23-25 answered in all, the rest refused
unchecked, honest enrollment p50 36 / 400 ms, as during a flood of guessed tokens
(362 ms at 1000: the refusals, answered at once, filled grpc's queue of Enroll calls;
a GetDevice flood: 10 ms). Refusals held back 1 s on the event loop (1000 in flight):
honest enrollment p50 2.7 ms (p99 79 ms) under either flood, which gets 1,000 answers
a second. The GetDevice flood, unmetered (64 in flight, 6 s phases): 2,305 answers a
second, honest submission p50 1.7 -> 6.2 ms, enrollment 2.7 -> 10.1 ms; paced per client
(--device-reads-per-minute, 6,000: a burst of 6,000, then 100 a second): 966 a second
over a 6 s phase (the burst: 3.7 ms), and over 20 s phases 389 a second, honest
submission p50 1.6 -> 1.7 ms (p99 7.5 -> 8.4), enrollment 2.6 -> 2.8 ms.

Usage: nice -n 5 python bench/bench_enroll_replays.py [--inflight 64] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clients.api import ProvenanceClient  # noqa: E402
from provenance.c2pa.authority import init_authority, issue_device_certificate  # noqa: E402
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL, sign_payload  # noqa: E402
from provenance.core.keys import DeviceKey  # noqa: E402
from provenance.core.registry import certificate_enrollment_proof  # noqa: E402
from provenance.v1 import provenance_pb2 as pb  # noqa: E402
from provenance.wire import convert as wire  # noqa: E402
from tests.conftest import ADMIN_TOKEN, signed_claim, start_server  # noqa: E402

ENROLL = "/provenance.v1.DeviceRegistry/Enroll"
GET_DEVICE = "/provenance.v1.DeviceRegistry/GetDevice"


def flood(address: str, method: str, request: bytes, inflight: int, seconds: float, q: Any) -> None:
    """Send ``request`` to ``method``, ``inflight`` calls at once, for ``seconds``; put
    the answers by outcome ("ok" or the status code's name) on ``q``."""

    async def run() -> None:
        got: dict[str, int] = {}
        stop = time.monotonic() + seconds
        async with grpc.aio.insecure_channel(address) as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)

            async def one_after_another() -> None:
                while time.monotonic() < stop:
                    try:
                        await call(request, timeout=30)
                        outcome = "ok"
                    except grpc.RpcError as e:
                        outcome = e.code().name
                    got[outcome] = got.get(outcome, 0) + 1

            await asyncio.gather(*(one_after_another() for _ in range(inflight)))
        q.put(got)

    asyncio.run(run())


def honest(
    address: str, key: DeviceKey, seconds: float, seq: int
) -> tuple[list[float], list[float], int]:
    """Submissions (and every fifth time a token enrollment) one after another for
    ``seconds``: (submission latencies, enrollment latencies, last sequence number)."""
    submits: list[float] = []
    enrolls: list[float] = []
    stop = time.monotonic() + seconds
    with ProvenanceClient(address, ADMIN_TOKEN) as client:
        while time.monotonic() < stop:
            seq += 1
            t = time.perf_counter()
            client.submit(signed_claim(key, seq))
            submits.append(time.perf_counter() - t)
            if seq % 5 == 0:
                new = DeviceKey.generate()
                token, _ = client.create_enrollment_token()
                t = time.perf_counter()
                client.enroll(
                    token, new.public_key, sign_payload(new, PAYLOAD_TYPE_ENROLL, token.encode())
                )
                enrolls.append(time.perf_counter() - t)
    return submits, enrolls, seq


def ms(xs: list[float], q: float) -> float:
    """The ``q`` quantile of ``xs`` (seconds), in milliseconds."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--inflight", type=int, default=64, help="flood calls at once")
    ap.add_argument("--seconds", type=float, default=6.0, help="seconds per phase")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-enroll-"))
    now = datetime.now(UTC)
    authority = init_authority(work / "ca", now=now)
    server = start_server(
        work / "a.db",
        "--ca",
        str(work / "ca"),
        "--quota-claims-per-minute",
        "0",
        "--listen",
        "[::]:0",
    )
    port = server.address.rpartition(":")[2]
    ours, theirs = f"[::1]:{port}", f"127.0.0.1:{port}"
    try:
        with ProvenanceClient(ours, ADMIN_TOKEN) as client:
            key = DeviceKey.generate()
            token, _ = client.create_enrollment_token()
            client.enroll(
                token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode())
            )
            certified = DeviceKey.generate()
            chain = issue_device_certificate(
                authority, certified.public_key, certified.key_id.hex(), now=now
            ).decode()
            log_key, _ = client.log_key()
            at = datetime.now(UTC).replace(microsecond=0)
            proof = certificate_enrollment_proof(certified, log_key, at)
            client.enroll("", certified.public_key, proof, chain, log_key, at)
        replay = pb.EnrollRequest(
            public_key=certified.public_key,
            proof_of_possession=proof,
            certificate_chain_pem=chain,
            log_key=log_key,
            signed_at=wire.ts_to_pb(at),
        ).SerializeToString()
        guesser = DeviceKey.generate()
        guess = pb.EnrollRequest(
            token="guessed",
            public_key=guesser.public_key,
            proof_of_possession=sign_payload(guesser, PAYLOAD_TYPE_ENROLL, b"guessed"),
        ).SerializeToString()
        read = pb.GetDeviceRequest(device_id=certified.key_id).SerializeToString()
        spawn = multiprocessing.get_context("spawn")
        seq = 0
        phases = [
            ("alone", "", b""),
            ("enrollment replays", ENROLL, replay),
            ("GetDevice", GET_DEVICE, read),
            ("guessed tokens", ENROLL, guess),
        ]
        for name, method, request in phases:
            q = spawn.Queue()
            proc = None
            if method:
                proc = spawn.Process(
                    target=flood, args=(theirs, method, request, args.inflight, args.seconds + 1, q)
                )
                proc.start()
                time.sleep(1)  # the flood under way
            submits, enrolls, seq = honest(ours, key, args.seconds, seq)
            got: dict[str, int] = q.get() if proc else {}
            if proc:
                proc.join()
            print(
                f"{name:19s} flood {got} ({got.get('ok', 0) / (args.seconds + 1):.0f} answered/s);"
                f" honest: {len(submits)} submissions p50 {ms(submits, 0.5):.1f} p99"
                f" {ms(submits, 0.99):.1f} ms, {len(enrolls)} enrollments p50"
                f" {ms(enrolls, 0.5):.1f} p99 {ms(enrolls, 0.99):.1f} ms",
                flush=True,
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
