"""Connection limits for our HTTP servers (``prov web``, ``prov serve --http``, the
witness): uvicorn's own options close an idle *kept-alive* connection, but nothing bounds
how long a new connection may take to send its request, so a few hundred sockets that
send nothing, or a header a byte at a time ("slowloris"), held uvicorn's connection
slots (``limit_concurrency``) and every other caller got 503 for as long as they stayed.

`guarded_protocol(limits)` returns uvicorn's h11 protocol with, per connection:

- a head deadline: a request's line and headers must all arrive within
  ``header_seconds`` of the connection opening (or of the first byte of a later request
  on a kept-alive connection); otherwise 408 (or a silent close if nothing came);
- a head size: a request line that with its line end leaves no room within
  ``max_head_bytes`` for the head's blank line (no head with it can fit) is answered 414
  URI Too Long (RFC 9110 §15.5.15), a head (line and headers) longer than
  ``max_head_bytes`` 431 Request Header Fields Too Large (RFC 6585 §5), each with a sentence naming the limit, then
  closed. Before, h11's own bound (the same size, on the bytes of a head still
  incomplete) ended in uvicorn's bare 400 "Invalid HTTP request received.", and a longer
  head that arrived in one read was taken;
- a version: a request line naming another HTTP version than 1.x (``HTTP/2.0`` sent in
  plain text, ``HTTP/0.9``) is answered 505 HTTP Version Not Supported, saying which
  versions this server speaks, then closed (`unsupported_version`);
- a body deadline, as `provenance.web.upload.relay_body` applies to uploads (and as
  Apache's mod_reqtimeout ``body=...,MinRate=...``): a body must arrive within
  ``body_grace_seconds`` plus one second per ``body_min_rate`` bytes received, and
  never stall for ``body_idle_seconds``; time the server itself holds reading back
  (flow control, ``Expect: 100-continue``) does not count;
- an answer deadline: a client that takes none of its answer for ``body_idle_seconds``
  while the socket's buffers are full is dropped (a client that never reads would
  otherwise hold its connection and the app's task for ever); and so is one that takes
  it too slowly: counting only the time the client holds the server back (the socket's
  buffers full), it must take ``answer_min_rate`` bytes a second after the first
  ``answer_grace_seconds`` (else a client reading a byte now and then held its
  connection, the app's task and, on ``/tlog/``, its share of tile bytes in flight for
  as long as it liked); a dropped connection is reset, so the kernel lets go of the
  answer it still held for the client too;
- caps: at most ``per_client`` connections from one client (`client_key`: an IPv4
  address, or an IPv6 /64, the smallest block one host is usually given) and
  ``max_connections`` in all; one more is answered at once with 503, a
  ``Retry-After`` of `RETRY_AFTER_SECONDS` (RFC 9110 §10.2.3) and a sentence saying
  which cap, then closed;
- a lingering close (RFC 9112 §9.6): a connection the server closes while the client
  may still be sending (an answer given before the request's body ended, a refused
  connection, a deadline) is half-closed after its answer and its input read and
  dropped until the client closes too, for at most `LINGER_SECONDS` and `LINGER_BYTES`,
  and for at most ``max_connections`` connections at a time (a flood costs no more
  descriptors than that; past it a connection is closed at once), ``per_client`` of one
  client's (so one address answered early over and over cannot take every lingering
  close, and other clients' early answers come as resets). Before, closing with
  the body's bytes unread made the kernel send a reset, and a client still sending (as
  urllib does: its whole body first) got "connection reset by peer" instead of its 413.
  A request answered before its body ended is closed so, rather than kept alive: its
  declared body (of any length) was read and dropped to the end, at any pace over the
  body deadline's.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import socket
import struct
import termios
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from provenance.core.fair_share import client_key
from provenance.core.ports import Network
from provenance.web.security import NO_STORE, SECURITY_HEADERS

#: How long a connection the server closes is kept half-closed at most, its input read
#: and dropped, so that the client reads its answer rather than a reset (a "lingering
#: close", as Apache's: seconds).
LINGER_SECONDS = 2.0
#: The most bytes of input read and dropped in one lingering close (a client on a fast
#: link still sending a large body when its answer came may fill that much in 2 s).
LINGER_BYTES = 64 * 1024 * 1024
#: Bytes read from a lingering socket at a time.
_LINGER_READ = 64 * 1024
#: The ``Retry-After`` of a 503 for a full connection cap, in whole seconds (RFC 9110
#: §10.2.3 delay-seconds): long enough for a few requests in flight to finish and free
#: their connections, short enough for a person not to give up; the web app's own 503
#: for a full upload queue asks for the same.
RETRY_AFTER_SECONDS = 5
#: A timer may fire this much (seconds) before its time; a deadline that close is due.
_TIMER_SLACK = 0.005


@dataclass(frozen=True)
class HttpLimits:
    """Per-connection time limits and connection caps of one HTTP server (seconds,
    bytes/s, connections); see the module docstring for the rules."""

    header_seconds: float = 10.0
    body_idle_seconds: float = 10.0
    body_grace_seconds: float = 10.0
    body_min_rate: float = 32 * 1024
    per_client: int = 32
    max_connections: int = 256
    #: The pace a client must take an answer at, counted over the time it holds the
    #: server back (the socket's buffers full), after that much time of grace: 256 kbit/s,
    #: as uploads must arrive (bytes/s, seconds).
    answer_grace_seconds: float = 10.0
    answer_min_rate: float = 32 * 1024
    #: The longest request head taken, its request line and headers with their line
    #: ends, up to the blank line (bytes): uvicorn's bound for h11 (16 KiB; nginx's
    #: default large_client_header_buffers take 4 lines of 8 KiB).
    max_head_bytes: int = 16 * 1024
    #: Reverse proxies whose X-Forwarded-For names the client of each request
    #: (`provenance.web.proxies`); the connection caps above still count the proxy.
    trusted_proxies: tuple[Network, ...] = ()


#: The defaults, for a server started without its own limits.
DEFAULT_LIMITS = HttpLimits()


def _client(connection: object) -> str | None:
    """The `client_key` of one of uvicorn's connections (None when unknown)."""
    client: tuple[str, int] | None = getattr(connection, "client", None)
    return client_key(client[0]) if client else None


