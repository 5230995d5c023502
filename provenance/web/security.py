"""Response headers every answer carries: a Content-Security-Policy that allows no
inline or third-party script (and no inline style), ``X-Content-Type-Options: nosniff``,
no framing, no referrer leaks; `CrossSiteGuard`, which refuses a POST another site's
page made a browser send; and `HostCheck`, which refuses a request for a Host name the
page was not told (``--allowed-hosts``): a DNS-rebinding page is same-origin to the
browser, so only its Host tells it apart.

Plain ASGI middlewares, so they also cover static files, streamed bodies and the
error pages Starlette writes itself. Their refusals are the API's JSON error, or, to a
request for a page (`is_api_path` false) whose ``Accept`` prefers HTML (`prefers_html`:
a browser's navigation), a short HTML page saying the same (`send_error`).
"""

from __future__ import annotations

import html
import json
from http import HTTPStatus
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from provenance.core.allowed_hosts import (
    AllowedHosts,
    malformed_host_message,
    misdirected_message,
)
from provenance.core.ports import host_name

#: Scripts and styles only from this origin, none inline; images also as blob: (the
#: page's local thumbnail of the chosen file, never uploaded twice); forms and requests
#: only to this origin; nothing may frame the page.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:;"
    " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


#: The Cache-Control of an answer made for its request (`SecurityHeaders`).
NO_STORE = (b"cache-control", b"no-store")
#: Paths whose answers keep the caching they have (static files: their ETag and
#: Last-Modified; Starlette's StaticFiles answers them).
CACHEABLE_PREFIXES = ("/static/",)


