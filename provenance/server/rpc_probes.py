"""Per-client bounds on the two gRPC services every caller may use without our stubs:
server reflection (``grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo``,
what grpcurl lists and describes with) and ``grpc.health.v1.Health`` (``Check`` and
``Watch``).

Neither had a bound of its own while every other endpoint has a per-client share
(README's limits table): one client's 4 threads on bidirectional reflection streams
(about 2,000 answers a second) raised another address's ``GetLogKey`` p99 on ``prov
serve`` from 6 ms to 45-56 ms (bench/bench_probe_flood.py: p50 1 -> 5 ms, p99 to
39-63 ms; with the bounds the flood gets 10 answers a second, the other client p50
2-2.6 ms, p99 10-20 ms, 4 December). `ProbeBudget` gives each client (`peer_client`: an IPv4
address or an IPv6 /64) at most `REFLECTION_STREAMS_PER_CLIENT` reflection streams at
once, and a token bucket each of `PROBES_PER_MINUTE` reflection answers and of as many
health checks (a full minute's worth at once, then that pace). A call beyond is answered
RESOURCE_EXHAUSTED with a sentence naming the bound and the seconds to wait, held back
`FORGERY_HOLD_S` first (as a forger's refusals are: n calls in flight get at most n
refusals a second, holding no thread). grpcurl's use (one stream, a request per service
described) and a load balancer's health checks (one every few seconds) stay far below.
Health ``Watch`` streams (gRPC's client-side health checking: one per channel) are
bounded likewise, `WATCH_STREAMS_PER_CLIENT` open at once: unbounded, one client's
5,000 idle streams took 115 MB of the server's memory (140 -> 255 MB resident, 5
December), and more went on growing it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from provenance.core.buckets import TokenBuckets
from provenance.server.limits import FORGERY_HOLD_S, peer_client

#: The method bounded per stream (reflection) and per call (health), by full name.
REFLECTION_METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
HEALTH_WATCH_METHOD = "/grpc.health.v1.Health/Watch"
#: Reflection streams one client may hold open at once (grpcurl opens one per command).
REFLECTION_STREAMS_PER_CLIENT = 4
#: Reflection answers, and health checks, one client gets a minute (each its own bucket;
#: a minute's worth at once): 10 a second, where grpcurl's listing of every service and
#: its descriptors takes about 20 answers, and a probe checks every few seconds.
PROBES_PER_MINUTE = 600
#: Health Watch streams one client may hold open at once (gRPC's client-side health
#: checking opens one per channel; each idle stream holds about 23 KB of the server).
WATCH_STREAMS_PER_CLIENT = 64


class ProbeBudget(grpc.aio.ServerInterceptor):
    """Server interceptor (asyncio server; see the module docstring) applying the
    per-client bounds to reflection streams, health checks and health watch streams; one
    per server, used on its event loop only. ``clock``: monotonic seconds (for the
    buckets)."""

    def __init__(
        self,
        per_minute: int = PROBES_PER_MINUTE,
        streams_per_client: int = REFLECTION_STREAMS_PER_CLIENT,
        clock: Callable[[], float] = time.monotonic,
        watches_per_client: int = WATCH_STREAMS_PER_CLIENT,
    ) -> None:
        self._answers = TokenBuckets(per_minute, clock)
        self._checks = TokenBuckets(per_minute, clock)
        self._per_minute = per_minute
        self._streams_per_client = streams_per_client
        self._watches_per_client = watches_per_client
        # (method, client) -> its streams open now
        self._streams: Counter[tuple[str, str]] = Counter()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is not None and method == REFLECTION_METHOD and handler.stream_stream:
            return handler._replace(stream_stream=self._reflection(handler.stream_stream))
        if handler is not None and method == HEALTH_CHECK_METHOD and handler.unary_unary:
            return handler._replace(unary_unary=self._check(handler.unary_unary))
        if handler is not None and method == HEALTH_WATCH_METHOD and handler.unary_stream:
            return handler._replace(unary_stream=self._watch(handler.unary_stream))
        return handler

    async def _refuse(self, context: Any, text: str) -> None:
        """Hold the refusal back `FORGERY_HOLD_S`, or half the time left before the call's
        deadline when that is sooner (as `provenance.server.limits.ForgeryPenalty` does: a
        refusal held to the deadline itself reached a caller as DEADLINE_EXCEEDED, the
        bound unnamed; a Kubernetes gRPC probe waits 1 s by default), then abort the call
        RESOURCE_EXHAUSTED with ``text``."""
        left = context.time_remaining()
        hold = FORGERY_HOLD_S if left is None else max(0.0, min(FORGERY_HOLD_S, left / 2))
        await asyncio.sleep(hold)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, text)

    def _over_pace(self, what: str, client: str, wait_s: float) -> str:
        return (
            f"too many {what} from {client}: at most {self._per_minute} a minute;"
            f" retry in {math.ceil(wait_s)} s"
        )

    def _check(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def check(request: Any, context: Any) -> Any:
            client = peer_client(context.peer())
            wait_s = self._checks.take(client)
            if wait_s > 0:
                await self._refuse(context, self._over_pace("health checks", client, wait_s))
            return await behavior(request, context)

        return check

    async def _open(self, context: Any, key: tuple[str, str], most: int, what: str) -> None:
        """Count one more stream of ``key`` (method, client) open, or refuse it (`_refuse`)
        when ``most`` are; ``what``: the streams, in words. `_close` ends the count."""
        if self._streams[key] >= most:
            await self._refuse(
                context,
                f"too many {what} from {key[1]}: at most {most} at once; close one or retry later",
            )
        self._streams[key] += 1

    def _close(self, key: tuple[str, str]) -> None:
        left = self._streams[key] - 1
        if left > 0:
            self._streams[key] = left
        else:
            del self._streams[key]

    def _reflection(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def stream(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            client = peer_client(context.peer())
            key = (REFLECTION_METHOD, client)
            await self._open(context, key, self._streams_per_client, "reflection streams")
            try:
                async for reply in behavior(self._paced(requests, client, context), context):
                    yield reply
            finally:
                self._close(key)

        return stream

    def _watch(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def watch(request: Any, context: Any) -> Any:
            key = (HEALTH_WATCH_METHOD, peer_client(context.peer()))
            await self._open(context, key, self._watches_per_client, "health watch streams")
            try:  # grpc_health's asyncio Watch writes its answers with context.write
                return await behavior(request, context)
            finally:
                self._close(key)

        return watch

    async def _paced(
        self, requests: AsyncIterator[Any], client: str, context: Any
    ) -> AsyncIterator[Any]:
        """``requests``, each once ``client`` has a reflection answer left (else the
        stream is refused)."""
        async for request in requests:
            wait_s = self._answers.take(client)
            if wait_s > 0:
                await self._refuse(context, self._over_pace("reflection answers", client, wait_s))
            yield request
