"""Every status a route of the JSON API answers when its service cannot be reached
(503), keeps the call waiting past ``--service-timeout`` (504), or when its client is
over its read budget (429) is one the OpenAPI document lists for that route: the web
app in this process (Starlette's TestClient), its gRPC calls to real loopback sockets,
one refusing connections and one taking them and never answering. Before, most routes
listed neither 503 nor 504 (`/api/v1/entries` GET: 200, 400, 404, 502), and the log's
read routes no 429."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from provenance.web.app import WebConfig, create_app
from provenance.web.openapi import openapi_document

H = "ab" * 32
B64 = base64.b64encode(bytes(range(32))).decode()
#: Well-formed query parameters and bodies, so that each request reaches the service.
PARAMS: dict[tuple[str, str], dict[str, str]] = {
    ("get", "/api/v1/entries"): {"sha256": H},
    ("get", "/api/v1/proofs/inclusion"): {"index": "0"},
    ("get", "/api/v1/proofs/consistency"): {"first": "1"},
    ("get", "/matches/byBinding"): {"alg": "pdq", "value": B64},
}
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/api/v1/verify"): {"files": {"file": ("a.jpg", b"\xff\xd8" * 1000)}},
    ("post", "/api/v1/lookup"): {"json": {"queries": [{"sha256": H}]}},
    ("post", "/matches/byBinding"): {"json": {"alg": "pdq", "value": B64}},
    ("post", "/matches/byContent"): {
        "content": b"\xff\xd8" * 1000,
        "headers": {"content-type": "image/jpeg"},
    },
}


@pytest.fixture(scope="module")
def refusing() -> Iterator[str]:
    """A loopback port bound (held by this test) and not listening: connections to it
    are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture(scope="module")
def silent() -> Iterator[str]:
    """A loopback listener that takes connections and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        s.listen(64)
        yield f"127.0.0.1:{s.getsockname()[1]}"


def _sweep(config: WebConfig) -> list[tuple[str, str, int]]:
    """Send each operation the OpenAPI document describes once, in its order, to an app of
    ``config``; (method, path, status) of each answer whose status that operation does
    not list."""
    doc = openapi_document()
    missing: list[tuple[str, str, int]] = []
    sent = 0
    with TestClient(create_app(config), base_url="http://localhost") as c:
        for path, ops in doc["paths"].items():
            url = path.replace("{index}", "0").replace("{manifestId}", "0")
            url = url.replace("{device_id}", H)
            for method, op in ops.items():
                kw = {**BODIES.get((method, path), {})}
                kw["params"] = PARAMS.get((method, path), {})
                r = c.request(method.upper(), url, **kw)
                sent += 1
                if str(r.status_code) not in op["responses"]:
                    missing.append((method.upper(), path, r.status_code))
    assert sent == sum(len(ops) for ops in doc["paths"].values())
    return missing


def test_a_service_that_cannot_be_reached_is_a_listed_503(refusing: str) -> None:
    config = WebConfig(server=refusing, reads_per_minute=0)
    missing = _sweep(config)
    assert not missing, "\n".join(map(str, missing))


def test_a_service_that_never_answers_is_a_listed_504(silent: str) -> None:
    config = WebConfig(server=silent, service_timeout_s=1.0, reads_per_minute=0)
    missing = _sweep(config)
    assert not missing, "\n".join(map(str, missing))


def test_reads_past_the_budget_are_a_listed_429(refusing: str) -> None:
    """One read a minute: every metered route after the first answers 429."""
    config = WebConfig(server=refusing, reads_per_minute=1)
    missing = _sweep(config)
    assert not missing, "\n".join(map(str, missing))
