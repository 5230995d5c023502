"""`prov serve --health-listen`: grpc.health.v1.Health on a port of its own, for a load
balancer's probes. A real `prov serve` on loopback ports, flooded with health checks on
its service port by a client at the probes' own address (a load balancer that relays
its clients' calls and probes from the same address): there the probes are refused
(the client's 600 checks a minute, spent by the flood) or dropped by grpc core (past
--max-pending-calls), while on the health port every probe is answered SERVING."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from tests.conftest import read_line, start_server

CHECK = "/grpc.health.v1.Health/Check"
#: Health checks the flood keeps in flight on the service port, and for how long, s.
FLOOD_CALLS = 500
FLOOD_S = 4.0


async def _check(channel: grpc.aio.Channel, timeout: float) -> str:
    """One Check of the whole server: its status's name, or the call's error code's."""
    request = health_pb2.HealthCheckRequest(service="").SerializeToString()
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(CHECK)
    try:
        reply = await call(request, timeout=timeout)
    except grpc.aio.AioRpcError as e:
        return e.code().name
    return str(
        health_pb2.HealthCheckResponse.ServingStatus.Name(
            health_pb2.HealthCheckResponse.FromString(reply).status
        )
    )


async def _flood_and_probe(
    service: str, health: str
) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """Flood ``service`` with checks for FLOOD_S; meanwhile probe it and ``health`` in
    turn. How the flood's checks, and the probes of each port, ended."""
    option = [("grpc.use_local_subchannel_pool", 1)]
    flood = [grpc.aio.insecure_channel(service, options=option) for _ in range(8)]
    on_service = grpc.aio.insecure_channel(service, options=option)
    on_health = grpc.aio.insecure_channel(health, options=option)
    channels = [*flood, on_service, on_health]
    try:
        await asyncio.gather(*(c.channel_ready() for c in channels))
        stop = time.monotonic() + FLOOD_S
        flooded: Counter[str] = Counter()

        async def flooding(i: int) -> None:
            while time.monotonic() < stop:
                flooded[await _check(flood[i % len(flood)], 30)] += 1

        flooders = asyncio.gather(*(flooding(i) for i in range(FLOOD_CALLS)))
        await asyncio.sleep(0.5)  # the flood has spent the client's checks
        service_probes: Counter[str] = Counter()
        health_probes: Counter[str] = Counter()
        while time.monotonic() < stop:
            service_probes[await _check(on_service, 2)] += 1
            health_probes[await _check(on_health, 30)] += 1
            await asyncio.sleep(0.1)
        await flooders
        return flooded, service_probes, health_probes
    finally:
        await asyncio.gather(*(c.close() for c in channels))


def test_probes_on_the_health_port_are_answered_through_a_health_check_flood(
    tmp_path: Path,
) -> None:
    """Before (the service port the only one): probes there got RESOURCE_EXHAUSTED ('too
    many health checks from 127.0.0.1') or CANCELLED (2 to 4 of 4 to 10 here), and a
    load balancer marked the busy but healthy server down. On the health port: SERVING,
    every one."""
    server = start_server(
        tmp_path / "h.db", "--health-listen", "127.0.0.1:0", "--max-pending-calls", "50"
    )
    try:
        health = read_line(server.proc, "health on ")
        flooded, on_service, on_health = asyncio.run(_flood_and_probe(server.address, health))
    finally:
        server.stop()
    assert on_health == Counter({"SERVING": sum(on_health.values())}), (on_health, on_service)
    assert sum(on_health.values()) >= 3, on_health
    # the flood was one: past its client's checks a minute, and past the queue
    assert flooded["RESOURCE_EXHAUSTED"] > 0, flooded
    assert flooded["CANCELLED"] > 0, flooded
