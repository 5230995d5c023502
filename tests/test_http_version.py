"""A request line naming an HTTP version other than 1.x (``HTTP/2.0`` sent in plain text,
the HTTP/2 connection preface, ``HTTP/3.0``, ``HTTP/0.9``) is answered 505 HTTP Version
Not Supported, saying which versions the server speaks, and closed; HTTP/1.0 and 1.1
are answered, and a later minor version of 1 as HTTP/1.1 (RFC 9110 section 2.5). Real
`prov web` and `prov witness serve` processes on loopback ports (both run the same
guard, `provenance.web.guard`), raw sockets."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.conftest import ServerProc, start_web
from tests.test_http_slow_clients import _witness

pytestmark = pytest.mark.slow


#: What each server answers a GET of /static/app.css: the web's style sheet; the
#: witness has none.
STATUS = {"web": b"200", "witness": b"404"}


#: The server of each kind the running test has (`server`), for its log.
PROCS: dict[str, ServerProc] = {}


@pytest.fixture(scope="module", params=list(STATUS))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, tuple[str, int]]]:
    """(kind, (host, port)) of a real `prov web` (its gRPC service never asked) or `prov
    witness serve`."""
    kind = str(request.param)
    if kind == "web":
        proc = start_web("127.0.0.1:1")
    else:
        proc = _witness(tmp_path_factory.mktemp("witness"))
    host, port = proc.address.removeprefix("http://").rsplit(":", 1)
    PROCS[kind] = proc
    try:
        yield kind, (host, int(port))
    finally:
        proc.stop()


def _ask(address: tuple[str, int], line: str, rest: bytes = b"") -> tuple[bytes, bool]:
    """Send ``line`` as a request line with a Host header (and ``rest`` after the head)
    on a new connection: (the answer's bytes, whether the server closed the connection
    within 10 s)."""
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(f"{line}\r\nHost: {address[0]}:{address[1]}\r\n\r\n".encode() + rest)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except TimeoutError:
            return got, False
        except ConnectionResetError:
            pass
    return got, True


@pytest.mark.parametrize("version", ["2.0", "3.0", "0.9", "2.1", "9.9"])
def test_another_http_version_gets_505(server: tuple[str, tuple[str, int]], version: str) -> None:
    answer, closed = _ask(server[1], f"GET /static/app.css HTTP/{version}")
    assert closed, answer[:300]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), answer[:300]
    assert b"\r\nx-content-type-options: nosniff\r\n" in head.lower() + b"\r\n"
    assert b"\r\ncache-control: no-store" in head.lower()
    error = json.loads(body)["error"]
    assert error == {
        "code": 505,
        "status": "HTTP_VERSION_NOT_SUPPORTED",
        "message": f"HTTP/{version} is not supported: this server speaks HTTP/1.1 and"
        " HTTP/1.0, in plain text; send the request line as METHOD TARGET HTTP/1.1",
    }


def test_the_http2_preface_in_plain_text_gets_505(server: tuple[str, tuple[str, int]]) -> None:
    """An HTTP/2 client with prior knowledge (RFC 9113 section 3.3) sends this first."""
    answer, closed = _ask(server[1], "PRI * HTTP/2.0", b"SM\r\n\r\n")
    assert closed and answer.startswith(b"HTTP/1.1 505 "), answer[:300]


@pytest.mark.parametrize("version", ["1.1", "1.0", "1.2"])
def test_http_1_is_answered(server: tuple[str, tuple[str, int]], version: str) -> None:
    """Two requests sent at once on one connection: HTTP/1.1, and 1.2 taken as 1.1, get
    both answered (the connection kept); 1.0 the first, then the connection closes."""
    kind, address = server
    second = "GET /static/app.css HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    answer, closed = _ask(address, f"GET /static/app.css HTTP/{version}", second.encode())
    assert closed and answer.startswith(b"HTTP/1.1 " + STATUS[kind] + b" "), answer[:300]
    answers = answer.count(b"HTTP/1.1 " + STATUS[kind] + b" ")
    assert answers == (1 if version == "1.0" else 2), (version, answer)


def test_a_later_http_1_needs_a_host_as_1_1_does(server: tuple[str, tuple[str, int]]) -> None:
    """HTTP/1.2 is read as HTTP/1.1, whose request must name its Host (RFC 9112 section
    3.2): without one, 400 as for 1.1; HTTP/1.0 needs none."""
    kind, address = server

    def without_host(version: str) -> bytes:
        with socket.create_connection(address, timeout=10) as s:
            s.sendall(f"GET /static/app.css HTTP/{version}\r\nConnection: close\r\n\r\n".encode())
            return s.makefile("rb").read()

    for version in ("1.1", "1.2", "1.9"):
        head, _, body = without_host(version).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), (version, head)
        assert json.loads(body)["error"]["message"] == (
            "the request could not be read: Missing mandatory Host: header"
        ), version
    answer = without_host("1.0")
    assert answer.startswith(b"HTTP/1.1 " + STATUS[kind] + b" "), answer[:300]


def test_a_head_request_refused_after_its_line_gets_a_head_alone(
    server: tuple[str, tuple[str, int]],
) -> None:
    """A HEAD whose version, or missing Host, is refused once h11 has read it whole: the
    answer's head (its Content-Length that of the JSON a GET gets), no body, and no error
    in the log (no "Fatal error on transport" of h11 raising on a body for a HEAD)."""
    kind, address = server
    for line, status in (("HEAD /static/app.css HTTP/2.0", b"505"), ("HEAD / HTTP/1.2", b"400")):
        with socket.create_connection(address, timeout=10) as s:
            head = line + ("\r\n" if status == b"400" else f"\r\nHost: {address[0]}\r\n")
            s.sendall(head.encode() + b"\r\n")
            answer = s.makefile("rb").read()
        head_bytes, sep, body = answer.partition(b"\r\n\r\n")
        assert head_bytes.startswith(b"HTTP/1.1 " + status + b" ") and sep, answer[:300]
        assert body == b"", (line, body[:300])
        assert b"\r\ncontent-length: 0" not in head_bytes.lower(), head_bytes
    log = PROCS[kind].stderr()
    assert "Fatal error" not in log and "Traceback" not in log, log[-3000:]
