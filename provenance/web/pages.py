"""The HTML pages: the verification page and the public, read-only log explorer.

Server-rendered with Jinja (autoescaped: file names and claim metadata are shown as
text, never markup). Every page works without JavaScript; ``static/app.js`` only adds
drag and drop, an upload progress bar with a Cancel button and a local thumbnail. Errors are pages with
the HTTP status of the API's JSON errors.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match, Route

from provenance.core.errors import ProvenanceError
from provenance.terminal import shown_line
from provenance.web import logviews
from provenance.web.api import metered, one_value_each, reads, state, verify_upload
from provenance.web.errors import (
    WebError,
    error_body,
    error_headers,
    error_response,
    http_status,
    quoted,
)
from provenance.web.security import is_api_path

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]

#: Entries on one page of the explorer.
PAGE = 20


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    """Render template ``name`` with ``context``."""
    return state(request).templates.TemplateResponse(
        request, name, {"section": name.split(".")[0], **context}, status_code=status
    )


def error_page(
    request: Request, error: ProvenanceError, template: str = "error.html", **context: Any
) -> Response:
    """An error as a page (``template`` with ``context``), with the HTTP status the API
    would answer and its Retry-After."""
    response = render(
        request,
        template,
        http_status(error),
        error=error_body(error)["error"],
        **context,
    )
    response.headers.update(error_headers(error))
    return response


def html_errors(fn: Handler) -> Handler:
    """Show our errors as pages; anything else as a 500 page (details in the log)."""

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            one_value_each(request)
            return await fn(request)
        except ProvenanceError as e:
            return error_page(request, e)
        except ClientDisconnect:
            # the client left before its request was read: an answer nobody reads, and
            # no traceback in the log for each one
            return error_page(
                request, WebError("the client closed the connection mid-request", "CANCELLED")
            )
        except Exception:
            log.exception("unexpected error answering %s", request.url.path)
            return error_page(
                request, WebError("internal error; the server logged the details", "INTERNAL")
            )

    return wrapper


async def index(request: Request) -> Response:
    """``GET /``: the verification form."""
    return render(request, "verify.html", limit=state(request).config.max_upload_bytes)


async def to_index(request: Request) -> Response:
    """``GET /verify`` (a reload of a report page): back to the form."""
    return RedirectResponse("/", 303)


async def verify(request: Request) -> Response:
    """The form's target: the report page, or the form again with the error."""
    limit = state(request).config.max_upload_bytes
    try:
        report, filename = await verify_upload(request)
    except ProvenanceError as e:
        return error_page(request, e, "verify.html", limit=limit)
    except Exception:
        log.exception("unexpected error verifying an upload")
        error = WebError("internal error; the server logged the details", "INTERNAL")
        return error_page(request, error, "verify.html", limit=limit)
    return render(request, "verify.html", limit=limit, report=report, filename=filename)


@html_errors
@reads("before")
@metered
async def explorer(request: Request) -> Response:
    """``GET /log``: the newest checkpoint, the log key and the newest entries."""
    client, pinned = state(request).client, state(request).config.log_key
    before = request.query_params.get("before")
    # 400 before any call; an empty one too (no form sends it: before, taken as left out)
    end = logviews.parse_index(before, "before") if before is not None else None
    try:
        cp = await run_in_threadpool(logviews.checkpoint_view, client, pinned)
    except WebError as e:
        if e.code != "NOT_FOUND":
            raise
        return render(request, "log.html", checkpoint=None, recent=[], empty=str(e))
    size = cp["size"]
    if end is not None and end > size:  # before, the newest page, as if left out
        raise WebError(
            f"before must be a whole number from 0 to {size} (the log's size); got"
            f" {quoted(str(before))}",
            "OUT_OF_RANGE",
        )
    end = size if end is None else end
    start = max(0, end - PAGE)
    page = await run_in_threadpool(logviews.entries_view, client, start, end - start, size, pinned)
    return render(
        request,
        "log.html",
        checkpoint=cp,
        recent=page[::-1],
        end=end,
        older=start if start > 0 else None,
        newer=min(size, end + PAGE) if end < size else None,
    )


@html_errors
@reads()
@metered
async def entry(request: Request) -> Response:
    """``GET /log/entries/{index}``: one entry, its claim and inclusion proof."""
    index = logviews.parse_index(request.path_params["index"], "entry index")
    web = state(request)
    view = await run_in_threadpool(logviews.entry_view, web.client, index, web.config.log_key)
    return render(request, "entry.html", entry=view)


