"""Hostile load: stalled uploads (issue 11) or a flood of forged submissions (issue 15)
must not starve the honest calls.

A `prov serve` subprocess on loopback. Phase 1, the baseline (--baseline-seconds): the
callers (--callers, default 200) loop over cheap calls, half of them GetCheckpoint and
half SubmitCapture, each submitter an honest device of its own. Phase 2 (--duration,
default 60 s): the same callers, plus the hostile clients of --case:

- ``stalled`` (the default): --stalled (default 32) VerifyFile streams that send their
  header and then nothing, each re-opened a second after the server refuses or cuts it;
- ``forgeries``: a client process sending SubmitCapture requests with bad signatures as
  fast as it can, --forgers (default 64) calls in flight on one connection from ::1 (the
  honest callers come from 127.0.0.1: the server meters forgeries per address). Each forgery
  names an enrolled device (ids are public) and carries a well-formed signature (canonical
  S) by another key, so the server pays a full Ed25519 verification to refuse it
  (UNAUTHENTICATED).

Prints a table (calls and p50/p99 of each cheap call per phase, honest submissions per
second, the ratio of the hostile phase to the baseline, honest submissions accepted and
failed, stalled uploads refused and cut or forgeries sent and refused, the server's peak
RSS sampled every 100 ms) and writes it as JSON (--json).

Usage: nice -n 19 python bench/bench_hostile_load.py [--case forgeries] [--duration 60]
       [--callers 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import psutil
from prov_server import prov_command, start, stopping  # bench/prov_server.py, next to this script

from clients.api import ProvenanceClient
from provenance.core.binding import PerceptualHash
from provenance.core.claims import Claim, HardBinding, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.errors import TransportError
from provenance.core.keys import DeviceKey
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.wire import convert as wire
from provenance.wire.contract import MAX_MESSAGE_BYTES

#: The soft binding of the made-up image claims: the PDQ hash of a flat picture (quality 0,
#: kept out of the near-duplicate index); a claim of an image states one (and its size).
FLAT_PDQ = PerceptualHash("pdq", bytes(32), 0)
ADMIN = "bench-hostile-admin-token"
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Phase:
    """Latencies (seconds) and outcomes of one phase."""

    checkpoint: list[float] = field(default_factory=list)
    submit: list[float] = field(default_factory=list)
    submit_failed: dict[str, int] = field(default_factory=dict)
    checkpoint_failed: dict[str, int] = field(default_factory=dict)
    stalled_refused: int = 0
    stalled_cut: int = 0
    forgeries: dict[str, int] = field(default_factory=dict)
    peak_rss: int = 0
    seconds: float = 0.0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _start_server(db: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    # [::]: IPv4 and IPv6: the forger is another client, on ::1
    command = prov_command("serve", "--db", str(db), "--listen", "[::]:0", "--no-detector")
    proc, address = start(
        [*command, "--c2pa-workers", "0", *extra], env={"PROV_ADMIN_TOKEN": ADMIN}
    )
    return proc, f"127.0.0.1:{address.rpartition(':')[2]}"


def _enroll(client: ProvenanceClient) -> DeviceKey:
    key = DeviceKey.generate()
    token, _ = client.create_enrollment_token()
    client.enroll(token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode()))
    return key


def _claim(key: DeviceKey, seq: int) -> SignedClaim:
    data = wire.encode_claim(
        Claim(
            device_id=key.key_id,
            sequence=seq,
            captured_at=datetime.now(UTC),
            media_type="image/jpeg",
            size_bytes=1000,
            hard_binding=HardBinding(sha256=os.urandom(32)),
            soft_bindings=(FLAT_PDQ,),
            width=4,
            height=3,
        )
    )
    return SignedClaim(
        PAYLOAD_TYPE_CLAIM, data, key.key_id, sign_payload(key, PAYLOAD_TYPE_CLAIM, data)
    )


def _forgeries(victims: list[bytes], count: int) -> list[bytes]:
    """``count`` serialized SubmitCaptureRequests claiming to come from the enrolled
    ``victims`` (device ids), each signed by a key that is not theirs: a canonical
    signature that fails only the verification equation."""
    forger = DeviceKey.generate()
    out = []
    for i in range(count):
        device = victims[i % len(victims)]
        data = wire.encode_claim(
            Claim(
                device_id=device,
                sequence=i + 1,
                captured_at=datetime.now(UTC),
                media_type="image/jpeg",
                size_bytes=1000,
                hard_binding=HardBinding(sha256=os.urandom(32)),
                soft_bindings=(FLAT_PDQ,),
                width=4,
                height=3,
            )
        )
        signed = SignedClaim(
            PAYLOAD_TYPE_CLAIM, data, device, sign_payload(forger, PAYLOAD_TYPE_CLAIM, data)
        )
        request = pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(signed))
        out.append(request.SerializeToString())
    return out


async def _forge(address: str, victims: list[bytes], inflight: int) -> None:
    """The forger process: send forgeries with ``inflight`` calls in flight until stdin
    closes, then print the count of answers by status code as JSON."""
    requests = _forgeries(victims, 1000)
    codes: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    done = loop.run_in_executor(None, sys.stdin.read)  # EOF: the phase is over
    async with grpc.aio.insecure_channel(address) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/provenance.v1.Captures/SubmitCapture"
        )
        await channel.channel_ready()
        print("forging", flush=True)

        async def forger(w: int) -> None:
            n = w
            while not done.done():
                n += inflight
                try:
                    await call(requests[n % len(requests)], timeout=30)
                    code = "OK"
                except grpc.aio.AioRpcError as e:
                    code = e.code().name
                codes[code] = codes.get(code, 0) + 1

        await asyncio.gather(*(forger(w) for w in range(inflight)))
    print(json.dumps(codes), flush=True)


def _stalled(stop: threading.Event) -> Iterator[pb.VerifyFileChunk]:
    yield pb.VerifyFileChunk(header=pb.VerifyFileHeader(size_bytes=1 << 20))
    stop.wait()


def _run_phase(
    address: str,
    keys: list[DeviceKey | None],
    seqs: list[int],
    seconds: float,
    stalled: int,
    server: psutil.Process,
    forgers: int = 0,
    victims: list[bytes] | None = None,
) -> Phase:
    """Run the callers (and the stalled uploads, or ``forgers`` forged submissions in
    flight naming the ``victims`` device ids) for ``seconds``; return the phase."""
    ph = Phase(seconds=seconds)
    stop = threading.Event()
    lock = threading.Lock()

    def record(kind: str, t: float, err: TransportError | None) -> None:
        with lock:
            if err is None:
                (ph.checkpoint if kind == "checkpoint" else ph.submit).append(t)
            else:
                failed = ph.checkpoint_failed if kind == "checkpoint" else ph.submit_failed
                failed[err.code] = failed.get(err.code, 0) + 1

    def caller(i: int) -> None:
        key = keys[i]
        with ProvenanceClient(address, timeout=30) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                err = None
                try:
                    if key is None:
                        c.checkpoint()
                    else:
                        seqs[i] += 1
                        c.submit(_claim(key, seqs[i]))
                except TransportError as e:
                    err = e
                record("checkpoint" if key is None else "submit", time.perf_counter() - t0, err)

    def sampler() -> None:
        while not stop.is_set():
            ph.peak_rss = max(ph.peak_rss, server.memory_info().rss)
            time.sleep(0.1)

    def hostile() -> None:
        channel = grpc.insecure_channel(
            address, options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        )
        stub = rpc.VerificationStub(channel)
        open_: list[grpc.Future[pb.VerificationReport]] = []
        while not stop.is_set():
            for f in [f for f in open_ if f.done()]:
                open_.remove(f)
                exc = f.exception()
                if exc is None:
                    code = grpc.StatusCode.OK
                elif isinstance(exc, grpc.RpcError):  # a call's future fails with its RpcError
                    code = exc.code()
                else:
                    raise exc
                if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                    ph.stalled_refused += 1
                elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    ph.stalled_cut += 1
            while len(open_) < stalled:
                open_.append(stub.VerifyFile.future(_stalled(stop), timeout=seconds + 60))
            time.sleep(1.0)  # a refused or cut stream is opened again a second later
        for f in open_:
            f.exception(timeout=30)
        channel.close()

    forge = None
    if forgers:
        forge = subprocess.Popen(
            # from another client address than the honest callers' (the server meters
            # forgeries per address)
            [sys.executable, __file__, "--forge", f"[::1]:{address.rpartition(':')[2]}"]
            + ["--forgers", str(forgers)]
            + [f"--victim={v.hex()}" for v in victims or []],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,  # pipes: a line now, one at its end (communicated)
            text=True,
            cwd=ROOT,
        )
        assert forge.stdout is not None
        if forge.stdout.readline().strip() != "forging":
            raise SystemExit(f"the forger did not start (exit {forge.wait()})")
    threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(keys))]
    threads += [threading.Thread(target=sampler)]
    if stalled:
        threads.append(threading.Thread(target=hostile))
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    if forge is not None:
        out, _ = forge.communicate(timeout=60)  # closes its stdin: it stops
        ph.forgeries = json.loads(out.strip().splitlines()[-1])
    for t in threads:
        t.join()
    return ph


def _summary(ph: Phase) -> dict[str, Any]:
    return {
        "checkpoint_calls": len(ph.checkpoint),
        "checkpoint_p50_ms": round(_pct(ph.checkpoint, 0.5) * 1000, 1),
        "checkpoint_p99_ms": round(_pct(ph.checkpoint, 0.99) * 1000, 1),
        "checkpoint_failed": ph.checkpoint_failed,
        "submit_ok": len(ph.submit),
        "submit_per_s": round(len(ph.submit) / ph.seconds, 1),
        "submit_p50_ms": round(_pct(ph.submit, 0.5) * 1000, 1),
        "submit_p99_ms": round(_pct(ph.submit, 0.99) * 1000, 1),
        "submit_failed": ph.submit_failed,
        "stalled_refused": ph.stalled_refused,
        "stalled_cut": ph.stalled_cut,
        "forgeries_sent": sum(ph.forgeries.values()),
        "forgeries_per_s": round(sum(ph.forgeries.values()) / ph.seconds, 1),
        "forgeries_by_code": ph.forgeries,
        "server_peak_rss_mb": round(ph.peak_rss / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="hostile phase, seconds")
    ap.add_argument("--baseline-seconds", type=float, default=15.0, help="baseline phase")
    ap.add_argument("--callers", type=int, default=200, help="concurrent cheap callers")
    ap.add_argument(
        "--case",
        choices=["stalled", "forgeries"],
        default="stalled",
        help="the hostile clients of phase 2: stalled uploads or a forgery flood",
    )
    ap.add_argument("--stalled", type=int, default=32, help="stalled VerifyFile streams")
    ap.add_argument("--forgers", type=int, default=64, help="forged submissions in flight")
    ap.add_argument(
        "--forgeries-per-minute",
        type=int,
        help="the server's --forgeries-per-minute (0: no penalty; default: the server's)",
    )
    ap.add_argument("--json", type=Path, help="default: out/bench_hostile_load[_forgeries].json")
    ap.add_argument("--forge", metavar="ADDRESS", help=argparse.SUPPRESS)
    ap.add_argument("--victim", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.forge:
        asyncio.run(_forge(args.forge, [bytes.fromhex(v) for v in args.victim], args.forgers))
        return
    forgeries = args.case == "forgeries"
    if args.json is None:
        name = "bench_hostile_load_forgeries" if forgeries else "bench_hostile_load"
        args.json = ROOT / "out" / f"{name}.json"

    with tempfile.TemporaryDirectory() as tmp:
        extra = []
        if args.forgeries_per_minute is not None:
            extra = ["--forgeries-per-minute", str(args.forgeries_per_minute)]
        proc, address = _start_server(Path(tmp) / "hostile.db", *extra)
        with stopping(proc):
            server = psutil.Process(proc.pid)
            with ProvenanceClient(address, ADMIN) as c:
                keys: list[DeviceKey | None] = [
                    _enroll(c) if i % 2 else None for i in range(args.callers)
                ]
                first = next(k for k in keys if k is not None)
                c.submit(_claim(first, 1))
            seqs = [1 if k is first else 0 for k in keys]
            start_rss = server.memory_info().rss
            base = _run_phase(address, keys, seqs, args.baseline_seconds, 0, server)
            victims = [k.key_id for k in keys if k is not None]
            hostile = _run_phase(
                address,
                keys,
                seqs,
                args.duration,
                0 if forgeries else args.stalled,
                server,
                args.forgers if forgeries else 0,
                victims,
            )

    out = {
        "callers": args.callers,
        "case": args.case,
        "stalled_uploads": 0 if forgeries else args.stalled,
        "forgers_in_flight": args.forgers if forgeries else 0,
        "server_forgeries_per_minute": args.forgeries_per_minute,
        "baseline_seconds": args.baseline_seconds,
        "hostile_seconds": args.duration,
        "server_start_rss_mb": round(start_rss / 2**20, 1),
        "baseline": _summary(base),
        "hostile": _summary(hostile),
        "p99_ratio_checkpoint": round(
            _pct(hostile.checkpoint, 0.99) / _pct(base.checkpoint, 0.99), 2
        ),
        "p99_ratio_submit": round(_pct(hostile.submit, 0.99) / _pct(base.submit, 0.99), 2),
        "rate_ratio_submit": round(
            (len(hostile.submit) / hostile.seconds) / (len(base.submit) / base.seconds), 2
        ),
    }
    b, h = out["baseline"], out["hostile"]
    rows: list[tuple[str, Callable[[dict[str, Any]], object]]] = [
        ("GetCheckpoint calls", lambda s: s["checkpoint_calls"]),
        ("GetCheckpoint p50 ms", lambda s: s["checkpoint_p50_ms"]),
        ("GetCheckpoint p99 ms", lambda s: s["checkpoint_p99_ms"]),
        ("GetCheckpoint failed", lambda s: sum(s["checkpoint_failed"].values())),
        ("SubmitCapture accepted", lambda s: s["submit_ok"]),
        ("SubmitCapture per s", lambda s: s["submit_per_s"]),
        ("SubmitCapture failed", lambda s: sum(s["submit_failed"].values())),
        ("SubmitCapture p50 ms", lambda s: s["submit_p50_ms"]),
        ("SubmitCapture p99 ms", lambda s: s["submit_p99_ms"]),
        *(
            [
                ("forgeries per s", lambda s: s["forgeries_per_s"]),
                ("forgeries refused", lambda s: s["forgeries_by_code"].get("UNAUTHENTICATED", 0)),
                (
                    "forgeries otherwise",
                    lambda s: (
                        s["forgeries_sent"] - s["forgeries_by_code"].get("UNAUTHENTICATED", 0)
                    ),
                ),
            ]
            if forgeries
            else [
                ("stalled uploads refused", lambda s: s["stalled_refused"]),
                ("stalled uploads cut", lambda s: s["stalled_cut"]),
            ]
        ),
        ("server peak RSS MB", lambda s: s["server_peak_rss_mb"]),
    ]
    print(f"{'':26}{'baseline':>12}{'hostile':>12}")
    for name, get in rows:
        print(f"{name:26}{get(b)!s:>12}{get(h)!s:>12}")
    print(
        f"p99 hostile/baseline: GetCheckpoint {out['p99_ratio_checkpoint']}x,"
        f" SubmitCapture {out['p99_ratio_submit']}x; honest submissions/s"
        f" {out['rate_ratio_submit']}x; server RSS at start"
        f" {out['server_start_rss_mb']} MB"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
