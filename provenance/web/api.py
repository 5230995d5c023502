"""The JSON API under ``/api/v1/`` and its OpenAPI description at ``/openapi.json``.

``POST /api/v1/verify`` answers the same object as ``prov verify --json``; the log
endpoints answer the views of `provenance.web.logviews`; every error is
``{"error": {"code", "status", "message"}}`` with the HTTP status of
`provenance.web.errors`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio.to_thread
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clients.api import ProvenanceClient, Query
from clients.cited import EvidenceChecker, check_cited, check_lookup_verdict
from clients.derived import check_soft_cited, lookup_hashes, pixels_checked
from clients.report import report_to_json
from provenance.core.binding import PDQ_ALGORITHM, PerceptualHash
from provenance.core.errors import ProvenanceError, ServerEvidenceError
from provenance.core.fair_share import client_key
from provenance.core.verify import VerificationReport
from provenance.terminal import shown_line
from provenance.web import logviews
from provenance.web.errors import SHOWN_PARAM, WebError, error_response, quoted
from provenance.web.openapi import openapi_document
from provenance.web.upload import REFUSED, timed_body
from provenance.wire.jsontext import loads_text

if TYPE_CHECKING:
    from provenance.web.app import WebState

log = logging.getLogger(__name__)

#: The file hash sent for a query by PDQ alone (no file has it: SHA-256 preimage resistance).
NO_SHA256 = bytes(32)
#: Largest JSON request body (a lookup batch), in bytes.
MAX_JSON_BYTES = 4 * 1024 * 1024

Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")


def state(request: Request) -> WebState:
    """The app's shared `WebState`."""
    return cast("WebState", request.app.state.web)


def client_address(request: Request) -> str:
    """The client the upload limits and JSON shares count against: its `client_key`, an
    IPv4 address or an IPv6 /64, as the connection cap counts, so a host cannot take
    every upload slot or reset its rate limit from its /64's other addresses. Behind a
    ``--trusted-proxy`` the request's client is already the one its X-Forwarded-For
    names (`provenance.web.proxies.TrustedProxies`); any other peer's header is not
    read."""
    return client_key(request.client.host) if request.client else "unknown"


def json_errors(fn: Handler) -> Handler:
    """Answer our errors as JSON with their HTTP status; anything else as a 500 whose
    details stay in the server log."""

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            one_value_each(request)
            return await fn(request)
        except ProvenanceError as e:
            # its traceback's frames hold the call's arguments (a refused lookup's whole
            # batch) in a reference cycle through the worker thread's future: dropped
            # here, the refcount frees them now instead of a full collection later
            e.__traceback__ = None
            return error_response(e)
        except ClientDisconnect:
            # the client left before its request was read: an answer nobody reads, and
            # no traceback in the log for each one
            return error_response(
                WebError("the client closed the connection mid-request", "CANCELLED")
            )
        except Exception:
            log.exception("unexpected error answering %s", request.url.path)
            return error_response(
                WebError("internal error; the server logged the details", "INTERNAL")
            )

    return wrapper


def one_value_each(request: Request) -> None:
    """Raises WebError (400) when a query parameter is given more than once: which value
    it means would be a guess (Starlette's ``query_params.get`` takes the last, silently),
    and no endpoint here takes a list in repeated parameters."""
    items = request.query_params.multi_items()
    if len(items) == len(request.query_params):
        return
    seen: dict[str, int] = {}
    for name, _ in items:
        seen[name] = seen.get(name, 0) + 1
    name, times = next((k, n) for k, n in seen.items() if n > 1)
    raise WebError(f"query parameter {name[:40]!r} is given {times} times; give it once")


