"""Device look-ups (GetDevice) are metered per client (`ReadPacer`: an IPv4 address, an
IPv6 /64): past ``--device-reads-per-minute`` a client's look-ups wait their turn on the
event loop, one that would wait past its deadline is refused (RESOURCE_EXHAUSTED, with
when to retry, counted by /metrics ``prov_read_refusals_total``), while another client
is answered at once. Before, every look-up was answered as fast as the server could: one
client flooding GetDevice, 64 calls in flight, got 2,300 answers a second and honest
submissions from another address went from 1.7 to 6.2 ms (p50,
bench/bench_enroll_replays.py). A real `prov serve` on loopback."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import grpc

from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.wire.contract import RETRY_AFTER_KEY
from tests.conftest import ServerProc, read_line, start_server

#: Look-ups per minute per client: one a second, after a burst of 60.
RATE = 60


#: An id nobody enrolled: each look-up is a store read answered NOT_FOUND.
NOBODY = pb.GetDeviceRequest(device_id=b"\x07" * 32)


def _look_up(stub: rpc.DeviceRegistryStub, timeout: float) -> tuple[grpc.StatusCode, float]:
    """One GetDevice of `NOBODY`: (its status, seconds it took)."""
    t = time.monotonic()
    try:
        stub.GetDevice(NOBODY, timeout=timeout)
    except grpc.RpcError as e:
        return e.code(), time.monotonic() - t
    return grpc.StatusCode.OK, time.monotonic() - t


def _refusals(srv: ServerProc) -> float:
    """``prov_read_refusals_total{rpc="GetDevice"}``, scraped from the server's /metrics."""
    with urllib.request.urlopen(read_line(srv.proc, "metrics on "), timeout=10) as r:
        text = r.read().decode()
    found = re.search(r'^prov_read_refusals_total\{rpc="GetDevice"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_client_flooding_get_device_waits_its_turn_and_others_are_answered(
    tmp_path: Path,
) -> None:
    # on every address, so that 127.0.0.1 and ::1 are two clients
    srv = start_server(
        tmp_path / "p.db",
        *("--device-reads-per-minute", str(RATE), "--listen", "[::]:0"),
        *("--metrics-listen", "127.0.0.1:0"),
    )
    port = srv.address.rpartition(":")[2]
    channels = [
        grpc.insecure_channel(f"{host}:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for host in ("127.0.0.1", "[::1]")
    ]
    flood, honest = (rpc.DeviceRegistryStub(c) for c in channels)
    try:
        # the burst: a minute's worth answered at once
        for _ in range(RATE):
            code, took = _look_up(flood, 30)
            assert code is grpc.StatusCode.NOT_FOUND and took < 1.0, (code, took)
        # past it: held back until its turn (about a second at 60 a minute)
        code, took = _look_up(flood, 30)
        assert code is grpc.StatusCode.NOT_FOUND and took >= 0.5, (code, took)
        # calls in flight together: each waits a second longer than the one before; those
        # that would wait past their 2.5 s deadline are refused, saying why and when to retry
        calls = [flood.GetDevice.future(NOBODY, timeout=2.5) for _ in range(6)]
        # meanwhile another client is answered at once
        code, took = _look_up(honest, 30)
        assert code is grpc.StatusCode.NOT_FOUND and took < 0.5, (code, took)
        refused = [c.exception() for c in calls]
        refused = [
            e for e in refused if e is not None and e.code() is not grpc.StatusCode.NOT_FOUND
        ]
        assert len(refused) >= 3, [e.code() for e in refused]
        for e in refused:
            assert e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, (e.code(), e.details())
            assert "--device-reads-per-minute" in (e.details() or ""), e.details()
            trailers = {m.key: m.value for m in e.trailing_metadata() or ()}
            assert 2.5 < float(trailers[RETRY_AFTER_KEY]) <= 60, trailers
        assert _refusals(srv) >= 3
    finally:
        for c in channels:
            c.close()
        srv.stop()