@html_errors
@reads("q")
@metered
async def goto_entry(request: Request) -> Response:
    """The explorer's search form: an index, or a file's SHA-256. A person may type an
    index with leading zeros ("007"): the form sends them on to the one canonical URL.
    A file's SHA-256 found is answered with its entry's page here (200), the entry read
    once and checked to be the claim the lookup cited (`logviews.entry_view`'s
    ``found``), not redirected to ``/log/entries/N``, which would read entry N again
    with no tie to the search (a service could send another entry the second time).
    A device id (64 hex digits too) that is
    no file's SHA-256 goes to its device page; the start of one (pages show device ids
    shortened) is told how to find that page, and how to get a whole file SHA-256
    (`prov verify` shows it shortened). Other text is told what the box takes."""
    q = request.query_params.get("q", "").strip()
    if logviews.is_number(q):
        index = logviews.parse_index(q.lstrip("0") or "0", "an entry index")
        return RedirectResponse(f"/log/entries/{index}", 303)
    if SHORT_HEX.fullmatch(q):
        raise WebError(
            f"a file's SHA-256 must be 64 hex digits, got {len(q)}. If {q} is the start of"
            " a file's SHA-256 (as `prov verify` shows it, shortened), search for the whole"
            " one (`sha256sum FILE`, or `prov verify FILE --json`'s sha256); if it is the"
            " start of a device id (as pages show them, shortened), follow that device's"
            " link, or enter its whole 64-digit id in the Device form on /log"
        )
    if not SHA_HEX.fullmatch(q):
        raise WebError(
            "search for an entry index (a whole number, such as 12) or a file's SHA-256"
            f" (64 hex digits); got {len(q)} character{'' if len(q) == 1 else 's'}:"
            f" {quoted(q)}"
        )
    sha = bytes.fromhex(q)
    client, pinned = state(request).client, state(request).config.log_key
    found = await run_in_threadpool(logviews.find_by_sha256, client, sha)
    if found:
        [(index, digest)] = found
        view = await run_in_threadpool(logviews.entry_view, client, index, pinned, (sha, digest))
        return render(request, "entry.html", entry=view, found_sha256=sha.hex())
    if await run_in_threadpool(logviews.device_view, client, sha, True) is not None:
        return RedirectResponse(f"/log/devices/{sha.hex()}", 303)
    raise WebError(
        f"no logged capture has the file SHA-256 {sha.hex()}, and no enrolled device that id",
        "NOT_FOUND",
    )


#: 8 to 63 hex digits: too short for a SHA-256, long enough to be a shortened device id.
SHORT_HEX = re.compile(r"[0-9a-fA-F]{8,63}")
SHA_HEX = re.compile(r"[0-9a-fA-F]{64}")


@html_errors
@reads()
@metered
async def device(request: Request) -> Response:
    """``GET /log/devices/{device_id}``: a device, enrolled or revoked."""
    dev = logviews.parse_hash(request.path_params["device_id"], "a device id")
    view = await run_in_threadpool(logviews.device_view, state(request).client, dev)
    return render(request, "device.html", device=view)


@html_errors
@reads("id")
async def goto_device(request: Request) -> Response:
    """``GET /log/device?id=HEX``: the device form's target."""
    dev = logviews.parse_hash(request.query_params.get("id", ""), "a device id")
    return RedirectResponse(f"/log/devices/{dev.hex()}", 303)


@html_errors
@reads("first", "second", "first_root")
@metered
async def consistency(request: Request) -> Response:
    """``GET /log/consistency?first=A[&second=B][&first_root=HEX]``: B empty (as the
    form sends it) or left out is the latest tree size; an explicit B of 0 is refused, as
    the API refuses it (`api.consistency`), not taken as the latest: before, the page
    showed the proof to the latest size under a URL that asked for 0."""
    q = request.query_params
    first = logviews.parse_index(q.get("first"), "the first tree size")
    second = logviews.parse_index(q.get("second", "") or "0", "the second tree size")
    if q.get("second") and not second:
        raise WebError(
            f"the second tree size must be at least {max(first, 1)}: a proof runs from the"
            f" tree of size first ({first}) to a larger one, not to 0 (leave it empty for"
            " the latest)"
        )
    root = logviews.parse_hash(q["first_root"], "the first root") if q.get("first_root") else None
    web = state(request)
    view = await run_in_threadpool(
        logviews.consistency_view, web.client, first, second, root, web.config.log_key
    )
    return render(request, "consistency.html", proof=view, first_root=q.get("first_root", ""))


