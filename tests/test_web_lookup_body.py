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


def test_the_openapi_document_describes_a_querys_media_type(server: ServerProc) -> None:
    """A lookup query's `media_type` is read and relayed to the service (which matches a
    "video/..." query's frames in time order, and refuses one that is no media type, 400),
    and the OpenAPI document says so: its type, its bound (255 characters, as the service
    enforces: RFC 6838 names a type and a subtype of at most 127 each), its form
    (type/subtype, no parameters; empty when unknown), what it does. Before, it listed
    the field as a bare string, nothing more. The pattern takes what the service takes,
    read as Python's `re.search` reads it (the jsonschema package does): before, its
    closing ``$`` matched before a final newline, so "image/jpeg\\n" passed the pattern
    and the service (``fullmatch``) refused it with a 400."""
    import re

    web = start_web(server.address)
    try:
        doc = httpx.get(f"{web.address}/openapi.json", timeout=60).json()
        answers = {
            media_type: httpx.post(
                f"{web.address}/api/v1/lookup",
                json={"queries": [{"sha256": "a" * 64, "media_type": media_type}]},
                timeout=60,
            ).status_code
            for media_type in (
                *("", "image/jpeg", "image/jpeg; q=1", "x" * 200 + "/" + "y" * 60),
                *("image/jpeg\n", "\n", "image/jpeg\nvideo/mp4"),
            )
        }
    finally:
        web.stop()
    body = doc["paths"]["/api/v1/lookup"]["post"]["requestBody"]["content"]
    query = body["application/json"]["schema"]["properties"]["queries"]["items"]
    field = query["properties"]["media_type"]
    assert field["type"] == "string" and field["maxLength"] == 255, field
    assert "type/subtype" in field["description"], field
    assert "empty" in field["description"] and "video/" in field["description"], field
    described = {m: bool(re.search(field["pattern"], m)) and len(m) <= 255 for m in answers}
    assert answers == {m: 200 if ok else 400 for m, ok in described.items()}, answers
