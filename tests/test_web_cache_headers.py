"""Answers made for one request (a verdict on an uploaded file, a lookup by a file's
hashes, the page showing the report, the API's reads and errors) carry ``Cache-Control:
no-store``: without it a browser keeps the report of a POSTed file in its disk cache
(Chromium stores POST answers for history navigation) and a GET such as
``/matches/byBinding?value=HASH`` or ``/api/v1/entries?sha256=HEX`` may be stored by any
cache on the way, with the hash of the file the visitor was checking. Static files keep
their validators (ETag) and stay cacheable; the /tlog/ tiles keep their own rules
(tests/test_tiles.py). Real `prov serve --http` process, real port."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import ServerProc, read_line, start_server


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    srv: ServerProc = start_server(
        tmp_path_factory.mktemp("cache") / "prov.db", "--http", "127.0.0.1:0"
    )
    try:
        yield read_line(srv.proc, "web on ")
    finally:
        srv.stop()


def _jpeg() -> bytes:
    buf = io.BytesIO()
    noise = np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "JPEG")
    return buf.getvalue()


def _no_store(r: httpx.Response, what: str) -> None:
    assert "no-store" in r.headers.get("cache-control", ""), (what, r.status_code, r.headers)


def test_answers_about_a_file_are_not_stored(web: str, tmp_path: Path) -> None:
    jpeg = _jpeg()
    value = base64.b64encode(bytes(32)).decode()
    with httpx.Client(base_url=web, timeout=120) as http:
        r = http.post("/api/v1/verify", files={"file": ("a.jpg", jpeg)}, params={"detect": "0"})
        assert r.status_code == 200, r.text
        _no_store(r, "POST /api/v1/verify")
        r = http.post("/verify", files={"file": ("a.jpg", jpeg)}, data={"detect": "0"})
        assert r.status_code == 200 and "text/html" in r.headers["content-type"], r.text[:300]
        _no_store(r, "POST /verify (the report page)")
        r = http.post("/api/v1/lookup", json={"queries": [{"sha256": "00" * 32}]})
        assert r.status_code == 200, r.text
        _no_store(r, "POST /api/v1/lookup")
        r = http.post("/matches/byContent", content=jpeg)
        _no_store(r, "POST /matches/byContent")
        for path in (
            f"/matches/byBinding?alg=pdq&value={value}",
            "/api/v1/entries?sha256=" + "00" * 32,
            "/log/find?q=" + "00" * 32,
            "/api/v1/checkpoint",  # the log is empty: a 404
            "/no-such-page",
            "/",
        ):
            _no_store(http.get(path), f"GET {path}")
        # a static file keeps its validators and is not marked no-store
        r = http.get("/static/app.js")
        assert r.status_code == 200 and r.headers.get("etag"), r.headers
        assert "no-store" not in r.headers.get("cache-control", ""), r.headers