def own_address(request: Request) -> str:
    """``http://HOST:PORT``: this server as the connection of ``request`` reached it, the
    address and port it is bound to (the listen address, or, for a wildcard one such as
    0.0.0.0, the server's address the client connected to; never ``localhost`` or
    another name). Never the request's Host header: a client chooses that, and the /api
    page showed it in the examples a reader copies (``Host: evil.example`` made them
    ``curl http://evil.example/...``). Behind a reverse proxy this is the address the
    proxy reaches, not the public one."""
    server = request.scope.get("server")
    if not server or server[1] is None:  # a Unix socket, or no address known
        return ""
    host, port = str(server[0]), int(server[1])
    shown = f"[{host}]" if ":" in host else host
    return f"{request.url.scheme}://{shown}:{port}"


async def api_help(request: Request) -> Response:
    """``GET /api``: the API's endpoints with examples (curl commands naming this
    server's own address, `own_address`)."""
    return render(request, "api.html", base=own_address(request))


#: Characters of a path a 404 or 405 names (a request line may hold 16 KiB of it).
SHOWN_PATH = 200


def slash_redirect(request: Request) -> Response | None:
    """A 307 to the request's path without its trailing slashes (``/log/`` to ``/log``,
    the query kept) when a route answers that path, else None. Its Location is the path
    alone: Starlette's own redirect (``redirect_slashes``, turned off in `create_app`)
    built an absolute URL from the request's ``Host`` header and the scheme this process
    saw (``Host: evil.example`` was sent to ``http://evil.example/log``; behind a TLS
    proxy, to ``http://``)."""
    path = request.url.path
    stripped = path.rstrip("/")
    if stripped == path or not stripped or stripped.startswith("//"):
        return None
    scope = {**request.scope, "path": stripped}
    if not any(route.matches(scope)[0] is not Match.NONE for route in request.app.routes):
        return None
    query = request.scope.get("query_string", b"").decode("latin-1")
    location = quote(stripped, safe="/:@!$&'()*+,;=~") + (f"?{query}" if query else "")
    return RedirectResponse(location, 307)


async def not_found(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 answers: JSON on the API's paths (`is_api_path`), a page
    elsewhere; a 405 names the allowed methods in its Allow header. A path with a
    trailing slash that a route answers without it is redirected there
    (`slash_redirect`)."""
    code = exc.status_code if isinstance(exc, HTTPException) else 500
    if code == 404 and (redirect := slash_redirect(request)) is not None:
        return redirect
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    api = is_api_path(request.url.path)
    # as every text from a client is shown: controls as escapes (a JSON message held
    # them as sent: U+202E, a terminal's ESC), and not the whole of a long path
    path = shown_line(request.url.path[:SHOWN_PATH]) + (
        "..." if len(request.url.path) > SHOWN_PATH else ""
    )
    if code == 404:
        text = f"no API endpoint {path}; see /openapi.json" if api else f"no such page: {path}"
        error = WebError(text, "NOT_FOUND")
    elif code == 405:
        allowed = headers.get("Allow", "")
        also = f" (allowed: {allowed})" if allowed else ""
        error = WebError(f"{request.method} is not allowed on {path}{also}", "METHOD_NOT_ALLOWED")
    else:
        error = WebError(f"cannot answer {path}", "INTERNAL")
    response = error_response(error) if api else error_page(request, error)
    response.status_code = code if code in (404, 405) else 500
    if "Allow" in headers:
        response.headers["Allow"] = headers["Allow"]
    return response


def exception_handlers() -> dict[Any, Any]:
    """Starlette's HTTP errors (unknown paths, wrong methods) in our shapes."""
    return {404: not_found, 405: not_found}


def routes() -> list[Route]:
    """The pages' routes."""
    return [
        Route("/", index),
        Route("/verify", verify, methods=["POST"]),
        Route("/verify", to_index),
        Route("/log", explorer),
        Route("/log/find", goto_entry),
        Route("/log/entries/{index}", entry),
        Route("/log/device", goto_device),
        Route("/log/devices/{device_id}", device),
        Route("/log/consistency", consistency),
        Route("/api", api_help),
    ]
