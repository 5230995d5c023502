"""Replays of many distinct logged claims (the reviewer's flood, session 24) must not
crowd the honest submissions out of the log writer.

A real `prov serve` on loopback (SQLite, or with --postgres a temporary PostgreSQL
cluster; device quotas off: the honest devices submit
faster than a quota allows). Setup: --devices devices log --logged claims
(default 6,000). Then --honest honest devices submit new claims one after another
(each its own chain), first alone for --baseline-seconds, then while one client replays
--replays (default 2,000) distinct, already logged claims, --inflight of them at once
(byte-identical envelopes, as anyone reading the public log can rebuild them), from a
process of its own (its client CPU apart from the honest callers' event loop). Each
replay is sent once, so none of them is answered from the server's cache of recent
envelopes by a second copy. Meanwhile (both phases) one honest device on another client
address ([::1], the flood on 127.0.0.1) replays its own logged claims one after another
(logged before the others, so no longer kept in memory: each a read), as a device does
that lost an answer; each is sent once, --own-pause-ms apart.

Prints, per phase: honest submissions, their p50 and p99 latency, the honest device's
replays and their p50 and p99 latency, and the submissions
the log writer took (the server's prov_commit_batch_size_sum) less the honest ones, that
is, the replays that reached the writer, and the seconds its commits took
(prov_commit_duration_seconds_sum); the replays' answers by outcome, and the
honest p50/p99 ratio flood/baseline. Writes JSON (--json, default
out/bench/bench_replays.json).

Usage: nice -n 5 python bench/bench_replays.py [--logged 6000] [--replays 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import re
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clients.api import ProvenanceClient  # noqa: E402
from provenance.core.claims import SignedClaim  # noqa: E402
from provenance.core.keys import DeviceKey  # noqa: E402
from provenance.v1 import provenance_pb2 as pb  # noqa: E402
from provenance.v1 import provenance_pb2_grpc as rpc  # noqa: E402
from provenance.wire import convert as wire  # noqa: E402
from tests.conftest import (  # noqa: E402
    ADMIN_TOKEN,
    PG_LOG_KEYS,
    enroll_key,
    read_line,
    signed_claim,
    start_server,
)
from tests.pgserver import PgServer  # noqa: E402


def writer_work(metrics_url: str) -> tuple[int, float]:
    """(submissions the server's writer has taken into its group commits, seconds its
    commits took) so far, from its /metrics."""
    with urllib.request.urlopen(metrics_url, timeout=30) as r:
        text = r.read().decode()
    got = []
    for name in ("prov_commit_batch_size_sum", "prov_commit_duration_seconds_sum"):
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        if found is None:
            raise SystemExit(f"the server's /metrics has no {name}")
        got.append(float(found.group(1)))
    return int(got[0]), got[1]


def _request(signed: SignedClaim) -> pb.SubmitCaptureRequest:
    return pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(signed))


async def _log_claims(
    stub: rpc.CapturesStub, keys: list[DeviceKey], per_device: int
) -> list[SignedClaim]:
    """Log ``per_device`` claims of each device (the devices in parallel); return them."""
    out: list[SignedClaim] = []

    async def device(key: DeviceKey) -> None:
        for seq in range(1, per_device + 1):
            signed = signed_claim(key, seq)
            r = await stub.SubmitCapture(_request(signed), timeout=60)
            assert not r.duplicate
            out.append(signed)

    await asyncio.gather(*(device(k) for k in keys))
    return out


async def _timed(
    stub: rpc.CapturesStub,
    req: pb.SubmitCaptureRequest,
    lat: list[float],
    failed: Counter[str],
) -> pb.SubmitCaptureResponse | None:
    """One SubmitCapture of ``req``: its answer, its latency (s) added to ``lat``; or
    None, its status code counted in ``failed``."""
    t0 = time.perf_counter()
    try:
        r: pb.SubmitCaptureResponse = await stub.SubmitCapture(req, timeout=60)
    except grpc.aio.AioRpcError as e:
        failed[e.code().name] += 1
        return None
    lat.append(time.perf_counter() - t0)
    return r


async def _honest(
    stub: rpc.CapturesStub, keys: list[DeviceKey], seqs: list[int], stop: asyncio.Event
) -> tuple[list[float], Counter[str]]:
    """Each honest device submits new claims one after another until ``stop``; returns
    the accepted ones' latencies (s) and the failures by status code."""
    lat: list[float] = []
    failed: Counter[str] = Counter()

    async def device(i: int) -> None:
        while not stop.is_set():
            seqs[i] += 1
            r = await _timed(stub, _request(signed_claim(keys[i], seqs[i])), lat, failed)
            assert r is None or not r.duplicate

    await asyncio.gather(*(device(i) for i in range(len(keys))))
    return lat, failed


