"""Small answers of a real `prov web` / `prov serve --http` on real ports: an upload
request with no body, a request whose Content-Length is bad or given twice, a tile that
is not there, and a service that takes connections but never answers (the start-up
warning, and the 504's Retry-After)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import ServerProc, read_line, start_server, start_web

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `prov serve --http` on an empty log; yields its web address."""
    srv = start_server(tmp_path_factory.mktemp("small") / "prov.db", "--http", "127.0.0.1:0")
    try:
        yield read_line(srv.proc, "web on ")
    finally:
        srv.stop()


def _json_error(r: httpx.Response, code: int) -> str:
    assert r.status_code == code, r.text
    body = r.json()["error"]
    assert body["code"] == code, body
    return str(body["message"])


def test_an_empty_upload_request_is_told_it_carried_no_file(web: str) -> None:
    """Before: an empty body POSTed as a multipart form was told "truncated upload"."""
    with httpx.Client(base_url=web, timeout=60) as c:
        r = c.post(
            "/api/v1/verify",
            content=b"",
            headers={"content-type": "multipart/form-data; boundary=XyZ"},
        )
    said = _json_error(r, 400)
    assert "truncated" not in said, said
    assert "carried no file" in said and "`file`" in said, said


def _raw(web: str, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection; the whole answer (the server closes)."""
    where = urlsplit(web)
    with socket.create_connection((where.hostname, where.port), timeout=30) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


@pytest.mark.parametrize(
    ("lengths", "words"),
    [
        ((b"5", b"7"), "Content-Length"),
        ((b"five",), "Content-Length"),
    ],
)
def test_a_bad_content_length_is_answered_in_the_json_error_shape(
    web: str, lengths: tuple[bytes, ...], words: str
) -> None:
    """Before: uvicorn's plain text "Invalid HTTP request received."."""
    head = b"POST /api/v1/verify HTTP/1.1\r\nHost: localhost\r\n"
    head += b"".join(b"Content-Length: " + n + b"\r\n" for n in lengths)
    answer = _raw(web, head + b"\r\nhello")
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 400"), answer
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in headers.lower(), answer
    error = json.loads(body)["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT", error
    assert words in error["message"] and "Invalid HTTP" not in error["message"], error


class _Silent:
    """A TCP listener on a loopback port that takes connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def silent_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """A `prov web --service-timeout 2` whose service takes connections and never
    answers, serving an empty --tiles-dir."""
    silent = _Silent()
    tiles = tmp_path_factory.mktemp("tiles")
    try:
        page = start_web(silent.address, "--service-timeout", "2", "--tiles-dir", str(tiles))
        try:
            yield page
        finally:
            page.stop()
    finally:
        silent.close()


def test_a_service_that_never_answers_is_described_in_words(silent_page: ServerProc) -> None:
    """Before: the start-up warning said the page "answers 503 until it does" and showed
    gRPC's "DEADLINE_EXCEEDED: Deadline Exceeded"."""
    deadline = time.monotonic() + 30
    log = silent_page.stderr()
    while "warning:" not in log and time.monotonic() < deadline:
        time.sleep(0.2)
        log = silent_page.stderr()
    warning = next(line for line in log.splitlines() if line.startswith("warning:"))
    assert "DEADLINE_EXCEEDED" not in warning and "Deadline Exceeded" not in warning, warning
    assert "503 until" not in warning, warning
    assert "504" in warning and "--service-timeout" in warning, warning


def test_a_504_says_when_to_retry(silent_page: ServerProc) -> None:
    """Before: the 504 (no answer within --service-timeout) had no Retry-After; the
    503s carry one."""
    with httpx.Client(base_url=silent_page.address, timeout=60) as c:
        r = c.get("/api/v1/checkpoint")
    assert r.status_code == 504, r.text
    assert r.headers.get("retry-after", "").isdigit(), r.headers


def test_a_tile_not_there_is_not_cached(silent_page: ServerProc) -> None:
    """Before: a tile's 404 had no Cache-Control, so a cache could keep it (heuristic
    freshness) after the log grew to hold the tile."""
    with httpx.Client(base_url=silent_page.address, timeout=60) as c:
        r = c.get("/tlog/tile/0/000")
    assert r.status_code == 404, r.text
    assert r.headers.get("cache-control") == "no-store", r.headers
