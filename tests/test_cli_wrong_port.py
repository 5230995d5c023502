"""`--server` naming a port where an HTTP/1 server answers (the web page of `make web` or
`prov web`, a witness) is told so, and where the gRPC address is printed; not "no server
answers there. Start one with `prov serve`", which sent its user to start a second server
(a newcomer's finding: `make web` prints its page's http:// address first). A real HTTP
server on a real port."""

from __future__ import annotations

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
    assert "an HTTP server answers there, not the gRPC service" in err, err
    assert "'listening on HOST:PORT'" in err and "'gRPC: HOST:PORT'" in err, err
