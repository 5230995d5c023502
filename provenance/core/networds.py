"""Why an HTTP exchange failed, in words a person reads: the one place that turns what
http.client, ssl and the socket raise into a phrase (never a Python class name such as
``IncompleteRead(0 bytes read)``, nor ``[Errno 111]``). Used by the clients of other
servers this program calls: a tiled log's files (`provenance.log.tiledir`) and a
timestamp authority (`provenance.c2pa.timestamp`). And `metered_response`: the answer
class those clients and the witness client (`provenance.witness.client`) read through,
so that the bytes around a bounded body (headers, chunk framing, trailers) are bounded
with it (`wire_budget`); `metered_connection`, a connection to a URL's host and port
with that answer class.
"""

from __future__ import annotations

import http.client
import ssl
from typing import Any
from urllib.parse import urlsplit


def exchange_failure(e: BaseException, timeout_s: float) -> str:
    """What ``e``, raised while asking a server over HTTP (``timeout_s``: the wait for
    an answer), says happened: a phrase that starts in lower case and names no Python
    class, for the caller to put after the server's name."""
    reason = getattr(e, "reason", None)  # urllib's URLError wraps what the socket raised
    if isinstance(reason, BaseException):
        e = reason
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not trusted ({e.verify_message})"
    if isinstance(e, ssl.SSLError):
        why = (e.reason or e.strerror or "no reason given").replace("_", " ").lower()
        return f"the TLS handshake failed ({why}); check that it serves https there"
    if isinstance(e, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(e, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
        return "the server closed the connection without answering"
    if isinstance(e, http.client.BadStatusLine):
        first = str(e).strip()[:60]
        return f"the server answered something that is not HTTP ({first!r})"
    if isinstance(e, http.client.HTTPException):
        return "the server sent an answer that is not valid HTTP"
    if isinstance(e, OSError) and e.strerror:
        why = e.strerror
    else:
        why = str(reason or e) or "no reason given by the system (check the URL)"
    return why[:1].lower() + why[1:]


WIRE_SLACK_BYTES = 1 << 20
"""Bytes beyond twice an answer's bound that it may take on the wire (`wire_budget`)."""


def wire_budget(most: int) -> int:
    """Most bytes read off the connection for one answer whose body may be at most
    ``most`` bytes: its status line and headers, chunk framing, trailers and body
    together, twice the bound and `WIRE_SLACK_BYTES` (an honest server's framing is a few
    percent of the body). Before, only the body was bounded: http.client reads and drops
    trailer lines without end after a chunked body, and a chunk-size line of up to 64 KiB
    before each chunk, for as long as the caller's deadline let it (3.68 GB and 7.37 GB
    in 20 s on loopback, for a 5-byte tiled-log checkpoint)."""
    return 2 * most + WIRE_SLACK_BYTES


class OverBudget(Exception):
    """An answer that took more than its `wire_budget` off the connection; its text is a
    phrase for the caller to put after the server's name or URL."""

    def __init__(self, budget: int, most: int) -> None:
        super().__init__(
            f"the server sent more than the {budget:,} bytes (headers, chunk framing and"
            f" trailers with the body) an answer of at most {most:,} bytes may take; it"
            " was read no further"
        )
        self.budget = budget
        self.most = most


class _MeteredFile:
    """The buffered socket file an `http.client.HTTPResponse` reads, giving no more than
    ``budget`` bytes in all: its status line, headers, chunk framing, trailers and body.
    Raises OverBudget past it."""

    def __init__(self, raw: Any, budget: int, most: int) -> None:
        self._raw = raw
        self._left = budget
        self._budget = budget
        self._most = most

    def _took(self, n: int) -> None:
        self._left -= n
        if self._left < 0:
            raise OverBudget(self._budget, self._most)

    def _cap(self, n: int | None) -> int:
        return self._left + 1 if n is None or n < 0 else min(n, self._left + 1)

    def read(self, n: int | None = -1) -> bytes:
        """Up to ``n`` bytes (None or -1: as many as the budget leaves, and one)."""
        data: bytes = self._raw.read(self._cap(n))
        self._took(len(data))
        return data

    def read1(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes, from at most one read of the socket."""
        data: bytes = self._raw.read1(self._cap(n))
        self._took(len(data))
        return data

    def readline(self, limit: int = -1) -> bytes:
        """A line, of at most ``limit`` bytes."""
        data: bytes = self._raw.readline(self._cap(limit))
        self._took(len(data))
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Bytes read into ``buffer``, at most as many as the budget leaves and one."""
        n: int = self._raw.readinto(memoryview(buffer)[: self._cap(len(buffer))])
        self._took(n)
        return n

    def peek(self, n: int = 0) -> bytes:
        """Bytes buffered ahead, not taken."""
        ahead: bytes = self._raw.peek(n)
        return ahead

    def close(self) -> None:
        """Close the socket file."""
        self._raw.close()

    def flush(self) -> None:
        """Flush the socket file (nothing is written through it)."""
        self._raw.flush()

    def fileno(self) -> int:
        """The socket's descriptor."""
        fd: int = self._raw.fileno()
        return fd


def metered_response(most: int) -> type[http.client.HTTPResponse]:
    """An `http.client.HTTPResponse` class (a connection's ``response_class``) that
    reads its socket no further than `wire_budget` of ``most``, the bound of its body:
    past it a read raises OverBudget (not an OSError nor an HTTPException: catch it)."""
    budget = wire_budget(most)

    class Metered(http.client.HTTPResponse):
        def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(sock, *args, **kwargs)
            self.fp = _MeteredFile(self.fp, budget, most)  # type: ignore[assignment]

    return Metered


def metered_connection(url: str, timeout_s: float, most: int) -> http.client.HTTPConnection:
    """A connection (not yet made) to the host and port of the http(s) ``url`` (one
    `provenance.cli.urls.url_problem` takes), each socket read and write under
    ``timeout_s`` seconds, its answer read through `metered_response` of ``most``. The
    port is always given: http.client, given an IPv6 host (without its brackets, as
    `urllib.parse.urlsplit` gives it) and no port, reads the address's last group as the
    port (``::1`` as host ``:`` at port 1; ``2001:db8::abcd`` raised InvalidURL)."""
    parts = urlsplit(url)
    https = parts.scheme.lower() == "https"
    kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
    port = parts.port or (443 if https else 80)
    conn = kind(parts.hostname or "", port, timeout=timeout_s)
    conn.response_class = metered_response(most)
    return conn
