"""Errors on the page's routes come to a browser as pages: the refusals the middlewares
give before any page's code runs (421 for a Host not allowed, 400 for a malformed one,
403 for a cross-site POST) are a short HTML page to a request whose ``Accept`` prefers
HTML (a browser's navigation), with the same status and security headers and the
client's words escaped, and the API's JSON error, byte for byte, to any other client and
on every API route. The page's own errors (400, 404, 405, 413, 429) are pages too. A
real `prov web` on a loopback port (its gRPC service is never reached: none of these
requests needs it), and a real headless Chromium for the page it shows."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from provenance.web.security import prefers_html
from tests.conftest import ServerProc, start_web

pytestmark = pytest.mark.slow

#: What Chromium and Firefox send for a navigation.
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
LOOKUP = json.dumps({"queries": [{"sha256": "00" * 32}]}).encode()


@pytest.fixture(scope="module")
def web() -> Iterator[ServerProc]:
    proc = start_web("127.0.0.1:1", "--max-upload-mb", "1", "--reads-per-minute", "2")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def http(web: ServerProc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web.address, timeout=60) as c:
        yield c


def _port(web: ServerProc) -> str:
    return web.address.rsplit(":", 1)[1]


def _page(r: httpx.Response, code: int) -> str:
    """The HTML page of ``r``, asserted to be an error page of status ``code`` with the
    security headers every answer carries."""
    assert r.status_code == code, (r.status_code, r.text[:500])
    assert r.headers["content-type"] == "text/html; charset=utf-8", r.headers
    assert r.text.startswith("<!doctype html>"), r.text[:200]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    return r.text


def _json(r: httpx.Response, code: int, status: str) -> str:
    assert r.status_code == code, (r.status_code, r.text[:500])
    assert r.headers["content-type"] == "application/json", r.headers
    body = r.json()["error"]
    assert (body["code"], body["status"]) == (code, status), body
    assert r.headers["x-content-type-options"] == "nosniff"
    return str(body["message"])


def test_accept_prefers_html_as_a_browser_s_navigation_does() -> None:
    assert prefers_html(BROWSER)
    assert prefers_html("text/html")
    assert prefers_html("TEXT/HTML;level=1, application/json;q=0.5")
    assert prefers_html("text/*, application/json;q=0.9")
    for accept in (
        None,
        "",
        "*/*",  # curl, httpx, requests: a tie
        "application/json",
        "application/json, text/html",  # a tie
        "text/html;q=0.5, application/json",
        "text/html;q=0, */*",
        "text/html;q=x",  # a malformed q: the range is left out
        "text/html;q=2",
        "text, html",  # no media range at all
    ):
        assert not prefers_html(accept), accept


def test_a_host_not_allowed_gets_a_page_in_a_browser_and_json_elsewhere(
    web: ServerProc, http: httpx.Client
) -> None:
    evil = f"evil.example:{_port(web)}"
    json_answer = http.get("/log", headers={"Host": evil})
    message = _json(json_answer, 421, "MISDIRECTED_REQUEST")
    assert "'evil.example'" in message and "--allowed-hosts" in message
    for path in ("/", "/log", "/log/entries/0", "/api", "/nope"):
        page = _page(http.get(path, headers={"Host": evil, "Accept": BROWSER}), 421)
        assert "<title>421 Misdirected Request · Media Provenance</title>" in page
        assert "<h1>421 Misdirected Request</h1>" in page
        assert "--allowed-hosts evil.example" in page
        assert "the name &#x27;evil.example&#x27; (the request&#x27;s Host)" in page
        assert "HTTP 421 · MISDIRECTED_REQUEST" in page
    # the page's answer varies by Accept, and says so; the JSON on the page's path too
    assert json_answer.headers["vary"] == "Accept"
    # every other client gets the JSON, byte for byte, and so does every API route
    for accept in ("*/*", "application/json", "application/json, text/html;q=0.9"):
        r = http.get("/log", headers={"Host": evil, "Accept": accept})
        assert r.content == json_answer.content, accept
    for path in ("/api/v1/checkpoint", "/openapi.json", "/matches/byBinding", "/services/x"):
        r = http.get(path, headers={"Host": evil, "Accept": BROWSER})
        assert r.content == json_answer.content, path
        assert "vary" not in r.headers, path
    # a refusal is never stored, on the static files' paths too (their answers may be)
    for accept in (BROWSER, "*/*"):
        r = http.get("/static/app.css", headers={"Host": evil, "Accept": accept})
        assert r.status_code == 421 and r.headers["cache-control"] == "no-store", r.headers


def test_accept_sent_twice_is_read_as_one_list(web: ServerProc, http: httpx.Client) -> None:
    """Two ``Accept`` lines are one list of both (RFC 9110 section 5.3): JSON and HTML at
    the same q is a tie, so the JSON, whichever line comes last."""
    evil = ("Host", f"evil.example:{_port(web)}")
    for first, second in (("application/json", "text/html"), ("text/html", "application/json")):
        headers = httpx.Headers([evil, ("Accept", first), ("Accept", second)])
        _json(http.get("/log", headers=headers), 421, "MISDIRECTED_REQUEST")
    headers = httpx.Headers([evil, ("Accept", "application/json;q=0.5"), ("Accept", "text/html")])
    _page(http.get("/log", headers=headers), 421)


def test_a_malformed_host_is_escaped_on_the_page(web: ServerProc, http: httpx.Client) -> None:
    host = "<script>alert(1)</script>"
    page = _page(http.get("/", headers={"Host": host, "Accept": BROWSER}), 400)
    assert "<script" not in page
    assert "&#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27; is not a host name" in page
    assert "HTTP 400 · INVALID_ARGUMENT" in page
    message = _json(http.get("/", headers={"Host": host}), 400, "INVALID_ARGUMENT")
    assert message.startswith(f"the request's Host header {host!r} is not a host name")
    _json(
        http.get("/api/v1/entries", headers={"Host": host, "Accept": BROWSER}),
        400,
        "INVALID_ARGUMENT",
    )
    # a UTF-8 name (not punycode) is quoted as sent, not as its bytes read as Latin-1;
    # a bidirectional control as its escape
    for sent, quoted in (
        ("b\u00fccher.example", "'b\u00fccher.example'"),
        ("\u202eevil", "'\\u202eevil'"),
    ):
        raw = {b"Host": sent.encode(), b"Accept": BROWSER.encode()}
        assert f"{html.escape(quoted)} is not a host name" in _page(http.get("/", headers=raw), 400)
        message = _json(http.get("/", headers={b"Host": sent.encode()}), 400, "INVALID_ARGUMENT")
        assert message.startswith(f"the request's Host header {quoted} is not a host name")


def test_a_cross_site_post_gets_a_page_in_a_browser_and_json_elsewhere(
    http: httpx.Client,
) -> None:
    cross = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    form = {"file": ("a.jpg", b"\xff\xd8\xff")}
    r = http.post("/verify", files=form, headers={**cross, "Accept": BROWSER})
    page = _page(r, 403)
    assert "<h1>403 Forbidden</h1>" in page and "a page of another site" in page
    assert r.headers["vary"] == "Origin, Sec-Fetch-Site, Accept"
    r = http.post("/verify", files=form, headers=cross)
    assert "a page of another site" in _json(r, 403, "PERMISSION_DENIED")
    assert r.headers["vary"] == "Origin, Sec-Fetch-Site, Accept"
    r = http.post("/api/v1/lookup", content=LOOKUP, headers={**cross, "Accept": BROWSER})
    _json(r, 403, "PERMISSION_DENIED")
    assert r.headers["vary"] == "Origin, Sec-Fetch-Site"


def test_the_page_s_own_errors_are_pages_in_a_browser(http: httpx.Client) -> None:
    """400, 404, 405, 413 and 429 on the page's routes: pages with their status."""
    html = {"Accept": BROWSER}
    assert "HTTP 400 · INVALID_ARGUMENT" in _page(http.get("/log?before=x", headers=html), 400)
    assert "no such page: /nope" in _page(http.get("/nope", headers=html), 404)
    r = http.delete("/", headers=html)
    assert "DELETE is not allowed on /" in _page(r, 405)
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD"}
    big = {"file": ("big.jpg", b"\xff\xd8\xff" + bytes(2 * 1024 * 1024))}
    assert "HTTP 413 · RESOURCE_EXHAUSTED" in _page(
        http.post("/verify", files=big, headers=html), 413
    )
    # --reads-per-minute 2: the third read of the log in a minute
    answers = [http.get("/log?before=0", headers=html) for _ in range(3)]
    assert "HTTP 429 · RATE_LIMITED" in _page(answers[-1], 429)
    # the API's own errors stay JSON to a browser too
    _json(http.get("/api/v1/nope", headers=html), 404, "NOT_FOUND")
    _json(http.post("/openapi.json", headers=html), 405, "METHOD_NOT_ALLOWED")