#: The headers every answer the guard writes itself carries (`_response`,
#: `_GuardedH11.send_400_response`), as the app's answers do
#: (`provenance.web.security.SecurityHeaders`); before, none (no ``nosniff``, and a 414,
#: cacheable by default, RFC 9110 section 15.1, without ``no-store``).
GUARD_HEADERS: tuple[tuple[bytes, bytes], ...] = (*SECURITY_HEADERS, NO_STORE)


def _response(status: int, reason: str, text: str, extra: str = "") -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, with `GUARD_HEADERS`;
    ``extra``: more header lines, each ending in CRLF."""
    body = text.encode()
    guard = "".join(f"{name.decode()}: {value.decode()}\r\n" for name, value in GUARD_HEADERS)
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{guard}{extra}\r\n"
    )
    return head.encode() + body


class _Linger:
    """One socket in its lingering close: half-closed (its answer and a FIN go out), its
    input read and dropped until the client closes, `LINGER_BYTES` have come or
    `LINGER_SECONDS` have passed, then closed; a member of ``group`` meanwhile, and
    counted in ``per_client`` under its client's ``key`` (`client_key`; None: not
    counted)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        group: set[_Linger],
        per_client: Counter[str],
        key: str | None,
    ) -> None:
        self._loop, self._sock, self._group = loop, sock, group
        self._per_client, self._key = per_client, key
        self._left = LINGER_BYTES
        sock.setblocking(False)
        sock.shutdown(socket.SHUT_WR)  # OSError when the client is already gone
        group.add(self)
        if key is not None:
            per_client[key] += 1
        loop.add_reader(sock.fileno(), self._read)
        self._timer = loop.call_later(LINGER_SECONDS, self._end)

    def _read(self) -> None:
        try:
            got = len(self._sock.recv(_LINGER_READ))
        except BlockingIOError:
            return
        except OSError:
            got = 0
        self._left -= got
        if not got or self._left <= 0:
            self._end()

    def _end(self) -> None:
        if self in self._group:
            self._group.discard(self)
            if self._key is not None:
                left = self._per_client[self._key] - 1
                if left > 0:
                    self._per_client[self._key] = left
                else:
                    del self._per_client[self._key]
            self._timer.cancel()
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()


