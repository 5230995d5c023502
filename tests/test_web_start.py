"""`prov web` against a gRPC service that does not answer: it starts (the service may come
up later) but says so on stderr at once, instead of serving 503s without a word."""

from __future__ import annotations

import httpx

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