def reads(*names: str) -> Callable[[Handler], Handler]:
    """Refuse (WebError, 400) a request with a query parameter not in ``names``, naming
    it, the value given (`quoted`) and the ones the endpoint reads: before, an unknown
    parameter was ignored and the answer was the one without it (``GET
    /api/v1/entries?count=1e9`` a page of 100, ``/log?start=-1`` the newest entries), so
    a misspelt or misremembered parameter looked like it had worked. Wrap it in
    `json_errors` or `pages.html_errors`."""

    def wrap(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def wrapper(request: Request) -> Response:
            for name, value in request.query_params.multi_items():
                if name not in names:
                    where = f"{request.method} {shown_line(request.url.path[: SHOWN_PARAM * 2])}"
                    allowed = (
                        f"reads only {', '.join(names)}" if names else "takes no query parameters"
                    )
                    raise WebError(
                        f"unknown query parameter {quoted(name)} (given {quoted(value)}):"
                        f" {where} {allowed}"
                    )
            return await fn(request)

        return wrapper

    return wrap


def metered(fn: Handler) -> Handler:
    """Charge the request to its client's reads of the log and registry
    (``WebState.reads``, ``--reads-per-minute``; `client_address`, so behind a
    ``--trusted-proxy`` the visitor its X-Forwarded-For names) before ``fn`` runs: the
    web is one gRPC client of the service, and without this one visitor's flood of
    pages spent the service's read budget for that client and every other visitor was
    slowed, then refused (bench/bench_web_reads.py). Raises WebError RATE_LIMITED (429,
    Retry-After) past the budget; wrap it in `json_errors` or `pages.html_errors`."""

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        state(request).reads.check(client_address(request))
        return await fn(request)

    return wrapper


#: The values a boolean query parameter takes (`flag`), in any case: true, then false.
FLAG_TRUE, FLAG_FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def flag(request: Request, name: str, default: bool) -> bool:
    """A boolean query parameter: true/1/yes/on or false/0/no/off in any case (`FLAG_TRUE`,
    `FLAG_FALSE`), ``default`` when absent or empty. Raises WebError (400) otherwise,
    its message listing exactly those values (before: "must be true or false", although
    the other six were taken too)."""
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    if value.lower() in FLAG_TRUE:
        return True
    if value.lower() in FLAG_FALSE:
        return False
    raise WebError(
        f"query parameter {name} must be true or false (or {'/'.join(FLAG_TRUE[1:])} for"
        f" true, {'/'.join(FLAG_FALSE[1:])} for false; any case), got {value[:20]!r}"
    )


async def verify_upload(request: Request) -> tuple[dict[str, Any], str]:
    """Rate-limit, relay the multipart upload and build the report object (the one
    ``prov verify --json`` prints, with ``path`` the uploaded file's name, and
    ``evidence_checked`` "log-key" when the cited claim's receipt verified with the
    pinned log key, ``prov web --log-key``, else null, as ``prov verify`` without
    --log-key or --witness; ``pixels_checked`` as ``prov verify --json`` says it:
    null for no near copy's verdict, false when the upload was over this page's image
    limits so its match is the service's word, `clients.derived.pixels_checked`). The
    service's answer is checked as ``prov verify`` checks it (`provenance.web.upload`): a
    verdict citing other bytes raises ServerEvidenceError (502)."""
    web = state(request)
    peer = client_address(request)
    web.limiter.check(peer)
    done = await web.relayer.verify_form(request, flag(request, "detect", True), peer)
    doc = report_to_json(done.report, done.filename) | {
        "evidence_checked": done.evidence_checked,
        "pixels_checked": pixels_checked(done.report),
    }
    return doc, done.filename


@json_errors
@reads("detect")
async def verify(request: Request) -> Response:
    """``POST /api/v1/verify``: the report on the uploaded ``file`` (and ``sidecar``)."""
    body, _ = await verify_upload(request)
    return JSONResponse(body)


#: Bytes of JSON bodies one client (`client_address`) may have in memory at once (read or
#: arriving, not yet answered): two of the largest. Before, one host's 32 connections
#: could each hold a 4 MiB body while they waited for the `JSON_WORKERS` (8 loopback
#: addresses, 256 connections: the web process at 1 GB).
JSON_BYTES_PER_CLIENT = 2 * MAX_JSON_BYTES
#: The ``Retry-After`` (seconds) of the 429 past that share.
JSON_RETRY_AFTER_S = 1


@asynccontextmanager
async def json_body(request: Request) -> AsyncIterator[bytes]:
    """The request's body, at most `MAX_JSON_BYTES`, counted against its client's share of
    JSON bytes in memory (``WebState.json_shares``, `JSON_BYTES_PER_CLIENT`) from its
    first byte until the block using it ends, under an upload's pace (`timed_body`).
    Raises WebError: 413 past the size (before any of it is read when its Content-Length
    says so: before, a body declared at 10^20 - 1 bytes was waited on until it stalled, then
    answered 408), 429 (``Retry-After``) past the share, 408 when it stalls or drips."""
    declared = request.headers.get("content-length", "").strip()
    if logviews.is_number(declared) and int(declared) > MAX_JSON_BYTES:
        raise WebError(
            f"the JSON body is larger than {MAX_JSON_BYTES:,} bytes: its Content-Length is"
            f" {int(declared):,}",
            "RESOURCE_EXHAUSTED",
        )
    web = state(request)
    shares = web.json_shares
    client = client_address(request)
    taken = 0
    try:
        data = bytearray()
        async for chunk in timed_body(request, web.relayer.limits):
            if len(data) + len(chunk) > MAX_JSON_BYTES:
                raise WebError(
                    f"the JSON body is larger than {MAX_JSON_BYTES:,} bytes", "RESOURCE_EXHAUSTED"
                )
            if not await shares.take(client, len(chunk)):
                raise WebError(
                    f"{client} already has {shares.held(client):,} bytes of JSON bodies in"
                    f" this server's memory, the most one client (an IPv4 address, an IPv6"
                    f" /64) may have at once ({shares.per_client:,}): wait for its requests"
                    f" in flight, or retry in {JSON_RETRY_AFTER_S} s",
                    "RATE_LIMITED",
                    retry_after=JSON_RETRY_AFTER_S,
                )
            taken += len(chunk)
            data += chunk
        body = bytes(data)
        del data
        yield body
    finally:
        shares.give(client, taken)


def parse_json(data: bytes) -> Any:
    """``data`` parsed as JSON (an object naming a key twice and a string holding a lone
    surrogate refused, as `provenance.wire.jsontext.loads_text` does); raises WebError
    (400) saying why not. About 0.08 s for a 4 MB body of lookup queries, 0.5 s for one of
    a million empty objects (bench/bench_json_keys.py): call it off the event loop
    (`read_json`)."""
    try:
        return loads_text(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise WebError(f"the body is not valid JSON: {e}") from e
    except RecursionError as e:
        raise WebError("the JSON body is nested too deeply") from e


#: Worker threads that parse JSON bodies and run lookups at once: more wait their turn,
#: holding no thread. Apart from the 40 threads the other routes share, and few, since
#: a parse holds the GIL: 32 concurrent 4 MB lookups from one client (bench-less probe,
#: 3 runs of 20 s at load 1.3-2.1) kept another client's GET /api/v1/checkpoint waiting
#: 6.0-9.4 s (medians; 1-2 answered per run) when each took one of those threads; with
#: 2 of these, 0.18-0.58 s (9-26 answered); with 4, 2.5-4.3 s.
JSON_WORKERS = 2


async def json_work(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on one of the `JSON_WORKERS` threads (the app's ``json_workers``),
    waiting for one while they are all busy, in its client's turn (`client_address`; the
    app's ``json_turns``, `provenance.core.fair_turns.FairTurns`): the clients with work
    waiting are served one after another, not in arrival order. Before, one client's
    lookups on 16 connections (1,000 queries each) went ahead of everyone's, and another
    client's one-query lookup waited 2.2 s (p50; 4 ms alone) and got 5 answers in 10 s."""
    web = state(request)
    async with web.json_turns.turn(client_address(request)):
        return await anyio.to_thread.run_sync(fn, *args, limiter=web.json_workers)


async def read_json(request: Request) -> Any:
    """The request's JSON body (at most `MAX_JSON_BYTES`), parsed on a worker thread
    (`json_work`) so the event loop serves other requests meanwhile; raises WebError."""
    async with json_body(request) as data:
        return await json_work(request, parse_json, data)


#: The fields a lookup body reads at each level (see the OpenAPI description).
LOOKUP_FIELDS = ("queries",)
#: A lookup body's shape, as its 400s show it.
LOOKUP_SHAPE = '{"queries": [{"sha256": "...", "pdq": [...]}, ...]}'
QUERY_FIELDS = ("ref", "sha256", "content_sha256", "media_type", "pdq")
PDQ_FIELDS = ("hash", "quality", "timestamp_seconds")


def known_fields(item: dict[str, Any], where: str, known: tuple[str, ...]) -> None:
    """Raise WebError (400) naming the first field of ``item`` not in ``known``: a
    misspelt field ignored would change the answer without a word (``"qualty": 20``
    read as quality 100 matched a hash too weak to match; hashes in ``"pdqs"`` were
    dropped and the report said none could be computed)."""
    for field in item:
        if field not in known:
            reads = ", ".join(f"`{k}`" for k in known)
            raise WebError(
                f"{where} has a field `{shown_line(str(field)[:64])}` this API does not read"
                f" (it reads {reads}): check its spelling"
            )


def pdq_hash(item: Any, where: str) -> PerceptualHash:
    """``{"hash": 64 hex, "quality": 0..100, "timestamp_seconds": >= 0}`` as a PDQ hash."""
    if not isinstance(item, dict) or not isinstance(item.get("hash"), str):
        raise WebError(f"{where} must be an object with a hex `hash`")
    known_fields(item, where, PDQ_FIELDS)
    quality, ts = item.get("quality", 100), item.get("timestamp_seconds", 0.0)
    if (
        not isinstance(quality, int)
        or isinstance(quality, bool)
        or not isinstance(ts, int | float)
        or isinstance(ts, bool)
    ):
        raise WebError(f"{where}: quality must be an integer and timestamp_seconds a number")
    try:
        return PerceptualHash(
            PDQ_ALGORITHM, logviews.parse_hash(item["hash"], f"{where}.hash"), quality, float(ts)
        )
    except ProvenanceError as e:
        raise WebError(f"{where}: {e}") from e


def lookup_query(item: Any, i: int) -> Query:
    """One lookup query object (see the OpenAPI description) as a `Query`."""
    where = f"queries[{i}]"
    if not isinstance(item, dict):
        raise WebError(f"{where} must be an object")
    known_fields(item, where, QUERY_FIELDS)
    pdq = item.get("pdq", [])
    if not isinstance(pdq, list):
        raise WebError(f"{where}.pdq must be a list")
    content = item.get("content_sha256")
    if content is not None and not isinstance(content, str):
        raise WebError(f"{where}.content_sha256 must be a string of 64 hex digits")
    if "sha256" in item and not isinstance(item["sha256"], str):
        raise WebError(f"{where}.sha256 must be a string of 64 hex digits")
    for name in ("ref", "media_type"):
        if name in item and not isinstance(item[name], str):
            raise WebError(f"{where}.{name} must be a string")
    soft = tuple(pdq_hash(h, f"{where}.pdq[{j}]") for j, h in enumerate(pdq))
    if "sha256" not in item and not soft:
        raise WebError(f"{where} needs a `sha256`, PDQ hashes in `pdq`, or both")
    return Query(
        ref=str(item.get("ref", i)),
        sha256=(
            logviews.parse_hash(item["sha256"], f"{where}.sha256")
            if "sha256" in item
            else NO_SHA256
        ),
        soft_bindings=soft,
        media_type=str(item.get("media_type", "")),
        content_sha256=logviews.parse_hash(content, f"{where}.content_sha256") if content else b"",
    )


def lookup_queries(data: bytes) -> list[Query]:
    """A lookup request body (``{"queries": [...]}``, see the OpenAPI description) parsed
    and checked: one `Query` per object. Raises WebError (400) naming what is wrong. Its
    cost grows with the body: about 0.3 s of CPU for 4 MB of small queries, so it runs
    off the event loop (`lookup`)."""
    body = parse_json(data)
    queries = body.get("queries") if isinstance(body, dict) else None
    if not isinstance(queries, list):
        raise WebError(f"send {LOOKUP_SHAPE}")
    if not queries:  # before: the message above, as if the field were missing
        raise WebError(f"the list `queries` is empty: send one query at least, {LOOKUP_SHAPE}")
    known_fields(body, "the body", LOOKUP_FIELDS)
    return [lookup_query(q, i) for i, q in enumerate(queries)]


def query_named(i: int, q: Query) -> str:
    """How a lookup's 502 names its ``i``-th query ``q``: "queries[1] (ref 'b')"."""
    return f"queries[{i}] (ref {quoted(q.ref)})"


def check_lookup_cited(
    queries: list[Query],
    found: list[tuple[str, VerificationReport]],
    server: str,
    named: Callable[[int, Query], str] = query_named,
    pinned: str | None = None,
) -> None:
    """Check the service's Lookup answer ``found`` (ref, report) for ``queries`` as
    ``prov scan`` checks its own: one report per query, in order, under its ref, and each
    report describes the file whose SHA-256 the query sent and, when its verdict rests on
    a claim's hard binding, cites a claim binding that SHA-256 or the query's
    ``content_sha256`` (`clients.cited.check_cited`; a query by PDQ alone sent
    `NO_SHA256`, which no claim binds); and, when its verdict rests on a claim's soft
    binding (DERIVED; REVOKED_KEY of a near match), cites a claim whose PDQ hashes match
    the query's by the service's rule (`clients.derived.check_soft_cited`, the code `prov
    scan` checks its own with: within `PDQ_MATCH_THRESHOLD` bits, a ``video/...`` query's
    frames lined up in time); and that each verdict is one an honest service gives a
    lookup (`clients.cited.check_lookup_verdict`: never TAMPERED, an UNSIGNED citing and
    listing no claim, a REVOKED_KEY citing one; so a relay's TAMPERED or UNSIGNED beside an
    unrelated genuine claim is not shown). Comparisons only: no bytes here
    to hash. With ``pinned``
    (the log key NAME+ID+KEY pinned with ``prov web --log-key``), the receipt of the
    claim each verdict cites, and of each claim it lists as also signed, must verify
    with that key too (`clients.cited.EvidenceChecker`, as ``prov scan --log-key``
    checks its lookups: relayed unchecked, under another log's key a lookup would be
    200 while an upload was 502). Raises ServerEvidenceError
    (502), its message after `REFUSED` naming the query as ``named`` names it
    (`query_named`), its ``public`` text without the service's address ``server``."""
    refs = [ref for ref, _ in found]
    if refs != [q.ref for q in queries]:
        said = f"answered {len(found)} results for {len(queries)} queries, or not in their order"
        raise ServerEvidenceError(
            f"{REFUSED}: the server at {server} {said}", public=f"{REFUSED}: the server {said}"
        )
    checker = EvidenceChecker(pinned) if pinned is not None else None
    for i, (q, (_, report)) in enumerate(zip(queries, found, strict=True)):
        try:
            check_cited(report, q.sha256, None, server, q.content_sha256)
            ev = report.evidence  # a verdict an honest service gives a lookup
            check_lookup_verdict(report.status, ev.claim is not None, len(ev.other_claims), server)
            sent = lookup_hashes(q.media_type, q.soft_bindings, queried=True)
            check_soft_cited(report, sent, server)  # a near copy's: the query's PDQ hashes
            if checker is not None:  # each checkpoint note's signature checked once
                checker.check(report, server)
        except ServerEvidenceError as e:
            where = named(i, q)
            raise ServerEvidenceError(
                f"{REFUSED}: {where}: {e}", public=f"{REFUSED}: {where}: {e.public}"
            ) from e


def _lookup_answer(
    client: ProvenanceClient, data: bytes, pinned: str | None = None
) -> JSONResponse:
    """Parse and check a lookup body, ask the service, check its answer
    (`check_lookup_cited`: 502 when a verdict cites a claim of other bytes, or a near
    copy's a claim whose PDQ hashes do not match the query's, or a verdict is none an
    honest service gives a lookup, or, with ``pinned``, a receipt that does not verify
    with that key) and render it
    (each step's cost grows with the batch; none of it belongs on the event loop)."""
    queries = lookup_queries(data)
    found = client.lookup(queries)
    check_lookup_cited(queries, found, client.address, pinned=pinned)
    return JSONResponse({"results": [{"ref": ref, **report_to_json(r)} for ref, r in found]})


@json_errors
@reads()
async def lookup(request: Request) -> Response:
    """``POST /api/v1/lookup``: reports for files described by SHA-256 and PDQ hashes.
    Only the body's bytes are read on the event loop; parsing, checking, the call and
    the answer's JSON run on a worker thread (before, a 4 MB body held the loop for
    about 0.2 s while other requests waited), at most `JSON_WORKERS` at once."""
    async with json_body(request) as data:
        web = state(request)
        return await json_work(request, _lookup_answer, web.client, data, web.config.log_key)


@json_errors
@reads()
@metered
async def checkpoint(request: Request) -> Response:
    """``GET /api/v1/checkpoint``: the newest signed checkpoint and the log key."""
    web = state(request)
    view = await run_in_threadpool(logviews.checkpoint_view, web.client, web.config.log_key)
    return JSONResponse(view)


@json_errors
@reads()
@metered
async def entry(request: Request) -> Response:
    """``GET /api/v1/entries/{index}``: one log entry with its inclusion proof."""
    index = logviews.parse_index(request.path_params["index"])
    web = state(request)
    view = await run_in_threadpool(logviews.entry_view, web.client, index, web.config.log_key)
    return JSONResponse(view)


@json_errors
@reads("sha256", "start", "limit")
@metered
async def entries(request: Request) -> Response:
    """``GET /api/v1/entries?sha256=HEX``: the entries binding a file's bytes, with their
    inclusion proofs; ``GET /api/v1/entries?start=N[&limit=M]``: a page of the log. Both
    at once is a 400: which was meant would be a guess."""
    q = request.query_params
    client, pinned = state(request).client, state(request).config.log_key
    if "sha256" in q and ("start" in q or "limit" in q):
        raise WebError(
            "sha256 finds the entries of one file and start and limit page through the log:"
            " give sha256 alone, or start and limit without it"
        )
    if "sha256" not in q:
        start = logviews.parse_index(q.get("start", "0"), "start")
        # a limit past MAX_LISTING was cut to it and 0 answered no entries, both as 200
        limit = logviews.parse_index(
            q.get("limit", str(logviews.MAX_LISTING)), "limit", 1, logviews.MAX_LISTING
        )
        page = await run_in_threadpool(logviews.entries_view, client, start, limit, None, pinned)
        return JSONResponse({"start": start, "entries": page})
    sha = logviews.parse_hash(q["sha256"], "sha256")
    # each entry found is read once, by entry_view, and checked there to be the claim found
    found = await run_in_threadpool(logviews.find_by_sha256, client, sha)
    if not found:
        raise WebError(f"no logged capture has the file SHA-256 {sha.hex()}", "NOT_FOUND")
    views = [
        await run_in_threadpool(logviews.entry_view, client, i, pinned, (sha, digest))
        for i, digest in found
    ]
    return JSONResponse({"entries": views})


@json_errors
@reads("index", "tree_size")
@metered
async def inclusion(request: Request) -> Response:
    """``GET /api/v1/proofs/inclusion?index=N[&tree_size=M]``: M left out is the latest
    tree size, its signed checkpoint held to the page's memory (`logviews.inclusion_view`:
    a rollback or fork is a 502) and the proof checked against its root; an explicit M must be at least N+1 (a tree of size 0 holds no entry, so
    an explicit 0 is refused, not taken as the latest)."""
    q = request.query_params
    index = logviews.parse_index(q.get("index"), "index")
    size = 0
    if "tree_size" in q:
        size = logviews.parse_index(q["tree_size"], "tree_size")
        if size <= index:
            raise WebError(
                f"tree_size must be at least index+1 ({index + 1}): a tree of size {size}"
                f" does not hold entry {index} (leave tree_size out for the latest)",
                "INVALID_ARGUMENT",
            )
    web = state(request)
    view = await run_in_threadpool(
        logviews.inclusion_view, web.client, index, size, web.config.log_key
    )
    return JSONResponse(view)


@json_errors
@reads("first", "second", "first_root")
@metered
async def consistency(request: Request) -> Response:
    """``GET /api/v1/proofs/consistency?first=A[&second=B][&first_root=HEX]``: B left
    out is the latest tree size; an explicit B must be at least A and at least 1 (an
    explicit 0 is refused, not taken as the latest)."""
    q = request.query_params
    first = logviews.parse_index(q.get("first"), "first")
    second = 0
    if "second" in q:
        second = logviews.parse_index(q["second"], "second")
        if second < max(first, 1):
            raise WebError(
                f"second must be at least {max(first, 1)}: a proof runs from the tree of"
                f" size first ({first}) to a larger one, not to {second} (leave second out"
                " for the latest)",
                "INVALID_ARGUMENT",
            )
    # an empty first_root is refused, not taken as left out (the page's form, which sends
    # its empty fields, is `pages.consistency`)
    root = logviews.parse_hash(q["first_root"], "first_root") if "first_root" in q else None
    web = state(request)
    view = await run_in_threadpool(
        logviews.consistency_view, web.client, first, second, root, web.config.log_key
    )
    return JSONResponse(view)


@json_errors
@reads()
@metered
async def device(request: Request) -> Response:
    """``GET /api/v1/devices/{device_id}``: a device's registry record."""
    dev = logviews.parse_hash(request.path_params["device_id"], "device id")
    return JSONResponse(await run_in_threadpool(logviews.device_view, state(request).client, dev))


@json_errors
@reads()
async def openapi(request: Request) -> Response:
    """``GET /openapi.json``: the API's OpenAPI description."""
    return JSONResponse(openapi_document())


def routes() -> list[Route]:
    """The API's routes."""
    return [
        Route("/api/v1/verify", verify, methods=["POST"]),
        Route("/api/v1/lookup", lookup, methods=["POST"]),
        Route("/api/v1/checkpoint", checkpoint),
        Route("/api/v1/entries", entries),
        Route("/api/v1/entries/{index}", entry),
        Route("/api/v1/proofs/inclusion", inclusion),
        Route("/api/v1/proofs/consistency", consistency),
        Route("/api/v1/devices/{device_id}", device),
        Route("/openapi.json", openapi),
    ]
