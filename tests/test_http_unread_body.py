"""An answer given before the request's body has all come (a refusal: a 404, a form
where raw bytes are wanted, a rate limit) says ``Connection: close``, since the server
closes the connection after it rather than read a body declared of any length (RFC 9112
section 9.6: a server that will close says so). Before, it said nothing: a client kept
the connection for its next request, which met the close ("Server disconnected without
sending a response": two such failures of test_web_api under load). An answer after the
whole body keeps the connection. Real `prov web`, `prov witness serve` and `prov serve
--http` on loopback ports, raw sockets."""

from __future__ import annotations

from tests.test_http_head_limit import http_url  # noqa: F401 (a fixture)
from tests.test_http_slow_clients import _connect, _read_until_closed

#: Body bytes declared; far more than are sent, and than uvicorn reads ahead (64 KiB).
DECLARED = 1 << 20


def _post(declared: int, sent: int) -> bytes:
    return (
        f"POST /no-such-page HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/octet-stream"
        f"\r\ncontent-length: {declared}\r\n\r\n"
    ).encode() + b"x" * sent


def _head(answer: bytes) -> list[str]:
    return answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower().split("\r\n")


def test_an_answer_before_the_body_ended_says_connection_close(http_url: str) -> None:  # noqa: F811
    with _connect(http_url, "127.0.0.6") as s:
        s.sendall(_post(DECLARED, 1000))
        got = _read_until_closed(s, 10)
    assert got is not None, "the connection was kept open"
    head = _head(got)
    assert head[0].startswith("http/1.1 404"), head
    assert "connection: close" in head, head


def test_an_answer_after_the_whole_body_keeps_the_connection(http_url: str) -> None:  # noqa: F811
    with _connect(http_url, "127.0.0.6") as s:
        s.sendall(_post(10, 10))
        s.settimeout(10)
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(4096)
    head = _head(got)
    assert head[0].startswith("http/1.1 404") and "connection: close" not in head, head
