"""A request head longer than the guard takes (`HttpLimits.max_head_bytes`, 16 KiB) is
answered 431 Request Header Fields Too Large (RFC 6585 §5), or 414 URI Too Long when its
request line alone is (RFC 9110 §15.5.15), with a sentence naming the limit, and closed.
Before, a head still incomplete past h11's bound got uvicorn's bare 400 "Invalid HTTP
request received.", and a longer one that arrived in one read was served. Real `prov
web`, `prov witness serve` and `prov serve --http` on loopback ports, raw sockets."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from provenance.web.guard import DEFAULT_LIMITS
from tests.conftest import read_line, start_server, start_web
from tests.test_http_slow_clients import _connect, _read_until_closed, _witness

LIMIT = DEFAULT_LIMITS.max_head_bytes


@pytest.fixture(params=["web", "witness", "serve --http"])
def http_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """http://HOST:PORT of a real `prov web` (its gRPC server never asked), `prov witness
    serve` or `prov serve --http`."""
    kind = str(request.param)
    if kind == "web":
        proc = start_web("127.0.0.1:1")
        url = proc.address
    elif kind == "witness":
        proc = _witness(tmp_path)
        url = proc.address
    else:
        proc = start_server(tmp_path / "prov.db", "--http", "127.0.0.1:0")
        url = read_line(proc.proc, "web on ").rstrip("/")
    try:
        yield url
    finally:
        proc.stop()


def _exchange(url: str, data: bytes) -> bytes:
    """Send ``data`` on a new connection to ``url``; what came back before the server
    closed it (the test fails if it stays open 10 s)."""
    with _connect(url, "127.0.0.5") as s:
        s.sendall(data)
        got = _read_until_closed(s, 10)
    assert got is not None, "the connection was kept open"
    return got


def _head(target: str, header_bytes: int, end: bool = True) -> bytes:
    """A GET of ``target`` with one X-Pad header of ``header_bytes`` bytes; without its
    blank line unless ``end``."""
    head = f"GET {target} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\nx-pad: "
    return (head + "a" * header_bytes + "\r\n" + ("\r\n" if end else "")).encode()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else -1


def test_a_head_over_the_limit_gets_431_and_one_at_it_is_served(http_url: str) -> None:
    header_431 = (
        f"the request's line and headers are longer than the {LIMIT:,} bytes this server"
        " takes: send fewer or shorter headers\n"
    ).encode()
    # whole, in one send (h11 took it before), and still coming (h11's 400 before)
    for data in (_head("/", 4 * LIMIT), _head("/", 4 * LIMIT, end=False)):
        answer = _exchange(http_url, data)
        assert _status(answer) == 431, answer[:300]
        assert b"431 Request Header Fields Too Large\r\n" in answer
        assert answer.endswith(b"\r\n\r\n" + header_431), answer[-300:]
    # a head of exactly the limit is taken: some answer of the app, not of the guard
    at_limit = _head("/", 0)
    at_limit = _head("/", LIMIT - len(at_limit))
    assert len(at_limit) == LIMIT
    assert _status(_exchange(http_url, at_limit)) not in (400, 414, 431, -1)
    assert _status(_exchange(http_url, _head("/", LIMIT - len(_head("/", 0)) + 1))) == 431


def test_a_request_line_over_the_limit_gets_414(http_url: str) -> None:
    for data in (_head("/" + "u" * LIMIT, 10), _head("/" + "u" * LIMIT, 10, end=False)):
        answer = _exchange(http_url, data)
        assert _status(answer) == 414, answer[:300]
        assert answer.endswith(
            f"the request line is too long: with it no request head fits in the {LIMIT:,}"
            " bytes this server takes\n".encode()
        ), answer[-300:]


def test_a_pipelined_head_over_the_limit_gets_431_after_the_first_answer(
    http_url: str,
) -> None:
    first = b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n"
    answer = _exchange(http_url, first + _head("/", 2 * LIMIT))
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert len(statuses) == 2 and statuses[0] not in (400, 431), answer[:600]
    assert statuses[1] == 431, answer[-600:]


def _line(length: int) -> bytes:
    """A GET request line of ``length`` bytes, its CRLF included."""
    return b"GET /" + b"u" * (length - len(b"GET / HTTP/1.1\r\n")) + b" HTTP/1.1\r\n"


def test_a_request_line_that_leaves_no_room_for_the_blank_line_gets_414(http_url: str) -> None:
    # a line and its LF that fill the limit leave no room for the blank line that ends a
    # head (a bare LF at least): no head with it fits, so fewer headers cannot help
    # (431's advice); 431 before, as for any other head over the limit
    headers = b"host: localhost\r\nconnection: close\r\n\r\n"
    assert len(_line(LIMIT)) == LIMIT
    assert _status(_exchange(http_url, _line(LIMIT) + headers)) == 414
    # a byte shorter, the line and a bare LF fit (HTTP/1.0 needs no header): 431
    assert _status(_exchange(http_url, _line(LIMIT - 1) + headers)) == 431


def test_a_request_h11_cannot_read_is_told_so_without_python_reprs(http_url: str) -> None:
    """The 400 for a request line or chunk header h11 cannot read quotes the bytes it
    refused as text, escapes written ``\\xNN``, and says what a request line is; before,
    h11's words as they are: "illegal request line: bytearray(b'GET /log/entries/\\xd9...')",
    a Python repr, and nothing on what was wrong with it."""
    answer = _exchange(url=http_url, data=b"GET /log/\xd9\xa1 HTTP/1.1\r\nhost: localhost\r\n\r\n")
    assert _status(answer) == 400, answer
    message = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["message"]
    assert "bytearray" not in message, message
    assert "illegal request line: 'GET /log/\\xd9\\xa1 HTTP/1.1'" in message, message
    assert "percent-encoded" in message, message
    chunked = b"POST /x HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"
    answer = _exchange(url=http_url, data=chunked)
    message = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["message"]
    assert message.endswith("illegal chunk header: 'zz\\r\\n'"), message
