"""Log lines of the servers (`prov serve`, `prov web`, `prov witness serve`) carry the
UTC time, the level and the logger, configured once at the `prov` entry point."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from tests.conftest import read_line, start_server

LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO provenance\.server\.service: near-duplicate index: "
)


def test_server_log_lines_have_time_level_and_logger(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "prov.db")
    srv.stop()
    logged = srv.stderr()
    assert any(LINE.match(line) for line in logged.splitlines()), logged


def _answer(address: str, request: bytes) -> bytes:
    """The first bytes answered to ``request`` sent on a new connection to ``address``
    (``http://HOST:PORT``, as the servers print it)."""
    host, port = address.removeprefix("http://").rstrip("/").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as s:
        s.sendall(request)
        s.settimeout(10)
        return s.recv(4096)


def test_the_http_servers_own_warnings_are_written_as_every_line(tmp_path: Path) -> None:
    """uvicorn's warnings (here a request whose head has a line that is no header) are written as
    this program's lines, not in uvicorn's own format ("WARNING:  Invalid HTTP request
    received.", review att37)."""
    srv = start_server(tmp_path / "prov.db", "--http", "127.0.0.1:0")
    try:
        head = b"GET /log HTTP/1.1\r\nhost: localhost\r\nthis line is no header\r\n\r\n"
        answer = _answer(read_line(srv.proc, "web on "), head)
        assert answer.startswith(b"HTTP/1.1 400"), "no answer to the malformed head"
    finally:
        srv.stop()
    logged = srv.stderr().splitlines()
    stamp = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
    warned = [line for line in logged if "Invalid HTTP request received" in line]
    assert warned and all(re.match(stamp + "WARNING uvicorn.error: ", w) for w in warned), logged


def test_an_unknown_log_level_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROV_LOG_LEVEL", "loud")
    assert prov_main(["log", "key", "--key-file", "/nonexistent"]) == 1
    assert "PROV_LOG_LEVEL='LOUD' is not DEBUG, INFO" in capsys.readouterr().err


def test_a_client_that_leaves_mid_request_leaves_no_traceback(tmp_path: Path) -> None:
    """A client that closes its connection part way through a JSON body (POST
    /api/v1/lookup) is not an error of ours: before, each one logged ERROR "unexpected
    error answering" and a 1.2 KB traceback (review rev37), so a client could fill the
    log. The server goes on answering."""
    srv = start_server(tmp_path / "prov.db", "--http", "127.0.0.1:0")
    try:
        host, port = read_line(srv.proc, "web on ").removeprefix("http://").rsplit(":", 1)
        for _ in range(3):
            with socket.create_connection((host, int(port.rstrip("/")))) as s:
                s.sendall(
                    b"POST /api/v1/lookup HTTP/1.1\r\nhost: localhost\r\n"
                    b"content-type: application/json\r\ncontent-length: 100000\r\n\r\n"
                    b'{"queries": ['
                )
        with socket.create_connection((host, int(port.rstrip("/")))) as s:
            s.sendall(b"GET /log HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            s.settimeout(10)
            assert s.recv(4096).startswith(b"HTTP/1.1 200"), "the server stopped answering"
    finally:
        srv.stop()
    logged = srv.stderr()
    assert "Traceback" not in logged and "unexpected error" not in logged, logged


def test_warnings_any_client_can_cause_at_will_are_logged_once_a_minute(tmp_path: Path) -> None:
    """A malformed request head, an upgrade to a protocol the server does not speak and a
    malformed multipart form each made a WARNING line (uvicorn's "Invalid HTTP request
    received.", "Unsupported upgrade request.", python-multipart's parse error), one per
    request: one client on loopback wrote 2,000 lines in 1.2 s (about 140 KB/s of log, as
    the /metrics port's tracebacks were). Each kind is now written once a minute, the
    next line saying how many were left out; the server goes on answering them."""
    from tests.conftest import start_web

    web = start_web("127.0.0.1:1")  # no service is needed for these
    form = b"--B\r\nX\r\n\r\ndata\r\n--B--\r\n"  # a part header line with no colon
    requests = {
        "Invalid HTTP request received": b"GET / HTTP/1.1\r\nthis line is no header\r\n\r\n",
        "Unsupported upgrade request": b"GET /api HTTP/1.1\r\nhost: localhost\r\nupgrade: foo\r\n"
        b"connection: upgrade\r\n\r\n",
        "Found invalid character": b"POST /api/v1/verify HTTP/1.1\r\nhost: localhost\r\n"
        b"content-type: multipart/form-data; boundary=B\r\n"
        b"content-length: %d\r\n\r\n" % len(form) + form,
    }
    try:
        for request in requests.values():
            for _ in range(20):
                assert _answer(web.address, request).startswith(b"HTTP/1.1 "), "no answer"
    finally:
        web.stop()
    logged = web.stderr().splitlines()
    for words in requests:
        lines = [line for line in logged if words in line]
        assert len(lines) == 1, (words, lines)
        assert "WARNING" in lines[0], lines


def test_the_line_after_a_quiet_minute_says_how_many_were_left_out() -> None:
    """`ClientNoise`: of records of one kind within a minute only the first is written;
    the first after it names how many were left out; other uvicorn records pass."""
    import logging

    from provenance.web.serve import ClientNoise

    now = [0.0]
    noise = ClientNoise(60.0, clock=lambda: now[0])

    def record(name: str, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, None, None)

    invalid = "Invalid HTTP request received."
    assert noise.filter(record("uvicorn.error", invalid))
    assert not any(noise.filter(record("uvicorn.error", invalid)) for _ in range(5))
    assert noise.filter(record("uvicorn.error", "Exception in ASGI application\n"))
    assert noise.filter(record("python_multipart.multipart", "Expected boundary 45, got 1"))
    assert not noise.filter(record("python_multipart.multipart", "Expected boundary 45, got 2"))
    now[0] = 61.0
    later = record("uvicorn.error", invalid)
    assert noise.filter(later)
    assert later.getMessage().startswith(invalid + " (5 more like it left out since the last;"), (
        later.getMessage()
    )