#: The end of a request head: a blank line, as h11 finds it (its line ends may be bare LF).
_HEAD_END = re.compile(rb"\n\r?\n")


def _over_long_head(buffered: bytes, limit: int) -> tuple[int, str, str] | None:
    """(status, reason, text) of the answer to a request head that starts ``buffered``
    (what a connection holds of its next request, maybe more) when it is longer than
    ``limit`` bytes, its blank line included: 414 when its request line leaves no room
    for the blank line (a bare LF) within it, so that no head with this line can fit
    whatever its headers (RFC 9110 §15.5.15), else 431 (RFC 6585 §5); None when it is
    not (yet)."""
    if len(buffered) <= limit:
        return None
    end = _HEAD_END.search(buffered, 0, limit + 1)
    if end is not None and end.end() <= limit:
        return None
    if buffered.find(b"\n", 0, limit - 1) < 0:
        return (
            414,
            "URI Too Long",
            f"the request line is too long: with it no request head fits in the {limit:,}"
            " bytes this server takes\n",
        )
    return (
        431,
        "Request Header Fields Too Large",
        f"the request's line and headers are longer than the {limit:,} bytes this server"
        " takes: send fewer or shorter headers\n",
    )


def _framed_twice(scope: Any) -> bool:
    """Whether the request of ``scope`` (an ASGI HTTP scope, or None) carries both a
    Transfer-Encoding and a Content-Length header."""
    if not scope:
        return False
    names = {name.lower() for name, _ in scope["headers"]}
    return b"transfer-encoding" in names and b"content-length" in names


#: A Python repr of bytes in h11's words: "illegal request line: bytearray(b'GET ...')".
_BYTES_REPR = re.compile(r"""bytearray\(b(['"])(.*)\1\)""")


def readable_refusal(text: str) -> str:
    """h11's words ``text`` for a request it cannot read, with the bytes it quotes as a
    Python repr (``bytearray(b'...')``) quoted as text instead, their escapes (``\\xd9``)
    kept, and, for a request line, what one is. Before, the repr went to the client as
    it was, in the 400's message (`_GuardedH11.send_400_response`)."""
    text = _BYTES_REPR.sub(lambda m: f"'{m.group(2)}'", text)
    if text.startswith("illegal request line"):
        text += (
            " (a request line is METHOD TARGET HTTP/1.1, the target in printable ASCII,"
            " other bytes percent-encoded)"
        )
    return text


