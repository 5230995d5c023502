"""Slow and idle HTTP connections never shut out other callers of `prov web` or
`prov witness serve`: a request's head (and body) must arrive in bounded time, and one
client address may hold only so many connections (`provenance.web.guard`).

Before the guard, 300 sockets that sent nothing made every other request to `prov web`
get 503 (uvicorn's ``limit_concurrency`` counted them) and were never closed."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from provenance.core.fair_share import client_key
from provenance.log.checkpoint import generate_log_key
from provenance.log.tiles import encode_bundle
from provenance.web import tlogtiles
from provenance.web.guard import LINGER_BYTES, LINGER_SECONDS, RETRY_AFTER_SECONDS, HttpLimits
from provenance.web.serve import bind, uvicorn_server
from provenance.web.tlogtiles import TileShares
from tests.conftest import (
    ROOT,
    SAMPLES,
    ServerProc,
    read_line,
    run_in_netns,
    start_server,
    start_web,
)
from tests.drain import drain_stderr, drain_stdout

HEADER_SECONDS = 2.0
#: The answer of each server to `_normal_request`.
SERVED = {"web": 200, "witness": 400}


def _witness(tmp_path: Path, *extra: str) -> ServerProc:
    log_vkey = generate_log_key(tmp_path / "log.pem", "log.test/slow").verifier_key()
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "witness", "serve", "--key",
         str(tmp_path / "witness.pem"), "--log-key", log_vkey, "--state",
         str(tmp_path / "wstate"), "--listen", "127.0.0.1:0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    log = drain_stderr(proc)
    drain_stdout(proc)
    return ServerProc(proc, read_line(proc, "witness on "), tmp_path, log)


@pytest.fixture(params=["web", "witness"])
def http_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(kind, http://HOST:PORT) of a real `prov web` (its gRPC server is never asked:
    the page asked for is a static file) or `prov witness serve`, with a 2 s head
    deadline and at most 8 connections per client address."""
    extra = ("--header-seconds", str(HEADER_SECONDS), "--connections-per-client", "8")
    kind = str(request.param)
    proc = start_web("127.0.0.1:1", *extra) if kind == "web" else _witness(tmp_path, *extra)
    try:
        yield kind, proc.address
    finally:
        proc.stop()


