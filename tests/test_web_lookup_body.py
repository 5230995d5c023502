"""What `POST /api/v1/lookup` says of a body it cannot use, and what it takes: a real
`prov serve` and `prov web` on real ports."""

from __future__ import annotations

import json

import httpx

from tests.conftest import ServerProc, start_web


def test_a_lookup_with_no_queries_says_the_list_is_empty(server: ServerProc) -> None:
    """``{"queries": []}`` is a 400 saying the list is empty (before: the generic 'send
    {"queries": [...]}', as if the field were missing), and the OpenAPI description says
    a lookup needs one query at least. A usable body is read whatever its Content-Type
    (text/plain too, as /matches/byBinding reads its JSON): no JSON endpoint judges it."""
    body = json.dumps({"queries": [{"sha256": "a" * 64}]}).encode()
    web = start_web(server.address)
    try:
        empty = httpx.post(f"{web.address}/api/v1/lookup", json={"queries": []}, timeout=60)
        plain = httpx.post(
            f"{web.address}/api/v1/lookup",
            content=body,
            headers={"content-type": "text/plain"},
            timeout=60,
        )
        doc = httpx.get(f"{web.address}/openapi.json", timeout=60).json()
    finally:
        web.stop()
    assert empty.status_code == 400, empty.text
    message = empty.json()["error"]["message"]
    assert message.startswith("the list `queries` is empty: send one query at least"), message
    assert plain.status_code == 200, plain.text
    assert [r["ref"] for r in plain.json()["results"]] == ["0"]
    schema = doc["paths"]["/api/v1/lookup"]["post"]["requestBody"]["content"]
    assert schema["application/json"]["schema"]["properties"]["queries"]["minItems"] == 1
