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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from provenance.core.errors import ReadRateError
from provenance.server.limits import ENTRIES_PER_READ, ReadPacer, entries_cost
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from tests.conftest import (
    ServerProc,
    pacer_refusal,
    pacer_refuses_behind_a_held_call,
    read_refusals,
    start_server,
)

#: Reads per minute per client: a burst of 6, then one each 10 s, so that no token comes
#: back while a test runs (a few seconds): which calls wait, and which are refused, is
#: then the server's count of tokens, however long each call took on a loaded machine.
RATE = 6
#: The flag that sets `RATE`, named by each refusal.
FLAG = "--log-reads-per-minute"
#: Seconds for one token to come back at `RATE`.
REFILL_S = 60 / RATE
#: A deadline shorter than one token's refill: a read given it is answered only if it
#: did not wait for a token (one that would wait past it is refused at once).
SHORT = REFILL_S / 2

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


def _call(call: Callable[..., Any], request: object, timeout: float) -> grpc.StatusCode:
    """One call's status."""
    try:
        call(request, timeout=timeout)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def _failures(futures: list[Any]) -> list[grpc.StatusCode]:
    """The status codes of the calls of ``futures`` (gRPC futures) that failed."""
    return [f.exception().code() for f in futures if f.exception() is not None]


def _serve(tmp_path: Path, rate: int | None) -> ServerProc:
    """A server on an empty log, listening on every address (127.0.0.1 and ::1 are two
    clients), with /metrics; ``rate``: --log-reads-per-minute (None: the default)."""
    flags = () if rate is None else (FLAG, str(rate))
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
    held = None
    try:
        # the burst: a minute's worth, whatever the method (an empty log's checkpoint is
        # OUT_OF_RANGE, its log key OK: each a read all the same), each answered without
        # waiting for a token (one that waited would pass its SHORT deadline: refused)
        for i in range(RATE):
            call = flood.GetLogKey if i % 2 else flood.GetCheckpoint
            req = pb.GetLogKeyRequest() if i % 2 else CHECKPOINT
            code = _call(call, req, SHORT)
            assert code in (grpc.StatusCode.OK, grpc.StatusCode.OUT_OF_RANGE), code
        # past it: held back until its turn (REFILL_S), not refused
        held = flood.GetConsistencyProof.future(pb.GetConsistencyProofRequest(), timeout=60)
        # meanwhile another client is answered at once (from a shared bucket it would
        # wait 2 refills, past its SHORT deadline), while the flood's read is still held
        assert _call(honest.GetLogKey, pb.GetLogKeyRequest(), SHORT) is grpc.StatusCode.OK
        assert not held.done(), held
        # the held read took its turn's token: the flood's next reads would wait past
        # their deadlines and are refused at once, saying why and when to retry
        pacer_refuses_behind_a_held_call(
            lambda timeout: flood.GetCheckpoint.future(CHECKPOINT, timeout=timeout),
            *(srv, FLAG, "GetCheckpoint", REFILL_S),
        )
    finally:
        if held is not None:
            held.cancel()
        for c in channels:
            c.close()
        srv.stop()


def test_a_page_of_entries_costs_one_read_per_entries_per_read(tmp_path: Path) -> None:
    per_page = 1000 // ENTRIES_PER_READ
    assert RATE // per_page == 1 and RATE % per_page == 1
    srv = _serve(tmp_path, RATE)
    channels, flood, honest = _two_clients(srv)
    try:
        # a minute's worth of reads buys one page of 1,000 (an empty log's page is
        # answered empty: the charge is for the entries asked for), without waiting
        assert _call(flood.GetEntries, PAGE, SHORT) is grpc.StatusCode.OK
        # the next page needs per_page - 1 more reads refilled: past its deadline (and
        # READ_WAIT_MAX_S) it is refused, taking nothing
        pacer_refusal(
            flood.GetEntries.future(PAGE, timeout=SHORT).exception(),
            FLAG,
            SHORT,
        )
        # the one read left buys a small page at once
        small = pb.GetEntriesRequest(start=0, limit=1)
        assert _call(flood.GetEntries, small, SHORT) is grpc.StatusCode.OK
        # another client's page is answered at once
        assert _call(honest.GetEntries, PAGE, SHORT) is grpc.StatusCode.OK
        assert read_refusals(srv, "GetEntries") == 1
    finally:
        for c in channels:
            c.close()
        srv.stop()


def test_zero_log_reads_per_minute_meters_nothing(tmp_path: Path) -> None:
    # past the default's burst (6,000 reads: 1,200 pages of 1,000), all in flight at
    # once: with the default, the last would wait up to 20 s, and those past their 15 s
    # deadline would be refused (RESOURCE_EXHAUSTED; a machine too loaded to answer them
    # all in time fails them DEADLINE_EXCEEDED instead, which says nothing of metering)
    srv = _serve(tmp_path, 0)
    channels, flood, _ = _two_clients(srv)
    try:
        calls = [flood.GetEntries.future(PAGE, timeout=15) for _ in range(1600)]
        assert grpc.StatusCode.RESOURCE_EXHAUSTED not in _failures(calls)
        assert read_refusals(srv, "GetEntries") == 0
    finally:
        for c in channels:
            c.close()
        srv.stop()


def test_a_page_costing_more_than_the_whole_budget_is_answered_from_a_full_bucket() -> None:
    # 3 reads a minute, a page of 1,000 costs 5: it takes the whole bucket (a bucket never
    # holds 5, so asking for 5 would refuse every page for good); the next read then
    # waits for a token refilled, 20 s
    now = [0.0]
    pacer = ReadPacer(3, "log reads", FLAG, clock=lambda: now[0])
    peer = "ipv4:192.0.2.1:5000"
    asyncio.run(pacer.admit(peer, "GetEntries", 10.0, entries_cost(1000)))
    with pytest.raises(ReadRateError) as refused:
        asyncio.run(pacer.admit(peer, "GetCheckpoint", 0.2))
    assert refused.value.retry_after_s == pytest.approx(20.0)
    assert FLAG in str(refused.value)
    # a minute later the bucket is full again: answered at once
    now[0] = 60.0
    asyncio.run(pacer.admit(peer, "GetEntries", 0.2, entries_cost(1000)))
