"""The witness's HTTP interface (c2sp.org/tlog-witness "HTTP Interface"):
``POST <prefix>/add-checkpoint`` and ``GET <prefix>/<origin hash>/checkpoint``, served
with uvicorn on a socket bound first. Every Host name is answered, unlike the web page
and the metrics port (`provenance.core.allowed_hosts`): servers reach a witness by its
name, and a DNS-rebinding page can read nothing secret from it (cosignatures of
checkpoints the log signed, the last one cosigned: public); docs/deploy.md, "Witnesses"."""

from __future__ import annotations

from dataclasses import replace

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from provenance.web.errors import WebError, http_status
from provenance.web.guard import DEFAULT_LIMITS, HttpLimits
from provenance.web.logviews import is_number
from provenance.web.security import SecurityHeaders
from provenance.web.serve import bind, serve_until_signalled, uvicorn_server
from provenance.web.upload import UploadLimits, timed_body
from provenance.witness import MAX_BODY_BYTES, Answer, Witness

#: Seconds the connection guard waits past the body's own deadline (`_body_limits`), so
#: the witness's 408 saying why comes first and the guard only backs it up.
GUARD_MARGIN_S = 5.0


def _response(answer: Answer) -> Response:
    """``answer`` as an HTTP response: its Content-Type set as a header, so Starlette adds
    no charset to text/x.tlog.size, and its Retry-After when it has one."""
    headers = {"Content-Type": answer.content_type}
    if answer.retry_after:
        headers["Retry-After"] = str(answer.retry_after)
    return Response(answer.body, answer.status, headers=headers)


def _body_limits(limits: HttpLimits) -> UploadLimits:
    """The pace an add-checkpoint body must keep: the connection guard's body rules
    (``limits``), applied by `timed_body` so a stall or a drip is answered 408."""
    return UploadLimits(
        MAX_BODY_BYTES,
        idle_s=limits.body_idle_seconds,
        grace_s=limits.body_grace_seconds,
        min_rate=limits.body_min_rate,
    )


def create_app(witness: Witness, limits: HttpLimits = DEFAULT_LIMITS) -> Starlette:
    """A Starlette app answering add-checkpoint and the monitors' ``GET /<origin
    hash>/checkpoint`` for ``witness`` (both prefixes are the root); an add-checkpoint
    body must arrive at the pace of ``limits`` (else 408, in words). A client that
    closes its connection mid-body is dropped quietly: before, each left an ERROR and a
    traceback in the log (starlette's ClientDisconnect), so any client could fill it."""
    body_limits = _body_limits(limits)

    async def add_checkpoint(request: Request) -> Response:
        declared = request.headers.get("content-length", "").strip()
        if is_number(declared) and int(declared) > MAX_BODY_BYTES:
            # refused from the head: before, the witness read what came and waited for
            # the rest, so a client declaring a terabyte held the connection for the
            # body's idle timeout and was then told 408 "too slow"
            return Response(
                f"the body is larger than {MAX_BODY_BYTES} bytes: its Content-Length is"
                f" {int(declared):,} bytes (an add-checkpoint body is a few KiB)\n",
                413,
                media_type="text/plain",
            )
        body = bytearray()
        try:
            async for chunk in timed_body(request, body_limits, "request's body"):
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    break
        except WebError as e:  # stalled, too slow (408), or gone (an answer nobody reads)
            return Response(f"{e}\n", http_status(e), media_type="text/plain")
        # on a worker thread: a signature check, a consistency proof and an fsync'd save
        # must not hold up the event loop's other connections
        answer: Answer = await run_in_threadpool(witness.add_checkpoint, bytes(body))
        return _response(answer)

    async def checkpoint(request: Request) -> Response:
        answer = await run_in_threadpool(witness.monitor_checkpoint, request.path_params["hash"])
        return _response(answer)

    app = Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/{hash}/checkpoint", checkpoint, methods=["GET", "HEAD"]),
        ],
        # nosniff and the rest, as the web's answers carry them: before, none, so a
        # browser was free to sniff a text/plain answer for HTML
        middleware=[Middleware(SecurityHeaders)],
    )
    # no redirect of a path with a trailing slash: Starlette's named the request's Host
    # header as the witness's address, and no tlog-witness client adds one
    app.router.redirect_slashes = False
    return app


def run_witness(listen: str, witness: Witness, limits: HttpLimits = DEFAULT_LIMITS) -> None:
    """Serve ``witness`` on ``listen`` (HOST:PORT, port 0 picks one) until SIGINT/SIGTERM,
    each connection under ``limits`` (a request's head and body must arrive in bounded
    time; connections per client and in all are capped); prints ``witness on
    http://HOST:PORT`` once bound, and "shutting down", "witness stopped" when signalled
    (`serve_until_signalled`: requests in flight are answered first). Raises ConfigError
    when the address cannot be bound."""
    sock, address = bind(listen)  # with TCP_NODELAY: 47 ms per add-checkpoint without, 17 with
    guard = replace(
        limits,
        body_idle_seconds=limits.body_idle_seconds + GUARD_MARGIN_S,
        body_grace_seconds=limits.body_grace_seconds + GUARD_MARGIN_S,
    )
    server = uvicorn_server(create_app(witness, limits), guard, keep_alive=5)
    serve_until_signalled(server, sock, "witness", f"witness on http://{address}")
