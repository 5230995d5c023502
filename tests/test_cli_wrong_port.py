"""`--server` naming a port where an HTTP/1 server answers (the web page of `make web` or
`prov web`, a witness) is told so, and where the gRPC address is printed; not "no server
answers there. Start one with `prov serve`", which sent its user to start a second server
(a newcomer's finding: `make web` prints its page's http:// address first). A real HTTP
server on a real port."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clients.cli import main as prov_main


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_error(404)

    do_POST = do_GET  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_web_port_given_as_the_server_is_told_apart_from_no_server(
    http_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert prov_main(["log", "key", "--server", f"127.0.0.1:{http_port}"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"cannot reach the server at 127.0.0.1:{http_port}" in err, err
    assert "no server answers there" not in err, err
    # http.server answers gRPC's HTTP/2 preface with a bare HTML page, no status line:
    # gRPC says only "Failed parsing HTTP/2", as of an SSH banner (below)
    assert "a server answers there, but not in gRPC (the web page of" in err, err
    assert "'listening on HOST:PORT'" in err and "'gRPC: HOST:PORT'" in err, err


class _Status(BaseHTTPRequestHandler):
    """Answers every request line, the HTTP/2 preface's too, with an HTTP/1.1 status line
    (as uvicorn, behind `prov web`, does)."""

    def handle_one_request(self) -> None:
        self.rfile.readline(65537)
        self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        self.close_connection = True


def test_an_http1_status_line_is_said_to_be_an_http_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        assert prov_main(["log", "key", "--server", f"127.0.0.1:{port}"]) == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    err = " ".join(capsys.readouterr().err.split())
    assert "Trying to connect an http1.x server" in err, err
    assert "an HTTP server answers there, not the gRPC service" in err, err


@pytest.fixture
def banner_port() -> Iterator[int]:
    """A TCP server on a real port that greets each connection with an SSH banner (a
    server that speaks first, and not HTTP), then closes it."""
    listener = socket.create_server(("127.0.0.1", 0))

    def greet() -> None:
        try:
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                    conn.recv(65536)  # what the client sends, until it closes
        except OSError:  # the listener closed
            pass

    thread = threading.Thread(target=greet, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_a_server_that_speaks_no_http_is_not_said_to_be_an_http_server(
    banner_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """gRPC says "Failed parsing HTTP/2" of any first bytes that are no HTTP/2 frame (an
    SSH server's banner: "got frame type 45"), and the hint said "an HTTP server answers
    there" of it; only gRPC's "Trying to connect an http1.x server" names one."""
    assert prov_main(["log", "key", "--server", f"127.0.0.1:{banner_port}"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "Failed parsing HTTP/2" in err, err
    assert "an HTTP server answers there" not in err, err
    assert "no server answers there" not in err, err
    assert "answers there, but not in gRPC" in err, err


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener takes every connection and never writes a byte: what a
    client meets at a `prov serve` stopped with Ctrl-Z (SIGSTOP) or hung, whose kernel
    still completes the connections, or at a service waiting for its client to speak
    first (TLS)."""
    listener = socket.create_server(("127.0.0.1", 0))
    taken: list[socket.socket] = []

    def take() -> None:
        try:
            while True:
                taken.append(listener.accept()[0])  # kept open, never written to
        except OSError:  # the listener closed
            pass

    threading.Thread(target=take, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for conn in taken:
            conn.close()


def test_a_port_that_takes_the_connection_but_never_answers_is_not_no_server(
    silent_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """gRPC says "timed out before receiving SETTINGS frame" when the peer took the
    connection and sent nothing back: "no server answers there. Start one with `prov
    serve`" would send its user to start a second server beside a stopped one."""
    assert prov_main(["log", "key", "--server", f"127.0.0.1:{silent_port}"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "before receiving SETTINGS frame" in err, err
    assert "no server answers there" not in err, err
    assert "took the connection but sent nothing back" in err, err
    assert "stopped (Ctrl-Z) or hung" in err, err
