"""One visitor flooding `prov web`'s log and device pages (and their JSON API) must not
use up the web's gRPC read budget and crowd other visitors out.

A real `prov serve` (run from --root, its log seeded with --entries claims of one
device) and a real `prov web` in front of it (same checkout; --web-extra passes flags to
it). The flood comes from 127.0.0.1: --inflight requests at once cycling over /log,
/log/entries/N, /log/devices/ID, /api/v1/checkpoint, /api/v1/entries/N and
/api/v1/devices/ID, for --warmup seconds before and then during the measurement (the
service's default budget of 6,000 log reads a minute per gRPC client starts as a full
burst; the warm-up spends it, as a longer flood would). --visitors other visitors, on
127.0.0.2, 127.0.0.3, ..., each browsing as a person does: an entry page, then a device
page, and so on, one every --pace seconds, for --seconds, first alone, then during the
flood. Prints the flood's answers by HTTP status and the other visitors' pages, p50 and
p99 (ms) and answers other than 200.

Measured 4 December (2 shared cores, defaults: --inflight 24, 8 visitors a page a second,
20 s; the checkout before `prov web --reads-per-minute` and this one alternated, two
runs each): alone, the visitors' pages p50 13-32 ms, p99 186-214 ms. Before, the flood
got every answer (110 a second, all 200) and the web's gRPC reads were paced by the
service (--log-reads-per-minute): the visitors' p50 63-80 ms, p99 1,274-1,278 ms (no
errors: the service's pacing kept each read under the web's 20 s deadline). With the
default of 120 a minute: the flood 201 answers then 429 (8,050-8,494), the visitors' p50
20-37 ms, p99 205-232 ms, none refused.

Usage: nice -n 5 python bench/bench_web_reads.py [--inflight 24] [--seconds 20]
       [--warmup 20] [--visitors 8] [--pace 1] [--root DIR] [--web-extra=--flag=value ...]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_enroll_replays import ms  # noqa: E402  (bench/, next to this script)
from bench_log_reads import start  # noqa: E402

from clients.api import ProvenanceClient  # noqa: E402
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL, sign_payload  # noqa: E402
from provenance.core.keys import DeviceKey  # noqa: E402
from tests.conftest import ADMIN_TOKEN, ServerProc, signed_claim, start_web  # noqa: E402


def flood(base: str, paths: list[str], inflight: int, seconds: float, q: Any) -> None:
    """GET ``paths`` in turn from 127.0.0.1, ``inflight`` at once, for ``seconds``; put
    the answers by HTTP status (or exception name) on ``q``."""

    async def run() -> None:
        got: dict[str, int] = {}
        stop = time.monotonic() + seconds
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.1")
        limits = httpx.Limits(max_connections=inflight)
        async with httpx.AsyncClient(
            base_url=base, transport=transport, limits=limits, timeout=60
        ) as c:

            async def one_after_another(k: int) -> None:
                i = k
                while time.monotonic() < stop:
                    try:
                        outcome = str((await c.get(paths[i % len(paths)])).status_code)
                    except httpx.HTTPError as e:
                        outcome = type(e).__name__
                    got[outcome] = got.get(outcome, 0) + 1
                    i += 1

            await asyncio.gather(*(one_after_another(k) for k in range(inflight)))
        q.put(got)

    asyncio.run(run())


def visitor(
    base: str, address: str, paths: list[str], seconds: float, pace: float
) -> tuple[list[float], dict[int, int]]:
    """``paths`` loaded in turn from ``address``, one every ``pace`` seconds, for
    ``seconds``: (latencies of every answer, counts of answers other than 200 by
    status)."""
    times: list[float] = []
    bad: dict[int, int] = {}
    start = time.monotonic()
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=base, transport=transport, timeout=60) as c:
        i = 0
        while time.monotonic() < start + seconds:
            t = time.perf_counter()
            r = c.get(paths[i % len(paths)])
            times.append(time.perf_counter() - t)
            if r.status_code != 200:
                bad[r.status_code] = bad.get(r.status_code, 0) + 1
            i += 1
            time.sleep(max(0.0, start + i * pace - time.monotonic()))
    return times, bad


def visitors(
    base: str, n: int, paths: list[str], seconds: float, pace: float
) -> tuple[list[float], dict[int, int]]:
    """`visitor` on ``n`` addresses at once (127.0.0.2 on): all their latencies and
    answers other than 200."""
    with ThreadPoolExecutor(n) as pool:
        runs = list(
            pool.map(lambda k: visitor(base, f"127.0.0.{2 + k}", paths, seconds, pace), range(n))
        )
    times = [t for ts, _ in runs for t in ts]
    bad: dict[int, int] = {}
    for _, b in runs:
        for code, count in b.items():
            bad[code] = bad.get(code, 0) + count
    return times, bad


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--inflight", type=int, default=24, help="flood requests at once")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds measured per phase")
    ap.add_argument("--visitors", type=int, default=8, help="other visitors, browsing")
    ap.add_argument("--pace", type=float, default=1.0, help="seconds between their pages")
    ap.add_argument("--warmup", type=float, default=20.0, help="flood seconds before measuring")
    ap.add_argument("--entries", type=int, default=50, help="claims in the log")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose servers run")
    ap.add_argument("--web-extra", action="append", default=[], help="a web flag (repeat)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-web-reads-"))
    proc, port = start(args.root, work / "a.db", [])
    web: ServerProc | None = None
    try:
        key = DeviceKey.generate()
        with ProvenanceClient(f"[::1]:{port}", ADMIN_TOKEN) as client:
            token, _ = client.create_enrollment_token()
            client.enroll(
                token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode())
            )
            for seq in range(1, args.entries + 1):
                client.submit(signed_claim(key, seq))
        web = start_web(f"127.0.0.1:{port}", *args.web_extra, root=args.root)
        base = web.address
        dev = key.key_id.hex()
        n = args.entries
        flood_paths = [
            "/log",
            f"/log/entries/{n // 2}",
            f"/log/devices/{dev}",
            "/api/v1/checkpoint",
            f"/api/v1/entries/{n // 3}",
            f"/api/v1/devices/{dev}",
        ]
        mine = [f"/log/entries/{n - 1}", f"/log/devices/{dev}"]
        times, bad = visitors(base, args.visitors, mine, args.seconds, args.pace)
        print(
            f"alone: {len(times)} pages p50 {ms(times, 0.5):.1f} p99 {ms(times, 0.99):.1f} ms,"
            f" not 200: {bad}",
            flush=True,
        )
        q = multiprocessing.get_context("spawn").Queue()
        flooder = multiprocessing.get_context("spawn").Process(
            target=flood,
            args=(base, flood_paths, args.inflight, args.warmup + args.seconds + 1, q),
        )
        flooder.start()
        time.sleep(args.warmup)
        times, bad = visitors(base, args.visitors, mine, args.seconds, args.pace)
        got = q.get()
        flooder.join()
        total = args.warmup + args.seconds + 1
        print(
            f"flood: {got} ({sum(got.values()) / total:.0f}/s); other visitors: {len(times)}"
            f" pages p50 {ms(times, 0.5):.1f} p99 {ms(times, 0.99):.1f} ms, not 200: {bad}"
            f" ({sum(bad.values()) / max(1, len(times)):.0%})",
            flush=True,
        )
    finally:
        if web is not None:
            web.stop()
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
