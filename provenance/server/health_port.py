"""``prov serve --health-listen HOST:PORT``: ``grpc.health.v1.Health`` (``Check``,
``Watch``) on a port of its own, for a load balancer's probes.

grpc core queues the calls its event loop has not taken up yet in one queue per method
(``grpc.server.max_pending_requests``, `ServerLimits.max_pending_calls`; every method is
registered, `provenance.server.rpc.HandlersWrapped`), so a flood of other calls does not
crowd out health checks (measured: docs/deploy.md, step 4). What does fail a probe on
the service's own port is a flood of ``Check`` itself: past the queue grpc core drops
the probe with the flood (CANCELLED), and a probe from the flood's own address (a load
balancer that relays its clients' calls, Health included, and probes from the same
address) shares `ProbeBudget`'s 600 checks a minute with them and is refused
RESOURCE_EXHAUSTED. Either marks a busy but healthy server down.

A second `grpc.aio` server on the same event loop answers the same health servicer
(`health.aio.HealthServicer`: what the main port's Health says) on its own port: its own
queue, its own `ProbeBudget`, nothing else served. It shares the loop on purpose: a
probe answered there says the loop that serves every call is turning (a thread or a
loop of its own would answer SERVING for a server whose loop is stuck). The port is
for the load balancer only: keep it off the public network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from provenance import metrics
from provenance.core.errors import ProvenanceError
from provenance.server.limits import MAX_STREAMS_PER_CONNECTION, idle_ms
from provenance.server.rpc_probes import ProbeBudget
from provenance.terminal import shown_line

#: Seconds between two looks at whether the server is ready (`HealthChecks.follow`).
READINESS_POLL_S = 0.5

#: How much of an unknown service's name a refused health check repeats, in characters.
SHOWN_NAME_CHARS = 100


class HealthChecks(health.aio.HealthServicer):
    """grpc's asyncio health servicer, whose Check of a service it does not have says so
    in words: NOT_FOUND naming the service asked for (escaped, at most
    `SHOWN_NAME_CHARS` of it) and the names a check may give (grpc's own answered
    NOT_FOUND with empty details)."""

    def __init__(self) -> None:
        super().__init__()
        self._names: set[str] = {""}
        self._follower: asyncio.Task[None] | None = None

    def follow(self, ready: Callable[[], bool], names: Sequence[str]) -> None:
        """From now on (on the running loop, until its tasks are cancelled at the server's
        stop), every `READINESS_POLL_S` seconds: ``names`` NOT_SERVING while ``ready()``
        is false, SERVING again once it is true (``Watch`` streams are told each change).
        ``ready`` runs in the loop's default executor (it may wait for the database a
        short while: `ProvenanceService.ready`); a check answers the state last set,
        never waiting. Before, the server said SERVING while every capture
        waited on a database that did not answer."""
        self._follower = asyncio.get_running_loop().create_task(self._follow(ready, names))

    async def _follow(self, ready: Callable[[], bool], names: Sequence[str]) -> None:
        serving = True
        while True:
            await asyncio.sleep(READINESS_POLL_S)
            now = await asyncio.get_running_loop().run_in_executor(None, ready)
            if now == serving:
                continue
            serving = now
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if now
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in names:
                await self.set(name, status)

    async def set(self, service: str, status: Any) -> None:
        """Set ``service``'s status (a ServingStatus), and remember its name as one a
        check may give."""
        self._names.add(service)
        await super().set(service, status)

    async def Check(  # noqa: N802  # the gRPC method's name
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        """The status of ``request.service``; NOT_FOUND, in words, for an unknown one."""
        if request.service not in self._names:
            asked = request.service
            name = shown_line(asked[:SHOWN_NAME_CHARS]) + (
                "..." if len(asked) > SHOWN_NAME_CHARS else ""
            )
            known = ", ".join(sorted(n for n in self._names if n))
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f'no service "{name}" on this server: a health check names "" (the whole'
                f" server) or one of {known}",
            )
        reply: health_pb2.HealthCheckResponse = await super().Check(request, context)
        return reply


async def start_health_server(
    address: str,
    servicer: health.aio.HealthServicer,
    max_pending_calls: int,
    max_connections: int,
    connection_idle_s: float,
) -> tuple[grpc.aio.Server, int]:
    """Start a `grpc.aio` server on the running loop that serves only ``servicer`` (the
    main server's health servicer) on ``address`` ("host:port"; port 0 picks one), under
    the per-client `ProbeBudget`, its grpc core queue as the main server's
    (``max_pending_calls`` a method), the main server's bound on streams a connection
    (`MAX_STREAMS_PER_CONNECTION`), at most ``max_connections`` connections at once (the
    main server's ``--max-rpc-connections``, counted apart), connections with no call
    open closed after ``connection_idle_s`` seconds (``--connection-idle-seconds``) and
    grpc's default message sizes (4 MiB; a health
    request is a few bytes). Returns (server, bound port). Raises ProvenanceError when
    the address cannot be bound (also when another process listens on it: SO_REUSEPORT
    is off)."""
    server = grpc.aio.server(
        interceptors=[ProbeBudget(), metrics.MetricsInterceptor()],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
            ("grpc.max_allowed_incoming_connections", max_connections),
            ("grpc.max_connection_idle_ms", idle_ms(connection_idle_s)),
            ("grpc.server.max_pending_requests", max_pending_calls),
            ("grpc.server.max_pending_requests_hard_limit", max_pending_calls),
        ],
    )
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = add_port(server, address, "--health-listen")
    await server.start()
    return server, port


def add_port(server: grpc.aio.Server, address: str, option: str) -> int:
    """Bind ``server`` (not started) to ``address`` ("host:port"; port 0 picks one), given
    by the flag ``option``; returns the bound port. Raises ProvenanceError naming the
    address, the flag and the reason when gRPC cannot bind it
    (`provenance.cli.options.bind_failure`: most often a port another program took
    since `prov serve` checked it, "address already in use"), not gRPC's own "Failed
    to bind to address ...; set GRPC_VERBOSITY=debug ..." (gRPC's core also logs its
    reason on stderr)."""
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:  # grpcio 1.85 raises for an address it cannot bind
        port = 0  # older ones returned 0
    if port == 0:
        from provenance.cli.options import bind_failure

        raise ProvenanceError(bind_failure(address, option))
    return port
