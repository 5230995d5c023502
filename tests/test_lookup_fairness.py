"""Lookups shared fairly between clients: one client's flood of Lookup calls (gRPC, or
the web API's POST /api/v1/lookup) neither shuts another client out nor goes ahead of
it, and `prov scan` waits for a busy server instead of stopping. Real servers on
loopback; 127.0.0.1 and ::1 are two client addresses of a server listening on [::]."""

from __future__ import annotations

import asyncio
import functools
import http.client
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from provenance.core.errors import LimitError
from provenance.core.fair_turns import FairTurns, Refusal
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.wire.contract import MAX_MESSAGE_BYTES, RETRY_AFTER_KEY
from tests.conftest import cli_process, read_line, start_server
from tests.drain import finish

#: A heavy Lookup: 1,000 files of 16 perceptual hashes (0.17 s on an idle machine).
HEAVY = pb.LookupRequest(
    queries=[
        pb.LookupQuery(
            ref=str(i),
            sha256=os.urandom(32),
            soft_bindings=[
                pb.SoftBinding(algorithm="pdq", hash=os.urandom(32), quality=90) for _ in range(16)
            ],
        )
        for i in range(1000)
    ]
)
ONE = pb.LookupRequest(queries=[pb.LookupQuery(ref="one", sha256=os.urandom(32))])


def _stub(host: str, port: str) -> rpc.VerificationStub:
    channel = grpc.insecure_channel(
        f"{host}:{port}",
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )
    return rpc.VerificationStub(channel)


