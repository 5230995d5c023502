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
    assert srv.proc.stderr is not None
    logged = srv.proc.stderr.read()
    assert any(LINE.match(line) for line in logged.splitlines()), logged


def test_the_http_servers_own_warnings_are_written_as_every_line(tmp_path: Path) -> None:
    """uvicorn's warnings (here a request whose head has a line that is no header) are written as
    this program's lines, not in uvicorn's own format ("WARNING:  Invalid HTTP request
    received.", review att37)."""
    srv = start_server(tmp_path / "prov.db", "--http", "127.0.0.1:0")
    try:
        host, port = read_line(srv.proc, "web on ").removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port.rstrip("/")))) as s:
            s.sendall(b"GET /log HTTP/1.1\r\nhost: t\r\nthis line is no header\r\n\r\n")
            s.settimeout(10)
            assert s.recv(4096).startswith(b"HTTP/1.1 400"), "no answer to the malformed head"
    finally:
        srv.stop()
    assert srv.proc.stderr is not None
    logged = srv.proc.stderr.read().splitlines()
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
                    b"POST /api/v1/lookup HTTP/1.1\r\nhost: t\r\n"
                    b"content-type: application/json\r\ncontent-length: 100000\r\n\r\n"
                    b'{"queries": ['
                )
        with socket.create_connection((host, int(port.rstrip("/")))) as s:
            s.sendall(b"GET /log HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            s.settimeout(10)
            assert s.recv(4096).startswith(b"HTTP/1.1 200"), "the server stopped answering"
    finally:
        srv.stop()
    assert srv.proc.stderr is not None
    logged = srv.proc.stderr.read()
    assert "Traceback" not in logged and "unexpected error" not in logged, logged
