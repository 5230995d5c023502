"""Request smuggling through chunked framing: a chunk's data must be followed by CRLF
(RFC 9112 section 7.1). h11 before 0.16.0 took any two bytes there (GHSA-vqfr-h8mv-ghfj,
CVE-2025-43859), so a reverse proxy that reads the chunk size another way (as many do
for an over-long chunk) and `prov web` disagreed about where the body ends: bytes the
proxy forwarded as one request's body were read here as a second request, answered
outside the proxy's rules. pyproject.toml's floor was h11>=0.14, so an install without
constraints.txt could get a reader that accepts it. Real `prov serve --http`, raw socket."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest

from tests.conftest import ServerProc, read_line, start_server
from tests.test_http_slow_clients import _read_until_closed


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    srv: ServerProc = start_server(
        tmp_path_factory.mktemp("smuggle") / "prov.db", "--http", "127.0.0.1:0"
    )
    try:
        host, port = read_line(srv.proc, "web on ").removeprefix("http://").rsplit(":", 1)
        yield host, int(port)
    finally:
        srv.stop()


def _exchange(address: tuple[str, int], data: bytes) -> list[bytes]:
    """The status lines of every answer to ``data`` sent on one connection, read until
    the server closes it."""
    with socket.create_connection(address, timeout=30) as s:
        s.sendall(data)
        got = _read_until_closed(s, 30)
    assert got is not None, "the connection was kept open"
    return re.findall(rb"HTTP/1\.1 \d{3} ", got)  # an answer's body runs into the next one


def test_a_chunk_not_ended_by_crlf_is_refused_not_read_as_a_second_request(
    web: tuple[str, int],
) -> None:
    # a lookup's chunk followed by "XX" where its CRLF belongs, then a request hidden in
    # what a proxy reading the framing strictly would forward as more of the body
    body = b'{"queries": [{"sha256": "' + b"00" * 32 + b'"}]}'
    hidden = b"GET /api/v1/hidden HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    head = (
        b"POST /api/v1/lookup HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    statuses = _exchange(web, head + b"%x\r\n%sXX0\r\n\r\n" % (len(body), body) + hidden)
    assert statuses and statuses[0].startswith(b"HTTP/1.1 400"), statuses  # was 200
    assert len(statuses) == 1, statuses  # the hidden GET is never answered (was: 200, then 404)
    # the same body, framed right, is one request and the next is read after it
    statuses = _exchange(web, head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) + hidden)
    assert statuses == [b"HTTP/1.1 200 ", b"HTTP/1.1 404 "], statuses
