"""Device look-ups (GetDevice) are metered per client (`ReadPacer`: an IPv4 address, an
IPv6 /64): past ``--device-reads-per-minute`` a client's look-ups wait their turn on the
event loop, one that would wait past its deadline is refused (RESOURCE_EXHAUSTED, with
when to retry, counted by /metrics ``prov_read_refusals_total``), while another client
is answered at once. Before, every look-up was answered as fast as the server could: one
client flooding GetDevice, 64 calls in flight, got 2,300 answers a second and honest
submissions from another address went from 1.7 to 6.2 ms (p50,
bench/bench_enroll_replays.py). A real `prov serve` on loopback."""

from __future__ import annotations

from pathlib import Path

import grpc

from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from tests.conftest import pacer_refuses_behind_a_held_call, start_server

#: Look-ups per minute per client: a burst of 6, then one each 10 s, so that no token
#: comes back while the test runs (a few seconds): which calls wait, and which are
#: refused, is then the server's count of tokens, however long each call took.
RATE = 6
#: The flag that sets `RATE`, named by each refusal.
FLAG = "--device-reads-per-minute"
#: Seconds for one token to come back at `RATE`.
REFILL_S = 60 / RATE
#: A deadline shorter than one token's refill: a look-up given it is answered only if it
#: did not wait for a token (one that would wait past it is refused at once).
SHORT = REFILL_S / 2


#: An id nobody enrolled: each look-up is a store read answered NOT_FOUND.
NOBODY = pb.GetDeviceRequest(device_id=b"\x07" * 32)


def _look_up(stub: rpc.DeviceRegistryStub, timeout: float) -> grpc.StatusCode:
    """One GetDevice of `NOBODY`: its status."""
    try:
        stub.GetDevice(NOBODY, timeout=timeout)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def test_a_client_flooding_get_device_waits_its_turn_and_others_are_answered(
    tmp_path: Path,
) -> None:
    # on every address, so that 127.0.0.1 and ::1 are two clients
    srv = start_server(
        tmp_path / "p.db",
        *(FLAG, str(RATE), "--listen", "[::]:0"),
        *("--metrics-listen", "127.0.0.1:0"),
    )
    port = srv.address.rpartition(":")[2]
    channels = [
        grpc.insecure_channel(f"{host}:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for host in ("127.0.0.1", "[::1]")
    ]
    flood, honest = (rpc.DeviceRegistryStub(c) for c in channels)
    held = None
    try:
        # the burst: a minute's worth, each answered without waiting for a token (one
        # that waited would pass its SHORT deadline: refused)
        for _ in range(RATE):
            assert _look_up(flood, SHORT) is grpc.StatusCode.NOT_FOUND
        # past it: held back until its turn (REFILL_S), not refused
        held = flood.GetDevice.future(NOBODY, timeout=60)
        # meanwhile another client is answered at once (from a shared bucket it would
        # wait 2 refills, past its SHORT deadline), while the flood's look-up is held
        assert _look_up(honest, SHORT) is grpc.StatusCode.NOT_FOUND
        assert not held.done(), held
        # the held look-up took its turn's token: the flood's next ones would wait past
        # their deadlines and are refused at once, saying why and when to retry
        pacer_refuses_behind_a_held_call(
            lambda timeout: flood.GetDevice.future(NOBODY, timeout=timeout),
            *(srv, FLAG, "GetDevice", REFILL_S),
        )
    finally:
        if held is not None:
            held.cancel()
        for c in channels:
            c.close()
        srv.stop()
