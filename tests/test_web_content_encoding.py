"""A request body sent with a Content-Encoding (``gzip``, ``br``, ...), against a real
`prov web` on a real port: the page reads bodies as they are sent, so each route that
reads one answers 415 naming the coding, with ``Accept-Encoding: identity`` (RFC 9110
section 15.5.16). Before, a gzipped JSON body got 400 "the body is not valid JSON: ..."
and a gzipped file was verified as the gzip bytes. The service behind it is a closed
port: every request here is refused before the page would call it."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import closed_port, start_web

LOOKUP = json.dumps({"queries": [{"sha256": "ab" * 32}]}).encode()
BINDING = json.dumps({"alg": "pdq", "value": "AAAA"}).encode()
FORM = (
    b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
    b"not a photo\r\n--XyZ--\r\n"
)


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    proc = start_web(closed_port(), "--uploads-per-minute", "0")
    try:
        yield proc.address
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("path", "body", "ctype"),
    [
        ("/api/v1/lookup", LOOKUP, "application/json"),
        ("/matches/byBinding", BINDING, "application/json"),
        ("/matches/byContent", b"\xff\xd8\xff not a photo", "image/jpeg"),
        ("/api/v1/verify", FORM, "multipart/form-data; boundary=XyZ"),
    ],
    ids=["lookup", "byBinding", "byContent", "verify"],
)
@pytest.mark.parametrize("coding", ["gzip", "br", "x-Custom"])
def test_a_content_coded_body_is_415_naming_the_coding(
    web: str, path: str, body: bytes, ctype: str, coding: str
) -> None:
    sent = gzip.compress(body) if coding == "gzip" else body
    headers = {"content-type": ctype, "content-encoding": coding}
    r = httpx.post(f"{web}{path}", content=sent, headers=headers, timeout=60)
    assert r.status_code == 415, (path, coding, r.status_code, r.text)
    said = r.json()["error"]["message"]
    assert f"Content-Encoding: {coding}" in said and "without" in said, said
    assert r.headers.get("accept-encoding") == "identity", r.headers


def test_an_identity_coding_is_read_as_sent(web: str) -> None:
    """``Content-Encoding: identity`` is no coding: the body goes on (to the closed
    port's 503 here, past every check of the body)."""
    headers = {"content-type": "application/json", "content-encoding": "identity"}
    r = httpx.post(f"{web}/api/v1/lookup", content=LOOKUP, headers=headers, timeout=60)
    assert r.status_code == 503, (r.status_code, r.text)
