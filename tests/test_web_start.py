"""`prov web` against a gRPC service that does not answer: it starts (the service may come
up later) but says so on stderr at once, instead of serving 503s without a word."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import httpx
import pytest

from tests.conftest import ServerProc, closed_port, start_web


def _stderr_after_stop(web: ServerProc) -> str:
    web.stop()
    return web.stderr()


def test_web_warns_when_its_grpc_service_does_not_answer() -> None:
    down = closed_port()
    web = start_web(down)
    try:
        r = httpx.get(f"{web.address}/api/v1/checkpoint", timeout=30)
        assert r.status_code == 503, r.text
        # README and the OpenAPI description: a 503 says when to retry (it had no
        # Retry-After when the service could not be reached, only when it was busy)
        assert r.headers.get("retry-after") == "5", r.headers
        page = httpx.post(f"{web.address}/verify", files={"file": ("a.jpg", b"\xff\xd8")})
        assert page.status_code == 503 and page.headers.get("retry-after") == "5"
        assert "The verification service is unavailable" in page.text
    finally:
        err = _stderr_after_stop(web)
    assert f"warning: the gRPC service at {down} does not answer" in err, err
    assert "is `prov serve` running there?" in err


def test_web_says_nothing_when_its_grpc_service_answers(server: ServerProc) -> None:
    web = start_web(server.address)
    try:
        r = httpx.get(f"{web.address}/api/v1/checkpoint", timeout=30)
        # the service answered: a new log has no checkpoint yet
        assert r.status_code == 404 and "the log is empty" in r.text, r.text
    finally:
        err = _stderr_after_stop(web)
    assert "warning" not in err, err


@pytest.fixture
def other_grpc() -> Iterator[str]:
    """A real gRPC server that serves no service of ours (every call UNIMPLEMENTED)."""
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    yield f"127.0.0.1:{port}"
    srv.stop(None)


@pytest.fixture
def garbage() -> Iterator[str]:
    """A TCP server that answers each connection with bytes that are not HTTP/2."""
    lsock = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(b"\xff" * 64 + b"not a gRPC service\r\n")
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    yield f"127.0.0.1:{lsock.getsockname()[1]}"
    lsock.close()


@pytest.mark.parametrize("which", ["other_grpc", "garbage"])
def test_web_says_when_what_answers_is_not_a_provenance_service(
    which: str, request: pytest.FixtureRequest
) -> None:
    """A service that answered, but not as ours (another gRPC server, or bytes that are
    not gRPC): the warning says it answered and what was wrong. Before: it said the
    service "does not answer"."""
    address: str = request.getfixturevalue(which)
    web = start_web(address)
    err = _stderr_after_stop(web)
    assert "does not answer" not in err, err
    assert f"warning: something at {address} answered, but not as a provenance service" in err
    why = "no provenance Log service" if which == "other_grpc" else "does not speak gRPC"
    assert why in err, err
