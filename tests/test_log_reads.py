"""The log's reads (GetCheckpoint, GetInclusionProof, GetConsistencyProof, GetEntries,
GetLogKey) are metered per client (`ReadPacer`: an IPv4 address, an IPv6 /64), one
budget for them all: past ``--log-reads-per-minute`` a client's reads wait their turn
on the event loop, one that would wait past its deadline is refused
(RESOURCE_EXHAUSTED, with when to retry, counted by /metrics
``prov_read_refusals_total{rpc}``), while another client is answered at once. A page of
GetEntries costs one read per `ENTRIES_PER_READ` entries asked for. Before, every read
was answered as fast as the server could: one client flooding pages of 1,000 entries,
64 calls in flight, took honest submissions from another address from 2.0 to 22 ms
(p50, bench/bench_log_reads.py). A real `prov serve` on loopback."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from provenance.core.errors import ReadRateError
from provenance.server.limits import ENTRIES_PER_READ, ReadPacer, entries_cost
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.wire.contract import RETRY_AFTER_KEY
from tests.conftest import ServerProc, read_line, start_server

#: Reads per minute per client: one a second, after a burst of 60.
RATE = 60

CHECKPOINT = pb.GetCheckpointRequest()
#: The largest page: `ENTRIES_PER_READ` reads' worth, whatever the log holds.
PAGE = pb.GetEntriesRequest(start=0, limit=1000)


def _two_clients(srv: ServerProc) -> tuple[list[grpc.Channel], rpc.LogStub, rpc.LogStub]:
    """Channels from 127.0.0.1 and from ::1 (two client addresses) to a server listening
    on every address, and a Log stub on each."""
    port = srv.address.rpartition(":")[2]
    channels = [
        grpc.insecure_channel(f"{host}:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for host in ("127.0.0.1", "[::1]")
    ]
    return channels, rpc.LogStub(channels[0]), rpc.LogStub(channels[1])


def _timed(
    call: Callable[..., Any], request: object, timeout: float
) -> tuple[grpc.StatusCode, float]:
    """One call: (its status, seconds it took)."""
    t = time.monotonic()
    try:
        call(request, timeout=timeout)
    except grpc.RpcError as e:
        return e.code(), time.monotonic() - t
    return grpc.StatusCode.OK, time.monotonic() - t


def _refusals(srv: ServerProc, method: str) -> float:
    """``prov_read_refusals_total{rpc=method}``, scraped from the server's /metrics."""
    with urllib.request.urlopen(read_line(srv.proc, "metrics on "), timeout=10) as r:
        text = r.read().decode()
    found = re.search(rf'^prov_read_refusals_total\{{rpc="{method}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def _failures(futures: list[Any]) -> list[grpc.StatusCode]:
    """The status codes of the calls of ``futures`` (gRPC futures) that failed."""
    return [f.exception().code() for f in futures if f.exception() is not None]


def _serve(tmp_path: Path, rate: int | None) -> ServerProc:
    """A server on an empty log, listening on every address (127.0.0.1 and ::1 are two
    clients), with /metrics; ``rate``: --log-reads-per-minute (None: the default)."""
    flags = () if rate is None else ("--log-reads-per-minute", str(rate))
    return start_server(
        tmp_path / "p.db",
        *flags,
        *("--listen", "[::]:0", "--metrics-listen", "127.0.0.1:0"),
    )


def test_a_client_flooding_log_reads_waits_its_turn_and_others_are_answered(
    tmp_path: Path,
) -> None:
    srv = _serve(tmp_path, RATE)
    channels, flood, honest = _two_clients(srv)
    try:
        # the burst: a minute's worth, whatever the method (an empty log's checkpoint is
        # OUT_OF_RANGE, its log key OK: each a read all the same)
        for i in range(RATE):
            call = flood.GetLogKey if i % 2 else flood.GetCheckpoint
            req = pb.GetLogKeyRequest() if i % 2 else CHECKPOINT
            code, took = _timed(call, req, 30)
            assert code in (grpc.StatusCode.OK, grpc.StatusCode.OUT_OF_RANGE), code
            assert took < 1.0, took
        # past it: held back until its turn (about a second at 60 a minute)
        code, took = _timed(flood.GetConsistencyProof, pb.GetConsistencyProofRequest(), 30)
        assert code is not grpc.StatusCode.RESOURCE_EXHAUSTED and took >= 0.5, (code, took)
        # calls in flight together: each waits a second longer than the one before; those
        # that would wait past their 2.5 s deadline are refused, saying why and when to retry
        calls = [flood.GetCheckpoint.future(CHECKPOINT, timeout=2.5) for _ in range(6)]
        # meanwhile another client is answered at once
        code, took = _timed(honest.GetLogKey, pb.GetLogKeyRequest(), 30)
        assert code is grpc.StatusCode.OK and took < 0.5, (code, took)
        refused = [c.exception() for c in calls]
        refused = [
            e for e in refused if e is not None and e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        ]
        assert len(refused) >= 3, [c.exception() for c in calls]
        for e in refused:
            assert "--log-reads-per-minute" in (e.details() or ""), e.details()
            trailers = {m.key: m.value for m in e.trailing_metadata() or ()}
            assert 2.5 < float(trailers[RETRY_AFTER_KEY]) <= 60, trailers
        assert _refusals(srv, "GetCheckpoint") >= 3
    finally:
        for c in channels:
            c.close()
        srv.stop()


def test_a_page_of_entries_costs_one_read_per_entries_per_read(tmp_path: Path) -> None:
    per_page = 1000 // ENTRIES_PER_READ
    srv = _serve(tmp_path, RATE)
    channels, flood, honest = _two_clients(srv)
    try:
        # a minute's worth of reads buys RATE / per_page pages of 1,000 (an empty log's
        # page is answered empty: the charge is for the entries asked for)
        for _ in range(RATE // per_page):
            code, took = _timed(flood.GetEntries, PAGE, 30)
            assert code is grpc.StatusCode.OK and took < 1.0, (code, took)
        # the next page needs per_page reads refilled (5 s at 1 a second): past a 2.5 s
        # deadline it is refused, and so is every kind of read that would wait as long
        code, _ = _timed(flood.GetEntries, PAGE, 2.5)
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, code
        # another client's page is answered, a small one costs one read
        code, took = _timed(honest.GetEntries, pb.GetEntriesRequest(start=0, limit=1), 30)
        assert code is grpc.StatusCode.OK and took < 0.5, (code, took)
        assert _refusals(srv, "GetEntries") == 1
    finally:
        for c in channels:
            c.close()
        srv.stop()


def test_zero_log_reads_per_minute_meters_nothing(tmp_path: Path) -> None:
    # past the default's burst (6,000 reads: 1,200 pages of 1,000), all in flight at
    # once: with the default, the last would wait up to 20 s and pass their deadline
    srv = _serve(tmp_path, 0)
    channels, flood, _ = _two_clients(srv)
    try:
        calls = [flood.GetEntries.future(PAGE, timeout=8) for _ in range(1600)]
        assert _failures(calls) == []
        assert _refusals(srv, "GetEntries") == 0
    finally:
        for c in channels:
            c.close()
        srv.stop()


def test_a_page_costing_more_than_the_whole_budget_is_answered_from_a_full_bucket() -> None:
    # 3 reads a minute, a page of 1,000 costs 5: it takes the whole bucket (a bucket never
    # holds 5, so asking for 5 would refuse every page for good); the next read then
    # waits for a token refilled, 20 s
    now = [0.0]
    pacer = ReadPacer(3, "log reads", "--log-reads-per-minute", clock=lambda: now[0])
    peer = "ipv4:192.0.2.1:5000"
    asyncio.run(pacer.admit(peer, "GetEntries", 10.0, entries_cost(1000)))
    with pytest.raises(ReadRateError) as refused:
        asyncio.run(pacer.admit(peer, "GetCheckpoint", 0.2))
    assert refused.value.retry_after_s == pytest.approx(20.0)
    assert "--log-reads-per-minute" in str(refused.value)
    # a minute later the bucket is full again: answered at once
    now[0] = 60.0
    asyncio.run(pacer.admit(peer, "GetEntries", 0.2, entries_cost(1000)))