def test_chromium_shows_the_421_page(web: ServerProc, tmp_path: Path) -> None:
    """A real browser, told that evil.example is 127.0.0.1 (as a rebinding attack makes
    it), navigates to the page there and shows the refusal as a page."""
    from tests.test_web_browser import CHROMEDRIVER, CHROMIUM, _driver

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("headless Chromium is not installed: apt-get install chromium chromium-driver")
    os.environ["SE_OFFLINE"] = "true"
    driver = _driver(
        tmp_path / "profile",
        javascript=True,
        extra=("--host-resolver-rules=MAP evil.example 127.0.0.1",),
    )
    try:
        driver.set_page_load_timeout(60)
        driver.get(f"http://evil.example:{_port(web)}/log")
        assert driver.title == "421 Misdirected Request · Media Provenance"
        text = driver.find_element("tag name", "main").text
        assert "does not answer for the name 'evil.example'" in text, text
        assert "HTTP 421 · MISDIRECTED_REQUEST" in text, text
    finally:
        driver.quit()


def test_the_page_s_upload_refused_by_the_host_check_shows_the_refusal_s_words(
    web: ServerProc, tmp_path: Path
) -> None:
    """The page's script asks for HTML (``Accept: text/html``), so a refusal made before
    the page's code runs comes as a page whose text the alert quotes, not as JSON. A
    reverse proxy that passes on a Host the server does not allow (its site's name,
    without ``--allowed-hosts``) has every upload refused 421."""
    import http.server
    import threading
    import urllib.error
    import urllib.request

    from selenium.webdriver.common.by import By

    from tests.test_web_browser import _driver, _verify_here

    seen: list[str] = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def _relay(self, body: bytes | None) -> None:
            names = ("Content-Type", "Accept")
            headers = {n: self.headers[n] for n in names if self.headers[n] is not None}
            if body is not None:
                seen.append(self.headers.get("Accept", ""))
                headers["Host"] = "news.example"  # the site's name, passed on
            up = urllib.request.Request(web.address + self.path, body, headers)
            try:
                answer = urllib.request.urlopen(up)
            except urllib.error.HTTPError as e:
                answer = e
            with answer:
                data = answer.read()
                self.send_response(answer.status)
                for name in ("Content-Type", "Content-Security-Policy"):
                    if answer.headers[name]:
                        self.send_header(name, answer.headers[name])
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._relay(None)

        def do_POST(self) -> None:
            self._relay(self.rfile.read(int(self.headers["Content-Length"])))

        def log_message(self, *args: object) -> None:
            pass

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    driver = _driver(tmp_path / "profile", javascript=True)
    try:
        driver.set_page_load_timeout(60)
        driver.get(f"http://127.0.0.1:{proxy.server_address[1]}/")
        shown = _verify_here(driver, photo)
        alert = driver.find_element(By.CSS_SELECTOR, "#result [role=alert]").text
    finally:
        driver.quit()
        proxy.shutdown()
        proxy.server_close()
    assert seen and set(seen) == {"text/html"}, seen  # each POST the script sent
    assert "HTTP 421" in alert and "nothing was verified" in alert, shown
    assert "does not answer for the name 'news.example'" in alert, alert
    assert '{"error"' not in alert, alert
    # the refusal's remedy, said last, is quoted too; asking again would not help
    assert "start it with --allowed-hosts news.example" in alert, alert
    assert "Try again" not in alert, alert