@contextmanager
def _flood(call: Callable[[], object], threads: int) -> Iterator[list[BaseException]]:
    """``call()`` again and again on ``threads`` threads inside the block; yields the
    errors the calls raised (a list, filled as they come)."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                call()
            except Exception as e:
                errors.append(e)

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    try:
        yield errors
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=120)


def _busy(errors: list[BaseException]) -> list[grpc.RpcError]:
    """The RESOURCE_EXHAUSTED refusals among ``errors``."""
    return [
        e
        for e in errors
        if isinstance(e, grpc.RpcError) and e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    ]


def test_a_client_flooding_lookups_does_not_shut_another_client_out(tmp_path: Path) -> None:
    """8 threads of one address keep heavy Lookups in flight against --max-lookups 2 (2
    running, 2 waiting); another address's one-file Lookups are all answered, each
    queued in its turn (the flood's newest waiting call makes room). Before, Lookups were
    admitted first come, first served: 70 of 83 such calls were refused
    RESOURCE_EXHAUSTED 'already answering 4 Lookup calls', and `prov scan` stopped
    (exit 1). The flood's own refusals name --max-lookups and say when to retry."""
    srv = start_server(tmp_path / "p.db", "--listen", "[::]:0", "--max-lookups", "2")
    try:
        port = srv.address.rpartition(":")[2]
        flood, honest = _stub("127.0.0.1", port), _stub("[::1]", port)
        with _flood(functools.partial(flood.Lookup, HEAVY, timeout=120), 8) as errors:
            while not _busy(errors):  # the flood holds every place
                time.sleep(0.05)
            codes = []
            for _ in range(15):
                try:
                    honest.Lookup(ONE, timeout=60)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    codes.append(e.code())
            refused = _busy(errors)
        assert codes == [grpc.StatusCode.OK] * 15, codes
        assert len(refused) > 15  # the flood went on all the while, refused in part
        for call in refused[:5]:
            assert "--max-lookups" in (call.details() or ""), call.details()
            trailers = {m.key: m.value for m in call.trailing_metadata() or ()}
            assert float(trailers[RETRY_AFTER_KEY]) == 1.0, trailers
    finally:
        srv.stop()


def test_prov_scan_waits_for_a_busy_server_instead_of_stopping(tmp_path: Path) -> None:
    """While Lookups from the scan's own address hold every place (--max-lookups 1: one
    running, one waiting), `prov scan` is refused, waits as the server asks and tries
    again, and finishes once the flood stops: exit 0, every file in its report. Before,
    the refusal (RESOURCE_EXHAUSTED) split the batch in halves down to single files, each
    refused as well, and the scan stopped with exit 1 'already answering 1 Lookup calls'
    (so did a lone scan of 16 workers against the default 4 Lookups)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(6):
        pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    srv = start_server(tmp_path / "p.db", "--max-lookups", "1")
    report = tmp_path / "scan.jsonl"
    try:
        host, _, port = srv.address.rpartition(":")
        flood = _stub(host, port)
        with _flood(functools.partial(flood.Lookup, HEAVY, timeout=120), 6) as errors:
            while not _busy(errors):
                time.sleep(0.05)
            for _ in range(3):  # a scan whose 6 calls all slip between the flood's is retried
                report.unlink(missing_ok=True)
                scan = cli_process(
                    ["scan", str(folder), "--server", srv.address, "--report", str(report)]
                    + ["--workers", "0", "--batch-size", "1"]
                )
                time.sleep(4)  # the scan meets the flood for a while
                if scan.poll() is None:
                    break
                out, err = finish(scan)  # it slipped through (once in CI, loaded): it must
                assert scan.returncode == 0, (out, err)  # still have ended well
            assert scan.poll() is None, finish(scan)
        out, err = finish(scan, timeout=120)
        assert scan.returncode == 0, (out, err)
        rows = [json.loads(line) for line in report.read_text().splitlines()]
        assert sorted(r["status"] for r in rows) == ["UNSIGNED"] * 6, rows
    finally:
        srv.stop()


def _post(conn: http.client.HTTPConnection, body: bytes) -> int:
    conn.request("POST", "/api/v1/lookup", body, {"Content-Type": "application/json"})
    answer = conn.getresponse()
    answer.read()
    return answer.status


def _lookup_body(queries: int) -> bytes:
    return json.dumps(
        {
            "queries": [
                {"sha256": os.urandom(32).hex(), "pdq": [{"hash": os.urandom(32).hex()}]}
                for _ in range(queries)
            ]
        }
    ).encode()


def test_the_web_apis_lookups_take_turns_between_clients(tmp_path: Path) -> None:
    """16 connections of one address keep POST /api/v1/lookup of 1,000 queries in flight
    (`provenance.web.api.JSON_WORKERS` run at once); another address's one-query lookup
    waits for the calls already running and at most one more of the flood's, not for
    the flood's whole queue: at most 6 flood answers arrive while it waits (counted, not
    timed). Before, the workers were handed out first come, first served: 14-16 flood
    answers arrived first (the other client's lookup waited 2.2 s, p50, against 4 ms
    alone)."""
    srv = start_server(tmp_path / "p.db", "--listen", "[::]:0", "--http", "[::]:0")
    try:
        port = int(read_line(srv.proc, "web on ").rpartition(":")[2])
        done: list[float] = []
        heavy = _lookup_body(1000)
        local = threading.local()

        def flood_one() -> None:
            if not hasattr(local, "conn"):
                local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            assert _post(local.conn, heavy) == 200
            done.append(time.monotonic())

        with _flood(flood_one, 16) as errors:
            while len(done) < 20:  # every connection has had its lookups queued
                time.sleep(0.05)
            ahead = []
            conn = http.client.HTTPConnection("::1", port, timeout=120)
            for _ in range(5):
                sent = time.monotonic()
                assert _post(conn, _lookup_body(1)) == 200
                answered = time.monotonic()
                ahead.append(sum(sent < t < answered for t in done))
        assert not errors, errors[:3]
        assert max(ahead) <= 6, ahead
    finally:
        srv.stop()


def _refuse(why: Refusal) -> LimitError:
    return LimitError(f"{why.client} {why.waiting} {why.queued} {why.per_client} {why.dropped}")


def test_fair_turns_rotate_between_clients_and_drop_from_the_longest_queue() -> None:
    """`FairTurns` with one slot held: client A queues 3 callers, B 1; released, they run
    A, B, A, A (in turns, not in arrival order). A client at its bound is refused; with
    every place taken a newcomer makes the longest queue's newest caller refused
    ('dropped'); a caller cancelled while it waits leaves its queue and its turn goes on."""
    ran: list[str] = []

    async def run() -> None:
        turns = FairTurns(1, _refuse, per_client=3, in_all=4)
        release = asyncio.Event()

        async def caller(client: str, name: str) -> None:
            async with turns.turn(client):
                ran.append(name)
                await release.wait()

        first = asyncio.ensure_future(caller("A", "first"))
        await asyncio.sleep(0)
        a = [asyncio.ensure_future(caller("A", f"A{i}")) for i in range(3)]
        b = asyncio.ensure_future(caller("B", "B0"))
        await asyncio.sleep(0)
        assert (turns.held, turns.queued) == (1, 4)
        with pytest.raises(LimitError, match="A 3 4 True False"):
            await caller("A", "A3")  # A's own bound
        c = asyncio.ensure_future(caller("C", "C0"))  # all 4 places taken: A's newest goes
        await asyncio.sleep(0)
        with pytest.raises(LimitError, match="A 3 4 False True"):
            await a[2]
        with pytest.raises(LimitError, match="B 1 4 False False"):
            await caller("B", "B1")  # the longest queue (A: 2) is not 2 longer than B's
        c.cancel()
        await asyncio.sleep(0)
        assert turns.queued == 3
        release.set()
        await asyncio.gather(first, a[0], a[1], b)
        assert (turns.held, turns.queued) == (0, 0)

    asyncio.run(run())
    assert ran == ["first", "A0", "B0", "A1"], ran


def test_a_turn_is_held_until_its_thread_ends_even_when_its_caller_is_cancelled() -> None:
    """A Lookup whose caller goes away (gRPC cancels the handler) leaves its thread
    running until its next part boundary: the turn stays held until that thread ends, so
    turns held never undercount the Lookup threads busy and a client cannot get past its
    places by cancelling each call once it runs. Before, the turn was given back at the
    cancellation: in a real server (--max-lookups 1, a Lookup taking 1.5 s cancelled after
    0.5 s) the same client's next Lookup took the free turn behind the busy thread and a
    third one was queued rather than refused."""
    gate = threading.Event()
    ran = threading.Event()

    def work() -> str:
        ran.set()
        gate.wait(60)
        return "done"

    async def run() -> None:
        turns = FairTurns(1, _refuse, per_client=1, in_all=1)
        with futures.ThreadPoolExecutor(1) as pool:
            try:
                await held_through_cancel(turns, pool)
            finally:
                gate.set()
        assert (turns.held, turns.queued) == (0, 0)

    async def held_through_cancel(turns: FairTurns, pool: futures.Executor) -> None:
        job = asyncio.ensure_future(turns.in_thread("A", pool, work))
        while not ran.is_set():
            await asyncio.sleep(0.01)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        assert turns.held == 1  # its thread still runs
        queued = asyncio.ensure_future(turns.in_thread("A", pool, work))
        await asyncio.sleep(0)
        assert (turns.held, turns.queued) == (1, 1)
        with pytest.raises(LimitError, match="A 1 1 True False"):
            await turns.in_thread("A", pool, work)  # A's one place is taken
        gate.set()
        assert await queued == "done"

    asyncio.run(run())


def test_a_caller_cancelled_as_its_place_is_taken_for_another_makes_room_quietly() -> None:
    """Every place taken; the longest queue's newest caller is cancelled (its client went
    away) in the same turn of the event loop as another client asks for a place: the
    newcomer gets the place, the cancelled caller ends cancelled. Before, the newcomer's
    call raised asyncio.InvalidStateError ('invalid state': a refusal set on the
    cancelled caller's future), an INTERNAL error for a Lookup."""

    async def run() -> None:
        turns = FairTurns(1, _refuse, per_client=3, in_all=2)
        release = asyncio.Event()

        async def caller(client: str) -> str:
            async with turns.turn(client):
                await release.wait()
            return client

        holder = asyncio.ensure_future(caller("A"))
        await asyncio.sleep(0)
        a = [asyncio.ensure_future(caller("A")) for _ in range(2)]
        await asyncio.sleep(0)
        assert (turns.held, turns.queued) == (1, 2)
        b = asyncio.ensure_future(caller("B"))  # its first step runs before a[1]'s cancel
        a[1].cancel()
        await asyncio.sleep(0)
        assert (turns.held, turns.queued) == (1, 2)  # a[0] and b
        release.set()
        assert list(await asyncio.gather(holder, a[0], b)) == ["A", "A", "B"]
        with pytest.raises(asyncio.CancelledError):
            await a[1]
        assert (turns.held, turns.queued) == (0, 0)

    asyncio.run(run())