def _normal_request(kind: str, url: str) -> int:
    """The status of an ordinary request from 127.0.0.1 (a witness answers 400 to a
    checkpoint that is no signed note: the request was served)."""
    if kind == "web":
        request = urllib.request.Request(f"{url}/static/favicon.svg")
    else:
        request = urllib.request.Request(
            f"{url}/add-checkpoint", b"old 0\n\nnot a note", method="POST"
        )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def _connect(url: str, source: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    s = socket.socket()
    s.bind((source, 0))
    s.connect((host, int(port)))
    return s


def _read_until_closed(s: socket.socket, timeout: float) -> bytes | None:
    """What the server sent before closing ``s``; None if it is still open after
    ``timeout`` seconds."""
    s.settimeout(timeout)
    got = b""
    try:
        while chunk := s.recv(4096):
            got += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return got


class Trickle:
    """Sends ``start`` on each socket, then one more byte every 0.2 s, from a thread,
    until stopped (a slowloris client: by default a never-ending request head)."""

    def __init__(
        self, sockets: list[socket.socket], start: bytes = b"GET / HTTP/1.1\r\nX-Slow: "
    ) -> None:
        self.sockets = sockets
        self.stopped = threading.Event()
        for s in sockets:
            s.sendall(start)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(0.2):
            for s in self.sockets:
                try:
                    s.send(b"a")
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


@pytest.mark.slow
def test_idle_and_trickling_connections_are_closed_and_others_served(
    http_server: tuple[str, str],
) -> None:
    kind, url = http_server
    # 200 clients, one connection each from its own loopback address (within every cap)
    socks = [_connect(url, f"127.0.{1 + i // 250}.{2 + i % 250}") for i in range(200)]
    trickle = Trickle(socks[100:])  # and 100 that send nothing
    try:
        assert _normal_request(kind, url) == SERVED[kind]
        answers = [_read_until_closed(s, HEADER_SECONDS + 15) for s in socks]
    finally:
        trickle.stop()
        for s in socks:
            s.close()
    assert all(a is not None for a in answers), "a slow connection outlived the head deadline"
    assert all(a == b"" for a in answers[:100])  # sent nothing: closed without an answer
    for a in answers[100:]:
        assert a is not None and a.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"the request's headers did not all arrive within 2 s" in a
    assert _normal_request(kind, url) == SERVED[kind]


def test_one_address_holds_only_its_share_of_connections(http_server: tuple[str, str]) -> None:
    kind, url = http_server
    socks = [_connect(url, "127.0.0.2") for _ in range(200)]
    try:
        assert _normal_request(kind, url) == SERVED[kind]  # from 127.0.0.1
        refused = [_read_until_closed(s, 1.0) for s in socks[8:]]
        held = [_read_until_closed(s, HEADER_SECONDS + 15) for s in socks[:8]]
    finally:
        for s in socks:
            s.close()
    assert held == [b""] * 8  # its first 8 were served: closed at their head deadline
    for answer in refused:
        assert answer is not None and answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"too many connections from 127.0.0.2: at most 8 at once" in answer
        assert f"\r\nretry-after: {RETRY_AFTER_SECONDS}\r\n".encode() in answer


def test_connections_beyond_the_server_cap_get_a_clear_503(tmp_path: Path) -> None:
    proc = _witness(tmp_path, "--max-connections", "20", "--header-seconds", "30")
    try:
        socks = [_connect(proc.address, f"127.0.3.{2 + i}") for i in range(20)]
        try:
            busy = urllib.request.Request(f"{proc.address}/add-checkpoint", b"x", method="POST")
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(busy, timeout=10)
            assert e.value.code == 503
            assert e.value.headers["Retry-After"] == str(RETRY_AFTER_SECONDS) == "5"
            assert "the server is busy: 20 connections are open" in e.value.read().decode()
        finally:
            for s in socks:
                s.close()
        # the server frees the slots once it has seen the 20 closes, which it may not have
        # yet (the flake: a 503 right after them on a loaded machine); a slot that never
        # frees still fails here after 30 s
        deadline = time.monotonic() + 30
        status = _normal_request("witness", proc.address)
        while status == 503 and time.monotonic() < deadline:
            time.sleep(0.05)
            status = _normal_request("witness", proc.address)
        assert status == SERVED["witness"]
    finally:
        proc.stop()


def _open_descriptors(proc: ServerProc) -> int:
    return len(os.listdir(f"/proc/{proc.proc.pid}/fd"))


def test_refused_clients_that_hang_up_at_once_leave_nothing_open() -> None:
    """Clients beyond the per-address cap that close at once (a connect-and-close flood):
    each is refused and closed within the linger, with nothing in the log.

    Before: writing the 503's end-of-file to a client already gone raised ENOTCONN in
    ``connection_made``, so every such connection logged a traceback and its socket was
    never closed (a 4 s flood left 2,388 descriptors open in the server)."""
    proc = start_web("127.0.0.1:1", "--connections-per-client", "2")
    held: list[socket.socket] = []
    try:
        held = [_connect(proc.address, "127.0.0.2") for _ in range(2)]
        assert _normal_request("web", proc.address) == SERVED["web"]
        before = _open_descriptors(proc)
        for _ in range(30):
            _connect(proc.address, "127.0.0.2").close()
        assert _normal_request("web", proc.address) == SERVED["web"]
        time.sleep(LINGER_SECONDS + 1)
        after = _open_descriptors(proc)
    finally:
        for s in held:
            s.close()
        proc.stop()
    log = proc.stderr()
    assert "Traceback" not in log, log[-2000:]
    assert after <= before


def test_refused_connections_linger_only_up_to_the_server_cap() -> None:
    """A flood of connections beyond the caps holds at most --max-connections refused
    sockets in their lingering close at once; the rest are closed right after their 503
    (before: every refused one kept a descriptor for LINGER_SECONDS, so a fast enough
    flood from one address could run the server out of descriptors)."""
    proc = start_web("127.0.0.1:1", "--connections-per-client", "2", "--max-connections", "8")
    flood: list[socket.socket] = []
    try:
        assert _normal_request("web", proc.address) == SERVED["web"]
        before = _open_descriptors(proc)
        flood = [_connect(proc.address, "127.0.0.2") for _ in range(100)]
        answers = [_read_until_closed(s, 1.0) for s in flood[2:]]
        time.sleep(0.3)  # the loop closes the refused sockets; the linger lasts 2 s
        during = _open_descriptors(proc)
        assert _normal_request("web", proc.address) == SERVED["web"]
    finally:
        for s in flood:
            s.close()
        proc.stop()
    closed_at_once = [a for a in answers if a is not None]
    assert len(closed_at_once) >= 98 - 8
    for a in closed_at_once:
        assert a.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert during - before <= 2 + 8 + 2  # held, lingering, a margin


# ---------------------------------------------------------------- request bodies


async def _slow_reader(request: Request) -> PlainTextResponse:
    """Reads the body at 512 KiB/s (so flow control holds the client back)."""
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        await asyncio.sleep(len(chunk) / (512 * 1024))
    return PlainTextResponse(str(total))


#: Size of the `_big` answer, in bytes: far more than the socket buffers hold.
BIG = 32 << 20


async def _big(request: Request) -> PlainTextResponse:
    return PlainTextResponse("x" * BIG)


@pytest.fixture
def body_server() -> Iterator[str]:
    """A real uvicorn server on a loopback port with a 1 s body grace, 1 s idle limit and
    1 MiB/s minimum rate, in a thread; its app reads bodies slowly."""
    limits = HttpLimits(body_idle_seconds=1.0, body_grace_seconds=1.0, body_min_rate=1 << 20)
    sock, address = bind("127.0.0.1:0")
    routes = [Route("/", _slow_reader, methods=["POST"]), Route("/big", _big)]
    yield from _serve_in_thread(Starlette(routes=routes), limits, sock, address)


def _serve_in_thread(
    app: Starlette, limits: HttpLimits, sock: socket.socket, address: str
) -> Iterator[str]:
    """Serve ``app`` under ``limits`` on the bound ``sock`` from a thread; yields its
    http:// URL once started, stops it after."""
    server = uvicorn_server(app, limits)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # returns once started; a loaded machine needs longer
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the uvicorn server did not start within 60 s"
    try:
        yield f"http://{address}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_dripping_body_is_cut_off(body_server: str) -> None:
    s = _connect(body_server, "127.0.0.1")
    trickle = Trickle([s], b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n")
    try:
        answer = _read_until_closed(s, 15)
    finally:
        trickle.stop()
        s.close()
    assert answer is not None  # closed; the app saw the client disconnect


@pytest.mark.slow
def test_a_body_the_server_reads_slowly_is_not_cut_off(body_server: str) -> None:
    """2 MiB sent at once but read in 4 s (flow control pauses the socket): longer than
    the 1 s grace plus 2 s at 1 MiB/s, and still accepted whole, since the time the
    server holds the client back does not count."""
    body = b"x" * (2 << 20)
    request = urllib.request.Request(body_server + "/", body, method="POST")
    with urllib.request.urlopen(request, timeout=60) as r:
        assert r.read() == str(len(body)).encode()


def test_an_answer_the_client_stops_reading_is_cut_off(body_server: str) -> None:
    """A client that asks for a large answer and reads none of it is closed once its
    answer has not moved for the idle limit (before: it held the connection, and the
    app's task, for as long as it liked: a few addresses could fill --max-connections)."""
    assert _big_answer_read_after_4_idle_limits(body_server, half_close=False) < BIG


def _ask_for_big(body_server: str) -> socket.socket:
    """A connection to ``body_server`` with a small receive buffer (4 KiB), its request
    for /big sent."""
    host, port = body_server.removeprefix("http://").rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, int(port)))
    s.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
    return s


def _big_answer_read_after_4_idle_limits(body_server: str, half_close: bool) -> int:
    """Ask ``body_server`` for /big (``half_close``: then shut down the sending side),
    read nothing for 4 s, then read what comes; the bytes read (BIG when the server
    never gave up)."""
    s = _ask_for_big(body_server)
    got = 0
    try:
        if half_close:
            s.shutdown(socket.SHUT_WR)
        time.sleep(4)  # reads nothing for 4 idle limits
        s.settimeout(10)
        try:
            while chunk := s.recv(1 << 20):
                got += len(chunk)
        except ConnectionResetError:
            pass
    finally:
        s.close()
    return got