async def _honest_replays(
    stub: rpc.CapturesStub, claims: list[SignedClaim], stop: asyncio.Event, pause: float
) -> tuple[list[float], Counter[str]]:
    """Replay ``claims`` (logged, not kept) one after another, ``pause`` seconds apart,
    until ``stop`` or none is left; the latencies (s) of those answered (each a
    duplicate), and the refusals by status code."""
    lat: list[float] = []
    other: Counter[str] = Counter()
    while claims and not stop.is_set():
        r = await _timed(stub, _request(claims.pop(0)), lat, other)
        assert r is None or r.duplicate
        await asyncio.sleep(pause)
    return lat, other


def _flood(address: str, requests: list[bytes], inflight: int) -> Counter[str]:
    """`_replay` in a process of its own (the flood's client CPU off the honest callers'
    event loop: in one process they waited behind the flood's own answers)."""

    async def run() -> Counter[str]:
        async with grpc.aio.insecure_channel(address) as ch:
            return await _replay(rpc.CapturesStub(ch), requests, inflight)

    return asyncio.run(run())


def _ready() -> None:
    """Nothing: a first task for the flood's process, so that it is started and has
    imported this module before any phase is timed."""


async def _replay(stub: rpc.CapturesStub, requests: list[bytes], inflight: int) -> Counter[str]:
    """Send each of ``requests`` (serialized) once, ``inflight`` at a time; the answers
    by outcome."""
    codes: Counter[str] = Counter()
    it = iter(requests)

    async def worker() -> None:
        for data in it:
            try:
                r = await stub.SubmitCapture(pb.SubmitCaptureRequest.FromString(data), timeout=120)
                codes["duplicate" if r.duplicate else "new"] += 1
            except grpc.aio.AioRpcError as e:
                codes[e.code().name] += 1

    await asyncio.gather(*(worker() for _ in range(inflight)))
    return codes


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000 if s else float("nan")