def origin_form(request: h11.Request) -> h11.Request:
    """``request`` with an absolute-form target (``http://HOST:PORT/path?query``, scheme
    http or https in any case) made origin-form (``/path?query``, ``/`` when the URL has
    no path) and its Host header replaced by the URL's authority, as RFC 9112 section
    3.2.2 has a server do (it must accept that form, and ignore the Host header sent
    with it); any other request as it is. The authority is checked as any Host is
    (`provenance.web.security.HostCheck`). Before, uvicorn took the whole URL for the
    path: 404 "no such page: /http://..."."""
    scheme, sep, rest = request.target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return request
    ends = [i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0]
    cut = min(ends, default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    others = [(name, value) for name, value in request.headers if name != b"host"]
    return h11.Request(
        method=request.method,
        target=path if path.startswith(b"/") else b"/" + path,
        headers=[(b"host", authority), *others],
        http_version=request.http_version,
    )


def unsupported_version(request: h11.Request) -> str | None:
    """Why the HTTP version in ``request``'s line is refused, as the message of a 505
    HTTP Version Not Supported (RFC 9110 section 15.6.6: it says which versions are
    spoken), or None for HTTP/1.0 and 1.1. h11 reads any ``HTTP/D.D``, and would have
    ``HTTP/2.0``, ``HTTP/3.0`` or ``HTTP/0.9`` sent in plain text answered as HTTP/1.1
    (or 1.0); a later minor version of 1 (``HTTP/1.2``) is answered as HTTP/1.1, as RFC
    9110 section 2.5 has a server do."""
    version = request.http_version
    if version.startswith(b"1."):
        return None
    return (
        f"HTTP/{version.decode('ascii')} is not supported: this server speaks HTTP/1.1"
        " and HTTP/1.0, in plain text; send the request line as METHOD TARGET HTTP/1.1"
    )


class _ServerConnection(h11.Connection):
    """h11's server side, saying ``Connection: close`` on an answer begun before the
    request's body has all come: the server closes after such an answer
    (`_GuardedH11.on_response_complete`) rather than read the rest of a body declared of
    any length, and a server that will close says so (RFC 9112 section 9.6). Before, a
    client kept the connection, and its next request met the close ("Server
    disconnected without sending a response")."""

    #: h11's words for the last request it could not read (`_GuardedH11.send_400_response`)
    refused: str = ""
    #: the status that request is answered with: 400, or 505 for its HTTP version
    refused_status: int = 400
    #: whether that request, read whole by h11, is a HEAD: its answer has a head alone
    refused_head: bool = False

    def next_event(self) -> Any:
        """h11's, keeping the text of a request it cannot read in ``refused``; a request
        in absolute-form is given in origin-form (`origin_form`). A request line of
        another HTTP version than 1.x (`unsupported_version`) is not handed on: raises
        h11.RemoteProtocolError, its words in ``refused`` and 505 in ``refused_status``;
        nor is one of HTTP/1.2 or later without a Host header (400, as h11 answers 1.1).
        Such a request's method is HEAD: ``refused_head``."""
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as e:
            self.refused, self.refused_status = readable_refusal(str(e)), 400
            self.refused_head = False
            raise
        if not isinstance(event, h11.Request):
            return event
        self.refused_head = event.method == b"HEAD"
        why = unsupported_version(event)
        if why is not None:
            self.refused, self.refused_status = why, 505
            raise h11.RemoteProtocolError(why, error_status_hint=505)
        if event.http_version != b"1.0" and all(name != b"host" for name, _ in event.headers):
            # h11 asks HTTP/1.1 alone for one; a later 1.x is read as 1.1 (RFC 9112 3.2)
            self.refused, self.refused_status = "Missing mandatory Host: header", 400
            raise h11.RemoteProtocolError(self.refused, error_status_hint=400)
        return origin_form(event)

    def send_with_data_passthrough(self, event: h11.Event) -> list[bytes] | None:
        """h11's (``send`` calls it), with the close option added to such an answer's
        head."""
        if (
            isinstance(event, h11.Response)
            and self.their_state is h11.SEND_BODY
            and b"close" not in _connection_options(event.headers)
        ):
            event = h11.Response(
                status_code=event.status_code,
                headers=[*event.headers, (b"connection", b"close")],
                reason=event.reason,
                http_version=event.http_version,
            )
        return super().send_with_data_passthrough(event)


def _connection_options(headers: Any) -> list[bytes]:
    """The lower-cased options of a head's Connection fields (h11's headers: pairs of
    lower-cased names and values)."""
    return [
        option.strip().lower()
        for name, value in headers
        if name == b"connection"
        for option in bytes(value).split(b",")
    ]


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with `HttpLimits` applied (set on a subclass by
    `guarded_protocol`)."""

    limits: ClassVar[HttpLimits]
    #: Closed connections in their lingering close (at most ``max_connections``).
    lingering: ClassVar[set[_Linger]]
    #: Lingering closes per `client_key` (at most ``per_client`` each).
    lingering_per_client: ClassVar[Counter[str]]
    #: Accepted open connections per `client_key` (a flood costs O(1) per connection,
    #: not a walk over every open one).
    open_per_client: ClassVar[Counter[str]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        size = self.config.h11_max_incomplete_event_size  # as uvicorn makes its own
        self.conn = (
            _ServerConnection(h11.SERVER) if size is None else _ServerConnection(h11.SERVER, size)
        )
        self._timer: asyncio.TimerHandle | None = None
        self._linger = True  # no reset wanted, and the client has not closed its side
        self._phase = ""  # "head", "body" or "" (the server's turn, or between requests)
        self._phase_start = 0.0
        self._received = 0  # body bytes since the body phase started
        self._last_data = 0.0
        self._write_timer: asyncio.TimerHandle | None = None
        # the answer's pace while writing is paused (`_write_deadline`): when the current
        # pause began and what was queued then, when the queue last shrank and to what,
        # and the seconds and bytes of the pauses before
        self._paused_at: float | None = None
        self._paused_queued = 0
        self._moved_at = 0.0
        self._moved_queued = 0
        self._blocked_s = 0.0
        self._blocked_taken = 0
        self.client_key: str | None = None  # set once connected
        self._counted = False  # counted in `open_per_client`

    # -- connection caps

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client_key = _client(self)
        same = (self.open_per_client[host] if host is not None else 0) + 1  # this one too
        if len(self.connections) > self.limits.max_connections:
            self._refuse(
                f"the server is busy: {self.limits.max_connections} connections are open;"
                " retry in a few seconds\n"
            )
        elif host is not None and same > self.limits.per_client:
            self._refuse(
                f"too many connections from {host}: at most {self.limits.per_client} at once;"
                " close some or retry later\n"
            )
        else:
            if host is not None:
                self.open_per_client[host] += 1
                self._counted = True
            self._phase, self._phase_start = "head", self.loop.time()
            self._arm()

    def _refuse(self, text: str) -> None:
        """Answer 503 with ``text`` and a Retry-After before reading any request, then
        close; the connection no longer counts towards either cap."""
        self.connections.discard(self)
        retry = f"retry-after: {RETRY_AFTER_SECONDS}\r\n"
        self.transport.write(_response(503, "Service Unavailable", text, retry))
        self.transport.close()  # a lingering close (`connection_lost`)

    def eof_received(self) -> None:
        self._linger = False  # the client sends no more: nothing to wait for
        super().eof_received()

    def _linger_close(self) -> None:
        """Hand this connection's socket, whose transport is closing (its answer all
        written), to a `_Linger` instead of letting the transport close it with the
        client's input unread (a reset), unless ``max_connections`` already linger, or
        ``per_client`` of this client's."""
        sock = self.transport.get_extra_info("socket")
        key = self.client_key
        if sock is None or len(self.lingering) >= self.limits.max_connections:
            return
        if key is not None and self.lingering_per_client[key] >= self.limits.per_client:
            return
        # the transport closes its own descriptor when this returns; a duplicate keeps the
        # connection open
        duplicate = socket.socket(fileno=os.dup(sock.fileno()))
        try:
            _Linger(self.loop, duplicate, self.lingering, self.lingering_per_client, key)
        except OSError:
            duplicate.close()  # the client is already gone (ENOTCONN)

    # -- a request h11 cannot read

    def send_400_response(self, msg: str) -> None:
        """Answer a request h11 cannot read (a bad or repeated Content-Length, a head
        that is not HTTP/1.1) in the JSON error shape of our APIs, saying what h11 found
        (`_ServerConnection.refused`); before, uvicorn's plain "Invalid HTTP request
        received." (``msg``). A request line of an HTTP version this server does not
        speak is answered so too, with 505 HTTP_VERSION_NOT_SUPPORTED (`unsupported_version`)."""
        why = getattr(self.conn, "refused", "") or "it is not HTTP/1.1"
        if getattr(self.conn, "refused_status", 400) == 505:
            status, name, reason = 505, "HTTP_VERSION_NOT_SUPPORTED", b"HTTP Version Not Supported"
        else:
            status, name, reason = 400, "INVALID_ARGUMENT", b"Bad Request"
            why = f"the request could not be read: {why}"
        body = json.dumps({"error": {"code": status, "status": name, "message": why}}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *GUARD_HEADERS,
        ]
        response = h11.Response(status_code=status, headers=headers, reason=reason)
        # h11 knows the method of a request it read whole, and raises on a body for a HEAD
        data = h11.Data(data=b"" if getattr(self.conn, "refused_head", False) else body)
        for event in (response, data, h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()  # a lingering close (`connection_lost`)

    # -- a request head too long

    def handle_events(self) -> None:
        """h11's events, once the head of the request it waits for is known to be no
        longer than ``max_head_bytes`` (else 414 or 431, then a lingering close). Called
        on data received and after each answer (a pipelined request already buffered)."""
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            buffered, _ = self.conn.trailing_data
            refusal = _over_long_head(buffered, self.limits.max_head_bytes)
            if refusal is not None:
                self.transport.write(_response(*refusal))
                self.transport.close()  # a lingering close (`connection_lost`)
                return
        super().handle_events()

    # -- deadlines

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track(len(data))

    def on_response_complete(self) -> None:
        if _framed_twice(self.scope) and not self.transport.is_closing():
            # RFC 9112 section 6.3: a request framed by both Transfer-Encoding and
            # Content-Length may be a smuggling attempt; the server must close after it
            self.transport.close()  # a lingering close (`connection_lost`)
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            # answered before its body ended: close (lingering) rather than read the
            # rest of a body declared of any length
            self.transport.close()
            return
        # a pipelined request already buffered has been handled by now
        self._track(0)

    def _track(self, received: int) -> None:
        """Follow the client's side of the HTTP exchange (h11's state) into the phase
        being timed, then set the timer for that phase's deadline."""
        now = self.loop.time()
        state = self.conn.their_state
        if state is h11.IDLE:
            if self._phase != "head":
                # between requests uvicorn's keep-alive timer watches an idle connection;
                # the first byte of the next request starts its head deadline
                buffered, _ = self.conn.trailing_data
                self._phase, self._phase_start = ("head", now) if buffered else ("", now)
        elif state is h11.SEND_BODY:
            if self._phase != "body":
                self._phase, self._phase_start, self._received = "body", now, 0
            else:
                self._received += received
            self._last_data = now
        else:
            self._phase = ""  # the server's turn: the app works or the answer goes out
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._cancel_write_watch()
        if exc is None and self._linger:
            self._linger_close()
        if self._counted and self.client_key is not None:
            self._counted = False
            left = self.open_per_client[self.client_key] - 1
            if left > 0:
                self.open_per_client[self.client_key] = left
            else:
                del self.open_per_client[self.client_key]
        super().connection_lost(exc)

    # -- a client that stops reading its answer, or takes it too slowly

    def pause_writing(self) -> None:
        super().pause_writing()
        now, queued = self.loop.time(), self._queued()
        self._paused_at, self._paused_queued = now, queued
        self._moved_at, self._moved_queued = now, queued
        self._arm_writes()

    def resume_writing(self) -> None:
        if self._paused_at is not None:
            self._blocked_s += self.loop.time() - self._paused_at
            self._blocked_taken += max(0, self._paused_queued - self._queued())
            self._paused_at = None
        self._cancel_write_watch()
        super().resume_writing()

    def _queued(self) -> int:
        """Bytes of answer the client has not taken yet: in the transport's buffer and
        in the kernel's send queue (Linux's SIOCOUTQ: not yet acknowledged; 0 where it
        cannot be read)."""
        queued = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
                queued += max(0, struct.unpack("i", out)[0])
            except (OSError, ValueError):
                pass
        return queued

    def _taken_and_blocked(self, now: float) -> tuple[int, float]:
        """Bytes the client has taken, and seconds it has held the server back, over
        every pause of this connection up to ``now`` (the current pause included)."""
        if self._paused_at is None:
            return self._blocked_taken, self._blocked_s
        taken = self._blocked_taken + max(0, self._paused_queued - self._queued())
        return taken, self._blocked_s + now - self._paused_at

    def _write_deadline(self, now: float) -> float:
        """When the paused answer is dropped unless the client takes more of it (loop
        time): ``body_idle_seconds`` after it last took some, or once its pace over the
        time it held the server back falls under ``answer_min_rate`` after the grace."""
        limits = self.limits
        deadline = self._moved_at + limits.body_idle_seconds
        if limits.answer_min_rate > 0:
            taken, blocked = self._taken_and_blocked(now)
            allowed = limits.answer_grace_seconds + taken / limits.answer_min_rate
            deadline = min(deadline, now + allowed - blocked)
        return deadline

    def _arm_writes(self) -> None:
        self._cancel_write_watch()
        self._write_timer = self.loop.call_at(
            self._write_deadline(self.loop.time()), self._check_writes
        )

    def _cancel_write_watch(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _check_writes(self) -> None:
        """While writing is paused (the socket's buffers are full): go on watching while
        the client takes its answer often and fast enough (`_write_deadline`), else drop
        the connection (the app's send then ends as on a disconnect). A closing transport
        is watched the same: one closed after the client's FIN (or the server's last
        answer) waits for its buffer to drain, and a client that reads none of it would
        otherwise hold the connection for good (aborting one already gone does nothing)."""
        self._write_timer = None
        now, queued = self.loop.time(), self._queued()
        if queued < self._moved_queued:
            self._moved_at, self._moved_queued = now, queued
        if self._write_deadline(now) <= now + _TIMER_SLACK:
            self._drop()
        else:
            self._arm_writes()

    def _drop(self) -> None:
        """Close the connection at once with a reset (SO_LINGER 0): a plain close left
        the kernel sending the answer still queued for the client (megabytes on a
        socket whose send buffer had grown) for as long as the client went on taking
        it, a byte now and then, outside every cap of this server."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except (OSError, ValueError):
                pass
        self._linger = False
        self.transport.abort()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deadline(self) -> float | None:
        """When the current phase runs out (loop time), or None when nothing is timed."""
        limits = self.limits
        if self._phase == "head":
            return self._phase_start + limits.header_seconds
        if self._phase == "body":
            return min(
                self._last_data + limits.body_idle_seconds,
                self._phase_start
                + limits.body_grace_seconds
                + self._received / limits.body_min_rate,
            )
        return None

    def _arm(self) -> None:
        self._cancel()
        deadline = self._deadline()
        if deadline is not None and not self.transport.is_closing():
            self._timer = self.loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self._phase == "body" and (
            self.flow.read_paused or self.conn.they_are_waiting_for_100_continue
        ):
            # the server holds the body back, not the client: start its clock again
            self._phase_start = self._last_data = now
            self._received = 0
            self._arm()
            return
        deadline = self._deadline()
        if deadline is None:
            return
        if deadline > now:
            self._arm()
            return
        if self._phase == "head":
            self._close_slow_head()
        else:
            # the app is reading the body: closing tells it (http.disconnect)
            self.transport.close()

    def _close_slow_head(self) -> None:
        """408 to a client that sent part of a request head in time, a plain close to
        one that sent nothing (a browser's spare pre-opened connection)."""
        partial, _ = self.conn.trailing_data
        if partial:
            self.transport.write(
                _response(
                    408,
                    "Request Timeout",
                    f"the request's headers did not all arrive within"
                    f" {self.limits.header_seconds:g} s\n",
                )
            )
        self.transport.close()


def guarded_protocol(limits: HttpLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with ``limits`` applied; pass it as
    ``uvicorn.Config(http=...)``."""
    return type(
        "GuardedH11Protocol",
        (_GuardedH11,),
        {
            "limits": limits,
            "lingering": set(),
            "lingering_per_client": Counter(),
            "open_per_client": Counter(),
        },
    )