def test_an_answer_a_half_closed_client_stops_reading_is_cut_off(body_server: str) -> None:
    """As above, but the client shuts down its sending side once its request is sent
    (a FIN; asyncio then closes the transport, which waits for its buffer to drain):
    the idle watch took a closing transport for one already gone and stopped watching,
    so the connection sat in CLOSE-WAIT with its answer unsent for good, holding its
    place under --max-connections and --connections-per-client, the app's task, and on
    `prov web --tiles-dir` its client's share of tile bytes in flight (seen: the next tile
    of the same address waited 5 s and got 429, 15 s after). Now it is dropped too."""
    assert _big_answer_read_after_4_idle_limits(body_server, half_close=True) < BIG


def test_an_answer_read_slowly_is_not_cut_off(body_server: str) -> None:
    """A client that keeps reading, slowly, keeps its connection past the idle limit."""
    s = _ask_for_big(body_server)
    got = 0
    try:
        s.settimeout(10)
        end = time.monotonic() + 4  # 4 idle limits at about 200 KiB/s
        while time.monotonic() < end:
            chunk = s.recv(16 * 1024)
            assert chunk, f"closed after {got} bytes"
            got += len(chunk)
            time.sleep(0.05)
    finally:
        s.close()
    assert got > 0


@pytest.fixture
def tile_server(tmp_path: Path) -> Iterator[tuple[str, TileShares]]:
    """(URL, shares) of a real uvicorn server in a thread serving ``/tlog/`` from a folder
    holding a 4 MiB entry bundle and an 8 KiB hash tile, each client 1 MiB of tiles in
    flight (waiting 0.5 s), answers to be taken at 256 KiB/s after a 1 s grace; its
    accepted sockets have small send buffers (16 KiB asked for), so a client that reads
    now and then shows as progress at once (as over a link whose buffers stay small)."""
    (tmp_path / "tile/entries").mkdir(parents=True)
    (tmp_path / "tile/0").mkdir()
    # 256 entries of 16,382 bytes (a bundle the web serves: it walks their length prefixes)
    (tmp_path / "tile/entries/000").write_bytes(encode_bundle([os.urandom(16_382)] * 256))
    (tmp_path / "tile/0/000").write_bytes(bytes(range(256)) * 32)
    shares = TileShares(per_client=1 << 20, wait=0.5)
    limits = HttpLimits(answer_grace_seconds=1.0, answer_min_rate=256 * 1024)
    sock, address = bind("127.0.0.1:0")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    app = Starlette(routes=tlogtiles.routes(tmp_path, shares))
    for url in _serve_in_thread(app, limits, sock, address):
        yield url, shares


def test_an_answer_taken_a_little_at_a_time_is_cut_off(
    tile_server: tuple[str, TileShares],
) -> None:
    """A client that reads 2 KiB of a 4 MiB tile every 0.25 s (8 KiB/s) never lets its
    answer stand still for the idle limit, so it held its connection, the app's task
    and its client's share of tile bytes in flight for as long as it went on (seen
    before: still open after 8 s, and the same client's next tile 429 after the 0.5 s
    wait). Now it must take the answer at 256 KiB/s once it has held the server back for
    the 1 s grace: the server cuts it off (reset, or closed) while it is still reading
    (within 64 reads of 2 KiB, 0.25 s apart or more: the grace lasts 4 of them), its
    share is given back and its next tile is served."""
    url, shares = tile_server
    host, port = url.removeprefix("http://").rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, int(port)))
    got, reads, cut = 0, 0, False
    try:
        s.sendall(b"GET /tlog/tile/entries/000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        s.settimeout(5)
        while not cut and reads < 64:
            try:
                chunk = s.recv(2048)
            except ConnectionResetError:
                chunk = b""
            reads += 1
            cut = not chunk
            got += len(chunk)
            time.sleep(0.25)
        held = shares.held("127.0.0.1")
        try:
            with urllib.request.urlopen(f"{url}/tlog/tile/0/000", timeout=10) as r:
                status = int(r.status)
        except urllib.error.HTTPError as e:
            status = e.code
    finally:
        s.close()
    assert cut, f"still open after {reads} reads, {got:,} bytes read"
    assert held == 0
    assert status == 200


def test_a_tile_taken_at_the_pace_is_not_cut_off(tile_server: tuple[str, TileShares]) -> None:
    """A client taking the same tile at about 1 MiB/s gets all of it."""
    url, _ = tile_server
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b"GET /tlog/tile/entries/000 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := s.recv(64 * 1024):
            data += chunk
            time.sleep(0.05)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert len(data.partition(b"\r\n\r\n")[2]) == 4 << 20


# ---------------------------------------------------------------- per-client cap by /64


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("fe80::2%eth0", "fe80::2%eth0"),
        ("fe80::1", "fe80::1"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("64:ff9b::c000:207", "64:ff9b::c000:207"),
        ("64:ff9b::c000:208", "64:ff9b::c000:208"),
        ("::1", "::1"),
        ("/run/prov.sock", "/run/prov.sock"),
    ],
)
def test_clients_are_counted_by_ipv4_address_or_ipv6_64(host: str, key: str) -> None:
    assert client_key(host) == key


def test_ipv4_clients_of_a_dual_stack_listener_are_counted_as_ipv4() -> None:
    """On ``[::]`` IPv4 clients arrive as ``::ffff:a.b.c.d``: keyed (and named) by their
    IPv4 address, not lumped into ``::ffff:0:0/64`` with every other IPv4 client."""
    proc = start_web("127.0.0.1:1", "--connections-per-client", "2", "--listen", "[::]:0")
    url = "http://127.0.0.1:" + proc.address.rsplit(":", 1)[1]
    try:
        socks = [_connect(url, "127.0.0.2") for _ in range(3)]
        try:
            assert _normal_request("web", url) == SERVED["web"]  # 127.0.0.1: its own share
            answer = _read_until_closed(socks[2], 5.0)
        finally:
            for s in socks:
                s.close()
    finally:
        proc.stop()
    _assert_too_many(answer, "127.0.0.2", 2)


def _assert_too_many(answer: bytes | None, client: str, cap: int) -> None:
    """``answer`` is the 503 a connection past the per-client cap gets."""
    assert answer is not None and answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert f"too many connections from {client}: at most {cap} at once".encode() in answer


