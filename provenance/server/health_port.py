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

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from provenance import metrics
from provenance.core.errors import ProvenanceError
from provenance.server.rpc_probes import ProbeBudget


async def start_health_server(
    address: str, servicer: health.aio.HealthServicer, max_pending_calls: int
) -> tuple[grpc.aio.Server, int]:
    """Start a `grpc.aio` server on the running loop that serves only ``servicer`` (the
    main server's health servicer) on ``address`` ("host:port"; port 0 picks one), under
    the per-client `ProbeBudget`, its grpc core queue as the main server's
    (``max_pending_calls`` a method) and grpc's default message sizes (4 MiB; a health
    request is a few bytes). Returns (server, bound port). Raises ProvenanceError when
    the address cannot be bound (also when another process listens on it: SO_REUSEPORT
    is off)."""
    server = grpc.aio.server(
        interceptors=[ProbeBudget(), metrics.MetricsInterceptor()],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.server.max_pending_requests", max_pending_calls),
            ("grpc.server.max_pending_requests_hard_limit", max_pending_calls),
        ],
    )
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:
        raise ProvenanceError(f"cannot listen on {address} (--health-listen): {e}") from e
    if port == 0:
        raise ProvenanceError(
            f"cannot listen on {address} (--health-listen): the address is in use or invalid"
        )
    await server.start()
    return server, port
