"""Response headers every answer carries: a Content-Security-Policy that allows no
inline or third-party script (and no inline style), ``X-Content-Type-Options: nosniff``,
no framing, no referrer leaks; `CrossSiteGuard`, which refuses a POST another site's
page made a browser send; and `HostCheck`, which refuses a request for a Host name the
page was not told (``--allowed-hosts``): a DNS-rebinding page is same-origin to the
browser, so only its Host tells it apart.

Plain ASGI middlewares, so they also cover static files, streamed bodies and the
error pages Starlette writes itself.
"""

from __future__ import annotations

import json
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


async def send_error(
    send: Send, code: int, status: str, message: str, *headers: tuple[bytes, bytes]
) -> None:
    """Answer with the API's JSON error (`provenance.web.errors.error_body`'s shape),
    HTTP status ``code``, ``headers`` added, from an ASGI middleware."""
    body = json.dumps({"error": {"code": code, "status": status, "message": message}}).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": code, "headers": [*start, *headers]})
    await send({"type": "http.response.body", "body": body})


class CrossSiteGuard:
    """ASGI middleware answering 403 (the API's JSON error, PERMISSION_DENIED) to a
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
        await send_error(
            send, 403, "PERMISSION_DENIED", CROSS_SITE_MESSAGE, (b"vary", b"Origin, Sec-Fetch-Site")
        )


# --- the Host allow-list: DNS rebinding (`provenance.core.allowed_hosts`) ---


class HostCheck:
    """ASGI middleware answering 421 Misdirected Request (the API's JSON error) to a
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
            await send_error(send, 400, "INVALID_ARGUMENT", malformed_host_message(host))
            return
        await send_error(send, 421, "MISDIRECTED_REQUEST", misdirected_message(host))