class SecurityHeaders:
    """ASGI middleware adding `SECURITY_HEADERS` to every HTTP response, and `NO_STORE`
    to every one that sets no Cache-Control of its own, outside `CACHEABLE_PREFIXES`: a
    verdict on an uploaded file, a lookup by a file's hashes, the report page, the API's
    reads and errors are made for their request (before, none said so: Chromium keeps a
    POST's answer in its disk cache for history navigation, and a GET such as
    ``/matches/byBinding?value=HASH`` could be stored by any cache on the way). The
    /tlog/ tiles set their own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        cacheable = str(scope.get("path", "")).startswith(CACHEABLE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                if not cacheable and NO_STORE[0] not in names:
                    extra.append(NO_STORE)
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


#: Methods that are answered whoever sends them: they read, never decode an upload.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: ``Sec-Fetch-Site`` values of a request this site's own page (or the user, typing an
#: address) made; ``cross-site`` and ``same-site`` (another host of the same registrable
#: domain) are another site's.
OWN_FETCH_SITES = frozenset({"same-origin", "none"})
#: The message of the 403 answer.
CROSS_SITE_MESSAGE = (
    "refused: this POST was sent by a page of another site (its browser said so in"
    " Sec-Fetch-Site or Origin); use this site's own page, or send the request without a"
    " browser (curl, a script)"
)
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _same_host(origin: str, host: str) -> bool:
    """Whether the ``Origin`` header ``origin`` (scheme://host[:port]) names ``host`` (the
    request's Host header), a default port written or left out on either side."""
    try:
        parts = urlsplit(origin)
        netloc = parts.netloc.lower()
    except ValueError:
        return False
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    names = {netloc, host.lower()}
    if default is not None:
        names = {n.removesuffix(":" + default) for n in names}
    return bool(netloc) and len(names) == 1


def is_cross_site(method: str, headers: dict[str, str]) -> bool:
    """Whether a request is one another site's page made a browser send, and costs or
    changes something (any method but `SAFE_METHODS`): a browser's ``Sec-Fetch-Site``
    other than `OWN_FETCH_SITES` (Fetch Metadata, sent by every current browser), or,
    from a browser that sends no such header (Chromium sends none to an http:// site that
    is not loopback), an ``Origin`` that is neither the request's Host nor the first
    ``X-Forwarded-Host`` (a reverse proxy's; ``null`` included). A request with neither header (curl, scripts, other
    servers) is not: the defence is against a visitor's browser being used, not against
    clients that can reach the site themselves. ``headers``: lower-case names."""
    if method in SAFE_METHODS:
        return False
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site.strip().lower() not in OWN_FETCH_SITES
    origin = headers.get("origin")
    if origin is None:
        return False
    # A proxy that rewrites Host says the site's name in X-Forwarded-Host (the first
    # one's, left-most); a hostile page cannot add that header (outside the CORS
    # safelist, the browser would ask first; a form sends none).
    forwarded = headers.get("x-forwarded-host", "").split(",")[0].strip()
    hosts = (headers.get("host", ""), *([forwarded] if forwarded else []))
    return not any(_same_host(origin.strip(), host) for host in hosts)


#: Paths answered in JSON whatever the client accepts: the API, the C2PA soft binding
#: resolution endpoints (prefixes) and the API's OpenAPI description.
API_PREFIXES = ("/api/", "/matches/", "/manifests/", "/services/")
API_PATHS = frozenset({"/openapi.json"})


def is_api_path(path: str) -> bool:
    """Whether ``path`` (a request's path) is one of the API's, whose errors are always
    JSON (`API_PREFIXES`, `API_PATHS`); any other is a page's (``/``, ``/log...``,
    ``/api``, and a path no route answers), whose errors are pages to a browser."""
    return path.startswith(API_PREFIXES) or path in API_PATHS


def _media_ranges(accept: str) -> list[tuple[str, str, float]]:
    """``(type, subtype, q)`` of each media range of an ``Accept`` header (RFC 9110
    section 12.5.1), lower-cased; a range with a malformed type or ``q`` is left out."""
    ranges = []
    for item in accept.split(","):
        media, *params = item.split(";")
        kind, slash, sub = media.strip().lower().partition("/")
        if not slash or not kind or not sub:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
        if 0.0 <= q <= 1.0:
            ranges.append((kind, sub.strip(), q))
    return ranges


def _quality(ranges: list[tuple[str, str, float]], kind: str, sub: str) -> float:
    """The ``q`` the most specific of ``ranges`` matching ``kind/sub`` gives it (``type/sub``
    before ``type/*`` before ``*/*``; the highest of equals); 0 when none matches."""
    best, q = -1, 0.0
    for rkind, rsub, rq in ranges:
        if (rkind, rsub) == (kind, sub):
            rank = 2
        elif rkind == kind and rsub == "*":
            rank = 1
        elif rkind == rsub == "*":
            rank = 0
        else:
            continue
        if rank > best or (rank == best and rq > q):
            best, q = rank, rq
    return q


def prefers_html(accept: str | None) -> bool:
    """Whether an ``Accept`` header ranks ``text/html`` above ``application/json``, as
    a browser's navigation does (``text/html,...,*/*;q=0.8``). A tie (``*/*``, curl's
    and most libraries'), no header, or a header naming JSON first is not."""
    if not accept:
        return False
    ranges = _media_ranges(accept)
    return _quality(ranges, "text", "html") > _quality(ranges, "application", "json")


def error_html(code: int, status: str, message: str) -> bytes:
    """A short HTML page saying an error: its status ``code`` and reason phrase, the
    ``message`` (escaped as HTML text; it may quote what the client sent, such as its
    Host) and the ``status`` name the JSON error carries. Self-contained: no style sheet
    or script to fetch (a refused Host would be refused those too)."""
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Error"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{code} {phrase} · Media Provenance</title>
</head>
<body>
<main>
<h1>{code} {phrase}</h1>
<p>{html.escape(message)}</p>
<p>HTTP {code} · {html.escape(status)}</p>
</main>
</body>
</html>
""".encode()


async def send_error(
    scope: Scope,
    send: Send,
    code: int,
    status: str,
    message: str,
    vary: tuple[str, ...] = (),
) -> None:
    """Answer the request of ``scope`` with HTTP status ``code`` from an ASGI middleware:
    the API's JSON error (`provenance.web.errors.error_body`'s shape), or on a page's
    path (`is_api_path` false) to an ``Accept`` that `prefers_html`, `error_html`'s page
    saying the same. ``vary``: the request headers the answer depends on, as its
    ``Vary`` (``Accept`` added on a page's path, where both forms are given). Never
    stored (`NO_STORE`), on `CACHEABLE_PREFIXES` too: a refusal is made for its request."""
    # a header sent more than once is one list of its values (RFC 9110 section 5.3)
    accept = ", ".join(v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"accept")
    page = not is_api_path(str(scope.get("path", "")))
    if page and prefers_html(accept):
        body, kind = error_html(code, status, message), b"text/html; charset=utf-8"
    else:
        error = {"code": code, "status": status, "message": message}
        body, kind = json.dumps({"error": error}).encode(), b"application/json"
    names = (*vary, "Accept") if page else vary
    start = [(b"content-type", kind), (b"content-length", str(len(body)).encode()), NO_STORE]
    if names:
        start.append((b"vary", ", ".join(names).encode()))
    await send({"type": "http.response.start", "status": code, "headers": start})
    await send({"type": "http.response.body", "body": body})


class CrossSiteGuard:
    """ASGI middleware answering 403 (PERMISSION_DENIED, as `send_error` gives it) to a
    request `is_cross_site` calls so, before its body is read: a hostile page could
    otherwise make a visitor's browser POST uploads or lookups (a CORS "simple request",
    ``Content-Type: text/plain`` or a form) to a `prov web` on the visitor's network,
    which the page itself cannot reach. The answer is unreadable to that page either
    way; what is refused is the work."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_cross_site(scope["method"], _headers(scope)):
            await self.app(scope, receive, send)
            return
        vary = ("Origin", "Sec-Fetch-Site")
        await send_error(scope, send, 403, "PERMISSION_DENIED", CROSS_SITE_MESSAGE, vary)


# --- the Host allow-list: DNS rebinding (`provenance.core.allowed_hosts`) ---


class HostCheck:
    """ASGI middleware answering 421 Misdirected Request (as `send_error` gives it) to a
    request whose Host `AllowedHosts.allows` refuses, before anything else reads it (400
    INVALID_ARGUMENT when that Host is no `host_name` at all: no name to allow).
    Starlette's TrustedHostMiddleware answers a bare "Invalid host header" (400) and
    knows no rule for addresses, so it is not used. X-Forwarded-Host is not read: a
    page cannot add it (the browser would ask first, with the page's Host, refused
    here), and a proxy that rewrites Host to this server's address (nginx's default)
    is answered by that address; one that passes Host on needs the site's name
    allowed."""

    def __init__(self, app: ASGIApp, allowed: AllowedHosts) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allowed.every:
            await self.app(scope, receive, send)
            return
        host = _headers(scope).get("host")
        if self.allowed.allows(host):
            await self.app(scope, receive, send)
            return
        assert host is not None  # allows(None) is True
        if host_name(host) is None:
            # no name to allow: a malformed Host is the client's error (RFC 9112 3.2)
            await send_error(scope, send, 400, "INVALID_ARGUMENT", malformed_host_message(host))
            return
        await send_error(scope, send, 421, "MISDIRECTED_REQUEST", misdirected_message(host))
