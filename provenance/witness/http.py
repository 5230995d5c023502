"""The witness's HTTP interface (c2sp.org/tlog-witness "HTTP Interface"):
``POST <prefix>/add-checkpoint`` and ``GET <prefix>/<origin hash>/checkpoint``, served
with uvicorn on a socket bound first."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from provenance.web.guard import DEFAULT_LIMITS, HttpLimits
from provenance.web.serve import bind, serve_until_signalled, uvicorn_server
from provenance.witness import MAX_BODY_BYTES, Answer, Witness


def _response(answer: Answer) -> Response:
    """``answer`` as an HTTP response: its Content-Type set as a header, so Starlette adds
    no charset to text/x.tlog.size, and its Retry-After when it has one."""
    headers = {"Content-Type": answer.content_type}
    if answer.retry_after:
        headers["Retry-After"] = str(answer.retry_after)
    return Response(answer.body, answer.status, headers=headers)


def create_app(witness: Witness) -> Starlette:
    """A Starlette app answering add-checkpoint and the monitors' ``GET /<origin
    hash>/checkpoint`` for ``witness`` (both prefixes are the root)."""

    async def add_checkpoint(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                break
        # on a worker thread: a signature check, a consistency proof and an fsync'd save
        # must not hold up the event loop's other connections
        answer: Answer = await run_in_threadpool(witness.add_checkpoint, bytes(body))
        return _response(answer)

    async def checkpoint(request: Request) -> Response:
        answer = await run_in_threadpool(witness.monitor_checkpoint, request.path_params["hash"])
        return _response(answer)

    return Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/{hash}/checkpoint", checkpoint, methods=["GET", "HEAD"]),
        ]
    )


def run_witness(listen: str, witness: Witness, limits: HttpLimits = DEFAULT_LIMITS) -> None:
    """Serve ``witness`` on ``listen`` (HOST:PORT, port 0 picks one) until SIGINT/SIGTERM,
    each connection under ``limits`` (a request's head and body must arrive in bounded
    time; connections per client and in all are capped); prints ``witness on
    http://HOST:PORT`` once bound, and "shutting down", "witness stopped" when signalled
    (`serve_until_signalled`: requests in flight are answered first). Raises ConfigError
    when the address cannot be bound."""
    sock, address = bind(listen)  # with TCP_NODELAY: 47 ms per add-checkpoint without, 17 with
    server = uvicorn_server(create_app(witness), limits, keep_alive=5)
    serve_until_signalled(server, sock, "witness", f"witness on http://{address}")