def _get_favicon(s: socket.socket) -> bytes | None:
    """Send one GET of the favicon on ``s`` (closing after the answer); what came back."""
    s.sendall(b"GET /static/favicon.svg HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
    return _read_until_closed(s, 10.0)


def test_a_client_gets_its_connection_share_back_when_its_connections_close() -> None:
    """The per-client count follows connections as they close: a client that used its
    whole share, then closed it, opens as many again (a count that never fell would
    refuse it for ever), and one more than its share is still refused."""
    proc = start_web("127.0.0.1:1", "--connections-per-client", "2")
    try:
        for _ in range(3):
            socks = [_connect(proc.address, "127.0.0.2") for _ in range(2)]
            answers = [_get_favicon(s) for s in socks]
            for s in socks:
                s.close()
            for answer in answers:
                assert answer is not None and answer.startswith(b"HTTP/1.1 200 "), answer
            time.sleep(0.2)  # the server has seen both closes
        held = [_connect(proc.address, "127.0.0.2") for _ in range(2)]
        try:
            time.sleep(0.2)
            third = _read_until_closed(_connect(proc.address, "127.0.0.2"), 5.0)
        finally:
            for s in held:
                s.close()
    finally:
        proc.stop()
    _assert_too_many(third, "127.0.0.2", 2)


def test_websocket_upgrades_never_use_up_a_clients_connection_share() -> None:
    """A request asking to upgrade to WebSocket was handed to uvicorn's WebSocket
    protocol (wsproto), which answered a bare 403 and closed, but the connection was
    never taken off the guard's count of its client's connections: 32 such requests, a
    few hundred bytes each, shut their address out for as long as the server ran (503
    "too many connections"), and 8 addresses took every one of --max-connections. No
    page speaks WebSocket: the upgrade is ignored (RFC 9110 section 7.8) and the request
    answered as any other, with the page's headers."""
    proc = start_web("127.0.0.1:1", "--connections-per-client", "2")
    upgrade = (
        b"GET /static/favicon.svg HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\n"
        b"connection: Upgrade, close\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"sec-websocket-version: 13\r\n\r\n"
    )
    try:
        answers = []
        for _ in range(6):
            s = _connect(proc.address, "127.0.0.3")
            s.sendall(upgrade)
            answers.append(_read_until_closed(s, 10.0))
            s.close()
        time.sleep(0.2)  # the server has seen the closes
        after = _get_favicon(_connect(proc.address, "127.0.0.3"))
    finally:
        proc.stop()
    for answer in answers:
        assert answer is not None and answer.startswith(b"HTTP/1.1 200 "), answer
        assert b"x-content-type-options: nosniff" in answer.lower(), answer
    assert after is not None and after.startswith(b"HTTP/1.1 200 "), after
    logged = proc.stderr()  # the upgrade noted once, without advice to install a library
    assert logged.count("Unsupported upgrade request") == 1, logged
    assert "WebSocket library" not in logged, logged


#: Run inside a fresh network namespace (`unshare -n`) whose loopback holds addresses in
#: two /64s: three connections from three addresses of one /64 to a `prov web` allowing
#: two per client, and one from the other /64; prints the first bytes each one got.
_NETNS_SCRIPT = """
import json, socket
from tests.conftest import start_web
proc = start_web("127.0.0.1:1", "--connections-per-client", "2", "--listen", "[fd00:1::1]:0")
port = int(proc.address.rsplit(":", 1)[1])
def connect(source):
    s = socket.socket(socket.AF_INET6)
    s.bind((source, 0))
    s.connect(("fd00:1::1", port))
    s.settimeout(3.0)
    return s
def first(s):
    try:
        return s.recv(4096).decode()
    except TimeoutError:
        return None
try:
    socks = [connect(a) for a in ("fd00:1::a", "fd00:1::b", "fd00:1::c", "fd00:2::a")]
    print(json.dumps([first(socks[2]), first(socks[3])]))
finally:
    proc.stop()
"""


def test_ipv6_clients_of_one_64_share_one_connection_cap() -> None:
    """One host with a /64 cannot open a connection from each of its addresses: three
    addresses of fd00:1::/64 hold 2 connections between them; fd00:2::/64 is apart."""
    third, other = json.loads(run_in_netns(_NETNS_SCRIPT))
    assert third is not None and third.startswith("HTTP/1.1 503 Service Unavailable\r\n")
    assert "too many connections from fd00:1::/64: at most 2 at once" in third
    assert other is None  # still open, waiting for its request: not refused


#: Run inside a fresh network namespace, as `_NETNS_SCRIPT`: uploads to `prov web` from
#: three addresses of one /64 and one of another. First a `prov web` whose uploads stall
#: (each holds its slot; two per client), then one taking two uploads a minute per client
#: (each upload an empty file, refused at once). Prints the answers' first lines.
_NETNS_UPLOADS = """
import json
from tests.conftest import start_web
from tests.test_http_slow_clients import PART, _answer, _upload_from
def upload(port, source, body, whole):
    return _upload_from(port, source, body, whole, "fd00:1::1")
def answer(s):
    return _answer(s, 3.0)
sources = ("fd00:1::a", "fd00:1::b", "fd00:1::c", "fd00:2::a")
out = {}
proc = start_web("127.0.0.1:1", "--listen", "[fd00:1::1]:0")
try:
    port = int(proc.address.rsplit(":", 1)[1])
    socks = [upload(port, a, PART + b"\\xff\\xd8", whole=False) for a in sources]
    out["slots"] = [answer(socks[2]), answer(socks[3])]
    for s in socks:  # or the server's stop waits for them (20 s, then a kill)
        s.close()
finally:
    proc.stop()
proc = start_web("127.0.0.1:1", "--listen", "[fd00:1::1]:0", "--uploads-per-minute", "2")
try:
    port = int(proc.address.rsplit(":", 1)[1])
    empty = PART + b"\\r\\n--B--\\r\\n"
    out["rate"] = [answer(upload(port, a, empty, whole=True)) for a in sources]
finally:
    proc.stop()
print(json.dumps(out))
"""


def test_ipv6_clients_of_one_64_share_the_upload_limits() -> None:
    """The upload limits count a client as the connection cap does (an IPv6 /64): before,
    they counted each address, so a host could hold every upload slot of `prov web` (8)
    from four addresses of its /64 (two each) and every other caller got 503, and could
    reset its per-minute budget by changing address. Now three addresses of fd00:1::/64
    share two running uploads and one budget; fd00:2::/64 is apart."""
    out = json.loads(run_in_netns(_NETNS_UPLOADS))
    third, other = out["slots"]
    assert third is not None and third.startswith("HTTP/1.1 429 Too Many Requests\r\n"), third
    assert "2 uploads from fd00:1::/64 are already running" in third
    assert other is None  # its upload holds a slot, waiting for the rest of its body
    rate = out["rate"]
    assert [r.split("\r\n", 1)[0] for r in rate] == [
        "HTTP/1.1 400 Bad Request",
        "HTTP/1.1 400 Bad Request",
        "HTTP/1.1 429 Too Many Requests",
        "HTTP/1.1 400 Bad Request",
    ], rate
    assert "too many uploads from fd00:1::/64: at most 2 a minute" in rate[2]


#: The head of a multipart form's file part (boundary B), for `_upload_from`.
PART = b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'


def _upload_from(
    port: int,
    source: str,
    body: bytes,
    whole: bool,
    host: str = "127.0.0.1",
    more: int = 10**6,
) -> socket.socket:
    """An upload to `prov web` on ``host``:``port`` from ``source`` (another address of
    this machine) sending ``body``, a multipart form (boundary B); unless ``whole``,
    announcing ``more`` bytes more (it stalls, or the caller sends them)."""
    head = (
        b"POST /api/v1/verify HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: %d\r\n\r\n"
    )
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.bind((source, 0))
    s.connect((host, port))
    s.sendall(head % (len(body) + (0 if whole else more)) + body)
    return s


def _answer(s: socket.socket, wait: float) -> str | None:
    """The answer on ``s`` (the server closes it after), or None if none within ``wait``."""
    got = _read_until_closed(s, wait)
    return got.decode() if got else None


def test_web_upload_slots_are_shared_fairly_between_clients() -> None:
    """`prov web`'s 8 relay slots are shared as the service's are: four addresses holding
    two stalled uploads each no longer shut out a fifth, whose upload takes the slot of
    one of theirs (here an empty file, refused at once with 400, so no service is
    needed); that one is answered 503 "upload cut" at its next piece, the others go on.
    Before, the fifth got 503 for as long as the four kept their bodies coming at the
    slowest pace allowed (256 KiB/s in all)."""
    proc = start_web("127.0.0.1:1")
    try:
        port = int(proc.address.rsplit(":", 1)[1])
        held = [
            _upload_from(port, f"127.0.0.{2 + i // 2}", PART + b"\xff\xd8", whole=False)
            for i in range(8)
        ]
        time.sleep(0.5)
        newcomer = _upload_from(port, "127.0.0.9", PART + b"\r\n--B--\r\n", whole=True)
        first = _answer(newcomer, 5.0)
        assert first is not None and first.startswith("HTTP/1.1 400 Bad Request\r\n"), first
        assert "empty file" in first
        for s in held:
            s.sendall(b"\0" * 1000)
        answers = [_answer(s, 1.0) for s in held]
        cut = [a for a in answers if a is not None]
        assert len(cut) == 1, answers
        assert cut[0].startswith("HTTP/1.1 503 Service Unavailable\r\n"), cut[0]
        assert "upload cut" in cut[0] and "retry-after: 5" in cut[0].lower()
        assert answers.index(cut[0]) == 1  # the first address's newest of its two
        for s in held:
            s.close()
    finally:
        proc.stop()


def _photo_form() -> bytes:
    """A whole multipart form (boundary B) whose ``file`` is a real JPEG (112 KB)."""
    return PART + (SAMPLES / "rocket.jpg").read_bytes() + b"\r\n--B--\r\n"


class Drip:
    """Sends ``data`` (one byte by default) on each socket every ``every`` seconds, from a
    thread: by default enough to stay under an idle limit of a few seconds, far under any
    pace (about 2 B/s)."""

    def __init__(self, socks: list[socket.socket], every: float = 0.5, data: bytes = b"\0"):
        self.socks = socks
        self.every = every
        self.data = data
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            for s in self.socks:
                try:
                    s.sendall(self.data)
                except OSError:  # answered (cut) and closed by the server
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def _cut_for_pace(answers: list[str | None]) -> int:
    """How many of ``answers`` are the 503 of an upload cut for its pace."""
    return sum(
        a is not None
        and a.startswith("HTTP/1.1 503 Service Unavailable\r\n")
        and "send it faster" in a
        and "--upload-min-rate-kb" in a
        for a in answers
    )


def test_web_upload_slots_go_to_uploads_that_keep_a_pace(tmp_path: Path) -> None:
    """`prov web`'s relay slots have the service's pace rule: 8 addresses each holding
    one stalled upload (a byte every 0.5 s) no longer shut every other upload out. With
    every slot taken and no share-based cut possible, the slowest upload that has run past
    --upload-idle-seconds averaging under --upload-min-rate-kb (default 8 KiB/s) is cut
    (503 "send it faster") and honest uploads from 8 other addresses get their report.
    An upload at about 16 KiB/s, over the pace, keeps its slot even when that leaves a
    newcomer 503. Before, all 8 honest uploads got 503 "verifying as many files as it
    can" for the stalled uploads' 120 s of grace, and again after each reconnection.
    Real `prov serve` and `prov web`, loopback addresses 127.0.0.x, a real JPEG."""
    srv = start_server(tmp_path / "prov.db")
    web = start_web(srv.address, "--upload-idle-seconds", "2")
    port = int(web.address.rsplit(":", 1)[1])
    drip: Drip | None = None
    try:
        stalled = [
            _upload_from(port, f"127.0.0.{2 + i}", PART + b"\xff\xd8", False) for i in range(8)
        ]
        drip = Drip(stalled)
        time.sleep(3)  # past the 2 s idle window: their pace counts now
        # all 8 arrive before any is whole (so none ends and frees a slot early)
        form = _photo_form()
        honest = [
            _upload_from(port, f"127.0.0.{20 + i}", form[:-8], False, more=8) for i in range(8)
        ]
        time.sleep(0.5)
        for s in honest:
            s.sendall(form[-8:])
        answers = [_answer(s, 60) for s in honest]
        for a in answers:
            assert a is not None and a.startswith("HTTP/1.1 200 OK\r\n"), a
            assert json.loads(a.split("\r\n\r\n", 1)[1])["path"] == "a.jpg", a
        cut = [_answer(s, 5) for s in stalled]  # each answered at its next byte
        assert _cut_for_pace(cut) == 8, cut
        drip.close()

        # 7 stalled uploads and one steady at about 16 KiB/s hold the 8 slots
        stalled = [
            _upload_from(port, f"127.0.0.{40 + i}", PART + b"\xff\xd8", False) for i in range(7)
        ]
        drip = Drip(stalled)
        steady, sent = _paced_upload(port, "127.0.0.50", form)
        time.sleep(3)
        # 7 newcomers that stay young take the 7 stalled uploads' slots; the eighth finds
        # only the steady upload past the idle window, over the pace: it is refused
        young = _young_then_refused(port, 60)
        assert _cut_for_pace([_answer(s, 5) for s in stalled]) == 7
        _whole_at_last(steady, sent)
        for s in young:
            s.close()
    finally:
        if drip is not None:
            drip.close()
        web.stop()
        srv.stop()


def _paced_upload(port: int, source: str, form: bytes) -> tuple[socket.socket, threading.Thread]:
    """An upload of ``form`` from ``source`` at about 16 KiB/s, begun: its socket and the
    thread sending it (`_send_paced`)."""
    steady = _upload_from(port, source, form[:4096], False, more=len(form) - 4096)
    sent = threading.Thread(target=_send_paced, args=(steady, form[4096:]), daemon=True)
    sent.start()
    return steady, sent


def _young_then_refused(port: int, first: int) -> list[socket.socket]:
    """7 newcomers from 127.0.0.FIRST on, each a stalled upload (their sockets), then one
    more from 127.0.0.(FIRST + 10), which must get 503 "verifying as many files as it
    can": no slot left to take."""
    young = [_upload_from(port, f"127.0.0.{first + i}", PART, False) for i in range(7)]
    time.sleep(0.3)
    late = _answer(_upload_from(port, f"127.0.0.{first + 10}", PART, False), 10)
    assert late is not None and "verifying as many files as it can" in late, late
    return young


def _whole_at_last(steady: socket.socket, sent: threading.Thread) -> None:
    """`_paced_upload`'s upload, once all sent, is answered 200."""
    sent.join()
    whole = _answer(steady, 60)
    assert whole is not None and whole.startswith("HTTP/1.1 200 OK\r\n"), whole


def _send_paced(s: socket.socket, data: bytes, block: int = 4096, every: float = 0.25) -> None:
    """Send ``data`` on ``s`` in ``block``-byte pieces, one each ``every`` seconds
    (16 KiB/s by default)."""
    for i in range(0, len(data), block):
        time.sleep(every)
        s.sendall(data[i : i + block])


@pytest.mark.slow
def test_serve_http_page_takes_the_servers_upload_min_rate(tmp_path: Path) -> None:
    """`prov serve --http` runs its page with the server's --upload-min-rate-kb. Here 64:
    8 uploads at about 16 KiB/s from 8 addresses, past the page's idle window (the
    server's --upload-idle-seconds, 2 here: `test_serve_http_page_takes_the_web_limit_flags`
    shows the page takes it), are under it, so a newcomer takes the slot of one of them
    (503 "send it faster") and gets its report. Before, the page kept its default 8 KiB/s
    whatever the flag said, the 8 kept their slots and the newcomer got 503 "verifying as
    many files as it can". Real `prov serve --http`, loopback addresses 127.0.0.x, a real
    JPEG."""
    srv = start_server(
        tmp_path / "prov.db",
        "--http", "127.0.0.1:0", "--upload-min-rate-kb", "64", "--upload-idle-seconds", "2",
    )  # fmt: skip
    steady: Drip | None = None
    try:
        port = int(read_line(srv.proc, "web on ").rsplit(":", 1)[1])
        held = [
            _upload_from(port, f"127.0.0.{2 + i}", PART + b"\xff\xd8", False, more=4 << 20)
            for i in range(8)
        ]
        steady = Drip(held, 0.25, bytes(4096))  # 16 KiB/s each
        time.sleep(3.5)  # past the page's --upload-idle-seconds (2 s): their pace counts
        newcomer = _answer(_upload_from(port, "127.0.0.20", _photo_form(), True), 60)
        assert newcomer is not None and newcomer.startswith("HTTP/1.1 200 OK\r\n"), newcomer
        answered, _, _ = select.select(held, [], [], 10)  # at its next block
        time.sleep(1)
        answered, _, _ = select.select(held, [], [], 0)  # one was answered, 7 go on
        steady.close()
        assert len(answered) == 1, answered
        assert _cut_for_pace([_answer(answered[0], 5)]) == 1
    finally:
        if steady is not None:
            steady.close()
        srv.stop()


class Reconnect:
    """From each of ``sources``, one stalled upload to `prov web` on ``port`` (a byte every
    0.5 s), closed and opened again every ``every`` seconds, from a thread: each is always
    younger than an idle window longer than ``every``, so the pace rule alone never
    measures it."""

    def __init__(self, port: int, sources: list[str], every: float) -> None:
        self.port = port
        self.sources = sources
        self.every = every
        self.cycles = 0
        self.stop = threading.Event()
        self.socks = [self._open(src) for src in sources]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _open(self, source: str) -> socket.socket:
        return _upload_from(self.port, source, PART + b"\xff\xd8", False)

    def _run(self) -> None:
        ticks = 0
        while not self.stop.wait(0.5):
            ticks += 1
            if ticks % round(self.every / 0.5):
                for s in self.socks:
                    try:
                        s.sendall(b"\0")
                    except OSError:  # answered (cut) and closed by the server
                        pass
                continue
            for i, s in enumerate(self.socks):
                s.close()
                self.socks[i] = self._open(self.sources[i])
            self.cycles += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for s in self.socks:
            s.close()


def test_web_upload_slots_cannot_be_held_by_reconnecting_before_the_idle_window() -> None:
    """An address whose upload ended unfinished under the pace is on notice: its next
    uploads are measured at once, not after --upload-idle-seconds, so reconnecting does not
    restart the clock. Here 8 addresses each hold one stalled upload, closed and opened
    again every 1.5 s, always younger than the 2 s idle window; 8 honest uploads from
    other addresses, sent between two reconnections, take their slots and get their
    report. Before, each got 503 "verifying as many files as it can" for as long as the
    reconnections went on (the pace rule measured none of the 8 stalled uploads).
    Real `prov serve` and `prov web`, loopback addresses 127.0.0.x, a real JPEG."""
    with tempfile.TemporaryDirectory() as tmp:
        srv = start_server(Path(tmp) / "prov.db")
        web = start_web(srv.address, "--upload-idle-seconds", "2")
        port = int(web.address.rsplit(":", 1)[1])
        jam: Reconnect | None = None
        try:
            jam = Reconnect(port, [f"127.0.0.{2 + i}" for i in range(8)], 1.5)
            while jam.cycles < 2:  # each address has had an upload end, stalled
                time.sleep(0.1)
            start = jam.cycles
            while jam.cycles == start:  # just reconnected: 1.5 s to the next time
                time.sleep(0.05)
            time.sleep(0.5)
            form = _photo_form()
            honest = [_upload_from(port, f"127.0.0.{20 + i}", form, True) for i in range(8)]
            answers = [_answer(s, 60) for s in honest]
            for a in answers:
                assert a is not None and a.startswith("HTTP/1.1 200 OK\r\n"), a
            jam.close()  # their last uploads end stalled too
            time.sleep(0.5)

            # on notice, an upload that keeps the pace keeps its slot: 7 stalled uploads
            # and one at about 16 KiB/s from those addresses; 7 newcomers take the
            # stalled ones' slots before the idle window has passed, the 8th is refused
            stalled = [
                _upload_from(port, f"127.0.0.{3 + i}", PART + b"\xff\xd8", False) for i in range(7)
            ]
            steady, sent = _paced_upload(port, "127.0.0.2", form)
            time.sleep(1.2)
            young = _young_then_refused(port, 40)
            _whole_at_last(steady, sent)
            for s in stalled + young:
                s.close()
        finally:
            if jam is not None:
                jam.close()
            web.stop()
            srv.stop()


def test_serve_http_page_takes_the_web_limit_flags(tmp_path: Path) -> None:
    """`prov serve --http` takes `prov web`'s limit flags under the same names, and its
    page obeys them: --upload-idle-seconds is the page's idle window too (a stalled upload
    gets 408 after 2 s; before, the page kept a fixed 60 s whatever the flag said),
    --uploads-per-minute, --header-seconds and --connections-per-client (before: no such
    options, so the page always ran with `prov web`'s defaults). Real `prov serve --http`,
    loopback addresses 127.0.0.x."""
    srv = start_server(
        tmp_path / "prov.db",
        "--http", "127.0.0.1:0", "--upload-idle-seconds", "2",
        "--uploads-per-minute", "2", "--header-seconds", "2",
        "--connections-per-client", "3", "--max-connections", "64",
    )  # fmt: skip
    try:
        web = read_line(srv.proc, "web on ")
        port = int(web.rsplit(":", 1)[1])
        stalled = _answer(_upload_from(port, "127.0.0.2", PART + b"\xff\xd8", False), 20)
        assert stalled is not None and stalled.startswith("HTTP/1.1 408 "), stalled
        assert "nothing arrived for 2 s" in stalled, stalled  # the idle window that ran out
        empty = PART + b"\r\n--B--\r\n"  # refused at once (400), but counted as started
        rate = [_answer(_upload_from(port, "127.0.0.3", empty, True), 10) for _ in range(3)]
        assert [(a or "").split("\r\n")[0] for a in rate] == [
            "HTTP/1.1 400 Bad Request",
            "HTTP/1.1 400 Bad Request",
            "HTTP/1.1 429 Too Many Requests",
        ], rate
        head = _connect(web, "127.0.0.4")
        head.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n")  # the rest of the head never comes
        cut = _read_until_closed(head, 20)
        assert cut is not None and cut.startswith(b"HTTP/1.1 408 "), cut
        assert b"did not all arrive within 2 s" in cut, cut  # --header-seconds, not 10 s
        held = [_connect(web, "127.0.0.5") for _ in range(3)]
        fourth = _connect(web, "127.0.0.5")
        _assert_too_many(_read_until_closed(fourth, 10), "127.0.0.5", 3)
        for s in [head, fourth, *held]:
            s.close()
    finally:
        srv.stop()


def _answered_early(kind: str) -> tuple[bytes, tuple[bytes, ...]]:
    """(request, the starts its answer may have) for a request the server answers
    before reading its whole body (1 MB of it still to come): a form of more than 8
    parts to `prov web` (400 at the ninth part's head, or 429 while two of the client's
    uploads are still running), a body over 128 KiB to the witness (413)."""
    if kind == "web":
        parts = b"".join(
            b'--B\r\ncontent-disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i for i in range(9)
        )
        body = parts + b'--B\r\ncontent-disposition: form-data; name="pad"\r\n\r\n'
        body += b"y" * 1_000_000 + b"\r\n--B--\r\n"
        head = b"POST /api/v1/verify HTTP/1.1\r\nhost: localhost\r\n"
        head += b"content-type: multipart/form-data; boundary=B\r\n"
        answers: tuple[bytes, ...] = (
            b"HTTP/1.1 400 Bad Request\r\n",
            b"HTTP/1.1 429 Too Many Requests\r\n",
        )
    else:
        body = b"old 0\n" + b"x" * 1_000_000
        head = b"POST /add-checkpoint HTTP/1.1\r\nhost: localhost\r\n"
        answers = (b"HTTP/1.1 413 Request Entity Too Large\r\n",)
    return head + b"content-length: %d\r\n\r\n" % len(body) + body, answers


def test_a_connection_answered_before_its_body_ended_is_closed_once_idle(
    http_server: tuple[str, str],
) -> None:
    """A request answered before its whole body came (a 400 or 413 for a form or body
    over a limit), whose client then sends the rest and waits, is closed (since the
    lingering close: after its answer and at most `LINGER_SECONDS` of draining; before
    that, once idle, as any kept-alive connection is), so the client's connection share
    comes back. Before: uvicorn's keep-alive timer, cancelled by the
    body's remaining bytes (read and dropped), was never set again, and the guard left
    an idle connection to it: each such connection stayed open for good (seen: 300 s),
    so 8 of them (32 by default) took the client's share for good, and 8 clients (256)
    every connection of the server."""
    kind, url = http_server
    request, answers = _answered_early(kind)
    socks = [_connect(url, "127.0.0.3") for _ in range(8)]  # the fixture's share
    try:
        for s in socks:
            s.sendall(request)
        start = time.monotonic()
        closed = [_read_until_closed(s, max(0.1, start + 20 - time.monotonic())) for s in socks]
        for got in closed:
            assert got is not None, "a connection answered early was still open after 20 s"
            assert got.startswith(answers)
        with _connect(url, "127.0.0.3") as again:  # the share is back
            got = _get_favicon(again)
        assert got is not None and not got.startswith(b"HTTP/1.1 503")
    finally:
        for s in socks:
            s.close()


def _oversized(kind: str, length: int, close: bool) -> tuple[bytes, bytes]:
    """(a request head declaring a body of ``length`` bytes, the start of its answer): a
    JSON lookup to `prov web` (413 past 4 MiB), an add-checkpoint to the witness (413
    past 128 KiB); with ``close``, the head asks for ``Connection: close`` (as urllib's
    does)."""
    if kind == "web":
        head = (
            b"POST /api/v1/lookup HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        )
        answer = b"HTTP/1.1 413 "
    else:
        head = b"POST /add-checkpoint HTTP/1.1\r\nhost: localhost\r\n"
        answer = b"HTTP/1.1 413 "
    if close:
        head += b"connection: close\r\n"
    return head + b"content-length: %d\r\n\r\n" % length, answer


def test_a_client_still_sending_an_oversized_body_reads_its_answer(
    http_server: tuple[str, str],
) -> None:
    """A client that sends its whole 20 MB body before reading (as urllib does, with
    ``Connection: close``) gets the 413/400 the server answered early, then the end of
    the connection: the server half-closes and drains the rest (RFC 9112 §9.6, a
    lingering close). Before: the server closed with the body's bytes unread, the kernel
    sent a reset, and the client's send failed with "connection reset by peer" before it
    read anything (5 of 5 tries)."""
    kind, url = http_server
    head, answer = _oversized(kind, 20_000_000, close=True)
    with _connect(url, "127.0.0.4") as s:
        s.sendall(head)
        s.sendall(b"x" * 20_000_000)
        got = _read_until_closed(s, 20)
    assert got is not None and got.startswith(answer), got


def test_a_client_sending_an_endless_body_after_its_answer_is_cut_off(
    http_server: tuple[str, str],
) -> None:
    """A client declaring a body of 10^12 bytes and sending it as fast as it can, on a
    kept-alive connection, is closed after its early answer once it has sent at most
    `LINGER_BYTES` more (or after `LINGER_SECONDS`), and the answer is in what it read.
    Before: the server read and dropped the whole declared body (1 GB went through
    without the connection closing)."""
    kind, url = http_server
    head, answer = _oversized(kind, 10**12, close=False)
    sent = 0
    piece = b"x" * 65536
    with _connect(url, "127.0.0.4") as s:
        s.sendall(head)
        s.settimeout(20)
        try:
            while sent < 1_000_000_000:
                sent += s.send(piece)
        except OSError:
            pass
        got = _read_until_closed(s, 20)
    # what the server drained, plus what the kernel buffers of both ends held (Linux
    # grows a receive buffer up to tcp_rmem's maximum, 32 MiB by default; seen: 4.6 MiB)
    assert sent < LINGER_BYTES + 64 * 1024 * 1024, sent
    assert got is not None and got.startswith(answer), got


def test_a_request_framed_by_both_lengths_is_answered_then_closed(tmp_path: Path) -> None:
    """A request with both Transfer-Encoding: chunked and Content-Length (a request
    smuggling shape) is answered, by its chunked body, and its connection closed, as RFC
    9112 section 6.3 requires: before, `prov serve --http` answered it and kept the
    connection alive for the next request."""
    srv = start_server(tmp_path / "prov.db", "--http", "127.0.0.1:0")
    try:
        url = read_line(srv.proc, "web on ").rstrip("/")
        body = b'{"queries": []}'  # answered 400 at once: no query
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        head = (
            b"POST /api/v1/lookup HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        )
        with _connect(url, "127.0.0.4") as s:
            s.sendall(head + b"content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n" + chunked)
            got = _read_until_closed(s, 3)  # well inside the 10 s keep-alive
        assert got is not None, "the connection was kept open after the answer"
        assert got.startswith(b"HTTP/1.1 400"), got[:200]
        with _connect(url, "127.0.0.4") as s:  # one length alone: kept alive, as before
            s.sendall(head + b"content-length: %d\r\n\r\n" % len(body) + body)
            assert _read_until_closed(s, 3) is None
    finally:
        srv.stop()


def test_one_address_cannot_take_every_lingering_close() -> None:
    """An address whose connections are answered early over and over (each then lingers
    up to `LINGER_SECONDS`) holds at most --connections-per-client lingering closes, so
    another client still sending its oversized body reads its 413. Before: one address
    opening connections faster than they ended took all --max-connections lingering
    slots, and every other client's early answer came as a reset (10 of 10 measured)."""
    proc = start_web("127.0.0.1:1", "--connections-per-client", "2", "--max-connections", "8")
    head, answer = _oversized("web", 20_000_000, close=True)
    attack, _ = _oversized("web", 10**12, close=False)
    held: list[socket.socket] = []
    stop = threading.Event()

    def flood() -> None:  # never reads, never closes: each answered socket lingers 2 s
        while not stop.is_set():
            try:
                s = _connect(proc.address, "127.0.0.2")
                s.sendall(attack)
                held.append(s)
            except OSError:
                time.sleep(0.01)

    flooder = threading.Thread(target=flood, daemon=True)
    try:
        flooder.start()
        time.sleep(1.0)  # far more than 8 connections answered and lingering by now
        with _connect(proc.address, "127.0.0.4") as s:
            s.sendall(head)
            s.sendall(b"x" * 20_000_000)
            got = _read_until_closed(s, 20)
    except ConnectionResetError as e:
        got = repr(e).encode()
    finally:
        stop.set()
        flooder.join(10)
        for s in held:
            s.close()
        proc.stop()
    assert len(held) > 8, len(held)
    assert got is not None and got.startswith(answer), got


def test_a_stalled_json_body_gets_the_uploads_408() -> None:
    """A JSON body (`POST /api/v1/lookup`, `POST /matches/byBinding`) that stops arriving
    gets the 408 an upload gets after --upload-idle-seconds, saying so (h-att41; before:
    the guard's backstop closed the connection 5 s later with no answer at all)."""
    web = start_web("127.0.0.1:1", "--upload-idle-seconds", "1")
    try:
        for path in ("/api/v1/lookup", "/matches/byBinding"):
            s = _connect(web.address, "127.0.0.1")
            s.sendall(
                f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                "Content-Length: 100\r\n\r\n{".encode()
            )
            got = _read_until_closed(s, 30)
            s.close()
            assert got is not None and got.startswith(b"HTTP/1.1 408 "), (path, got)
            assert b"nothing arrived for 1 s" in got, got
    finally:
        web.stop()
