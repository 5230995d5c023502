"""The web page's POST endpoints refuse a request a browser sends for another site: a
hostile page can make a visitor's browser POST a "simple request" (a form, or fetch with
``Content-Type: text/plain``) to a `prov web` on the visitor's network, which the page
itself could not reach, making it decode uploads or run lookups (a reviewer's finding:
such a POST was answered). Refused with 403 when the browser says so
(``Sec-Fetch-Site: cross-site`` or ``same-site``) or, from a browser that does not send
that header, when the ``Origin`` is not the site's own; curl and other clients, which
send neither, and the page's own requests are answered as before. A real `prov serve
--http` on a loopback port."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import SAMPLES, ServerProc, read_line, start_server

LOOKUP = json.dumps({"queries": [{"sha256": "00" * 32}]}).encode()
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProc, str]]:
    srv = start_server(tmp_path_factory.mktemp("xsite") / "prov.db", "--http", "127.0.0.1:0")
    try:
        yield srv, read_line(srv.proc, "web on ")
    finally:
        srv.stop()


def _message(r: httpx.Response) -> str:
    body = r.json()["error"]
    assert body["code"] == 403 and body["status"] == "PERMISSION_DENIED", body
    return str(body["message"])


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site", "Origin": EVIL},
        {"Sec-Fetch-Site": "same-site", "Origin": "https://blog.example"},
        {"Origin": EVIL},  # a browser without Fetch Metadata
        {"Origin": "null"},  # a sandboxed frame, a data: page
    ],
)
def test_a_cross_site_post_is_refused_before_its_body_is_read(
    web: tuple[ServerProc, str], headers: dict[str, str]
) -> None:
    _, url = web
    with httpx.Client(base_url=url, timeout=60) as http:
        sent = {**headers, "Content-Type": "text/plain"}
        for path, body in (
            ("/api/v1/lookup", LOOKUP),
            ("/api/v1/verify", (SAMPLES / "rocket.jpg").read_bytes()),
            ("/matches/byContent", (SAMPLES / "rocket.jpg").read_bytes()),
            ("/matches/byBinding", b'{"alg": "pdq", "value": "AA=="}'),
            ("/verify", b"file=x"),
        ):
            r = http.post(path, content=body, headers=sent)
            assert r.status_code == 403, (path, r.status_code, r.text)
            assert "another site" in _message(r), r.text
            assert r.headers["x-content-type-options"] == "nosniff"  # the usual headers
        # reading is not refused: a link from another site still opens the page
        assert http.get("/", headers=headers).status_code == 200


def test_curl_and_the_site_s_own_posts_are_answered(web: tuple[ServerProc, str]) -> None:
    _, url = web
    own = url.rstrip("/")
    with httpx.Client(base_url=url, timeout=60) as http:
        for headers in (
            {},  # curl, scripts: neither header
            {"Sec-Fetch-Site": "same-origin", "Origin": own},
            {"Sec-Fetch-Site": "none"},  # typed by the user (no page sent it)
            {"Origin": own},  # a browser without Fetch Metadata, this site's page
            # a browser's word wins over an Origin a proxy's Host rewrite makes look foreign
            {"Sec-Fetch-Site": "same-origin", "Origin": "https://prov.example"},
        ):
            r = http.post(
                "/api/v1/lookup",
                content=LOOKUP,
                headers={**headers, "Content-Type": "application/json"},
            )
            assert r.status_code == 200, (headers, r.text)
            assert len(r.json()["results"]) == 1


def test_the_page_behind_a_plain_http_proxy_that_sets_x_forwarded_host_is_answered(
    web: tuple[ServerProc, str],
) -> None:
    """Chromium sends no Sec-Fetch-Site to an http:// site that is not loopback (measured
    with Chromium 156 headless: a page at http://192.0.2.2:PORT POSTed with Origin and
    no Fetch Metadata; at http://127.0.0.1 it sent ``same-origin``). Behind a plain-HTTP
    proxy that rewrites Host to its upstream (nginx's default) but says the site's name in
    X-Forwarded-Host (Caddy, Traefik; nginx ``proxy_set_header X-Forwarded-Host $host``),
    the page's own POST carries an Origin of that name: it was refused 403. A hostile
    page cannot add X-Forwarded-Host itself (a header outside the CORS safelist makes
    the browser ask first, and a form sends none), so its POSTs stay refused."""
    _, url = web
    with httpx.Client(base_url=url, timeout=60) as http:
        page = {"Origin": "http://newsroom.example:8080", "Content-Type": "application/json"}
        for forwarded in ("newsroom.example:8080", "NEWSROOM.example:8080, 10.0.0.5:8000"):
            r = http.post(
                "/api/v1/lookup", content=LOOKUP, headers={**page, "X-Forwarded-Host": forwarded}
            )
            assert r.status_code == 200, (forwarded, r.text)
        hostile = {"Origin": EVIL, "X-Forwarded-Host": "newsroom.example:8080"}
        r = http.post("/api/v1/lookup", content=LOOKUP, headers=hostile)
        assert r.status_code == 403, r.text