async def _run(
    args: argparse.Namespace, address: str, metrics: str, flooder: ProcessPoolExecutor
) -> dict[str, Any]:
    with ProvenanceClient(address, admin_token=ADMIN_TOKEN) as c:
        loggers = [enroll_key(c) for _ in range(args.devices)]
        honest = [enroll_key(c) for _ in range(args.honest)]
        own = [enroll_key(c) for _ in range(4)]
    port = address.rpartition(":")[2]
    async with (
        grpc.aio.insecure_channel(address) as ch,
        grpc.aio.insecure_channel(address) as hch,
        grpc.aio.insecure_channel(f"[::1]:{port}") as rch,
    ):
        stub, hstub, rstub = rpc.CapturesStub(ch), rpc.CapturesStub(hch), rpc.CapturesStub(rch)
        t0 = time.perf_counter()
        own_logged = await _log_claims(rstub, own, args.own // len(own))
        logged = await _log_claims(stub, loggers, args.logged // args.devices)
        setup_s = time.perf_counter() - t0
        step = max(1, len(logged) // args.replays)
        replays = logged[::step][: args.replays]
        seqs = [0] * len(honest)
        phases: dict[str, Any] = {}
        for name in ("baseline", "flood"):
            stop = asyncio.Event()
            items, busy = writer_work(metrics)
            task = asyncio.ensure_future(_honest(hstub, honest, seqs, stop))
            rtask = asyncio.ensure_future(
                _honest_replays(rstub, own_logged, stop, args.own_pause_ms / 1000)
            )
            t0 = time.perf_counter()
            if name == "baseline":
                await asyncio.sleep(args.baseline_seconds)
                codes: Counter[str] = Counter()
            else:
                requests = [_request(c).SerializeToString() for c in replays]
                codes = await asyncio.get_running_loop().run_in_executor(
                    flooder, _flood, address, requests, args.inflight
                )
            seconds = time.perf_counter() - t0
            stop.set()
            lat, failed = await task
            rlat, rother = await rtask
            phases[name] = {
                "seconds": round(seconds, 2),
                "honest_ok": len(lat),
                "honest_failed": dict(failed),
                "honest_p50_ms": round(_pct(lat, 0.5), 2),
                "honest_p99_ms": round(_pct(lat, 0.99), 2),
                "own_replays": len(rlat),
                "own_replay_p50_ms": round(_pct(rlat, 0.5), 2),
                "own_replay_p99_ms": round(_pct(rlat, 0.99), 2),
                "own_replays_other": dict(rother),
                "writer_items_not_honest": writer_work(metrics)[0] - items - len(lat),
                "writer_busy_s": round(writer_work(metrics)[1] - busy, 3),
                "replays": dict(codes),
            }
    return {"logged": len(logged), "setup_s": round(setup_s, 1), **phases}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logged", type=int, default=6000, help="claims logged before the flood")
    ap.add_argument("--devices", type=int, default=30, help="devices that log them")
    ap.add_argument("--replays", type=int, default=2000, help="distinct logged claims replayed")
    ap.add_argument("--inflight", type=int, default=200, help="replays in flight at once")
    ap.add_argument("--honest", type=int, default=8, help="honest devices submitting meanwhile")
    ap.add_argument(
        "--own", type=int, default=1200, help="claims the honest replaying devices log first"
    )
    ap.add_argument("--own-pause-ms", type=float, default=10.0, help="pause between their replays")
    ap.add_argument("--baseline-seconds", type=float, default=5.0)
    ap.add_argument(
        "--postgres", action="store_true", help="a temporary PostgreSQL (tests/pgserver.py)"
    )
    ap.add_argument("--json", type=Path, default=ROOT / "out" / "bench" / "bench_replays.json")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        db: Path | str = Path(tmp) / "replays.db"
        if args.postgres:
            pg = PgServer.start()
            stack.callback(pg.stop)
            db = pg.new_database()
            PG_LOG_KEYS[db] = Path(tmp) / "pg.logkey.pem"
        server = start_server(
            db,
            *("--metrics-listen", "127.0.0.1:0", "--quota-claims-per-minute", "0"),
            *("--listen", "[::]:0"),
        )
        try:
            metrics = read_line(server.proc, "metrics on ")
            flooder = stack.enter_context(
                ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            )
            flooder.submit(_ready).result()
            out = asyncio.run(_run(args, server.address, metrics, flooder))
        finally:
            server.stop()
    out["args"] = {k: v for k, v in vars(args).items() if k != "json"}
    out["args"]["db"] = "postgresql" if args.postgres else "sqlite"
    b, f = out["baseline"], out["flood"]
    print(f"{out['logged']} claims logged in {out['setup_s']} s")
    print(f"{'':32}{'baseline':>12}{'flood':>12}")
    for key in (
        "seconds",
        "honest_ok",
        "honest_p50_ms",
        "honest_p99_ms",
        "own_replays",
        "own_replay_p50_ms",
        "own_replay_p99_ms",
        "writer_items_not_honest",
        "writer_busy_s",
    ):
        print(f"{key:32}{b[key]!s:>12}{f[key]!s:>12}")
    print(f"replays answered: {f['replays']}; honest failed: {f['honest_failed']}")
    out["p50_ratio"] = round(f["honest_p50_ms"] / b["honest_p50_ms"], 2)
    out["p99_ratio"] = round(f["honest_p99_ms"] / b["honest_p99_ms"], 2)
    print(f"honest flood/baseline: p50 {out['p50_ratio']}x, p99 {out['p99_ratio']}x")
    out["own_replay_p50_ratio"] = round(f["own_replay_p50_ms"] / b["own_replay_p50_ms"], 2)
    out["own_replay_p99_ratio"] = round(f["own_replay_p99_ms"] / b["own_replay_p99_ms"], 2)
    print(
        f"own replays flood/baseline: p50 {out['own_replay_p50_ratio']}x,"
        f" p99 {out['own_replay_p99_ratio']}x"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
