"""Paths the web has no page for, against a real `prov web` on a real port: a 404 or
405 names the path with its controls as escapes; and the redirect of a path with a
trailing slash (``/log/`` to ``/log``): its Location is the path alone, never built from the
request's ``Host`` header or the scheme the web process saw (review att47). Before,
Starlette's own redirect answered ``Location: http://evil.example/log`` to a request
naming ``Host: evil.example`` (a redirect off the site for anyone who can set the Host a
cache or a proxy passes on), and behind a TLS proxy ``http://`` for an https:// page."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from provenance.log.checkpoint import generate_log_key
from tests.conftest import ServerProc, closed_port, start_web, witness_serve


@pytest.fixture(scope="module")
def web() -> Iterator[ServerProc]:
    # every Host answered: the redirect must not name it even then (others get 421)
    proc = start_web(closed_port(), "--allowed-hosts", "*")
    try:
        yield proc
    finally:
        proc.stop()


def _ask(web: ServerProc | str, method: str, path: str, host: str) -> http.client.HTTPResponse:
    where = urlsplit(web if isinstance(web, str) else web.address)
    conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=30)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host)
    conn.endheaders()
    answer = conn.getresponse()
    answer.read()
    conn.close()
    return answer


@pytest.mark.parametrize(
    ("method", "path", "location"),
    [
        ("GET", "/log/", "/log"),
        ("GET", "/log///?index=1", "/log?index=1"),
        ("GET", "/api/v1/checkpoint/", "/api/v1/checkpoint"),
        ("POST", "/verify/", "/verify"),
    ],
)
def test_a_trailing_slash_redirects_to_the_path_alone(
    web: ServerProc, method: str, path: str, location: str
) -> None:
    answer = _ask(web, method, path, "evil.example")
    assert answer.status == 307, answer.status
    assert answer.getheader("Location") == location
    assert answer.getheader("X-Content-Type-Options") == "nosniff"


def test_a_path_with_no_page_is_still_a_404(web: ServerProc) -> None:
    for path in ("/nothing/", "//evil.example/", "/log/entries/"):
        answer = _ask(web, "GET", path, "evil.example")
        assert answer.status == 404, (path, answer.status)
        assert answer.getheader("Location") is None


def test_the_witness_redirects_nowhere_on_a_trailing_slash(tmp_path: Path) -> None:
    """`prov witness serve` answered ``GET /HASH/checkpoint/`` with Starlette's redirect to
    ``http://evil.example/HASH/checkpoint`` for ``Host: evil.example``; a tlog-witness
    client never adds the slash, so it is a 404 now, naming no host. Each answer says
    ``X-Content-Type-Options: nosniff`` as the web's do (before: none, so a browser was
    free to sniff its text/plain answers for HTML)."""
    log = generate_log_key(tmp_path / "log.pem", "redirect.test/log")
    with witness_serve(tmp_path, log.verifier_key()) as (url, _):
        for method, path in (("GET", "/abc/checkpoint/"), ("POST", "/add-checkpoint/")):
            answer = _ask(url, method, path, "evil.example")
            assert answer.status == 404, (path, answer.status)
            assert answer.getheader("Location") is None
        for method, path in (("GET", "/abc/checkpoint"), ("GET", "/add-checkpoint")):
            answer = _ask(url, method, path, "witness.test")
            assert answer.getheader("X-Content-Type-Options") == "nosniff", path


def _ask_text(web: ServerProc, method: str, path: str) -> tuple[int, str]:
    where = urlsplit(web.address)
    conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=30)
    conn.request(method, path)
    answer = conn.getresponse()
    text = answer.read().decode()
    conn.close()
    return answer.status, text


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_path_in_a_json_404_or_405_shows_its_controls_as_escapes(
    web: ServerProc, method: str
) -> None:
    """The JSON API's 404 and 405 name the path asked for, as the page's do, with its
    bidirectional and terminal controls written as escapes (``\\u202e``, ``\\x1b``) and
    at most 200 characters of it: before, the JSON message held them as they came
    (``no API endpoint /api/x<U+202E>gpj.exe``, an ESC that a client printing the
    message sent to its terminal), where every other message of the API escapes them."""
    where = "/api/v1/entries/" if method == "DELETE" else "/api/"
    status, text = _ask_text(web, method, where + "x%E2%80%AEgpj%1B%5B31m" + "y" * 300)
    message = json.loads(text)["error"]["message"]
    assert status == (405 if method == "DELETE" else 404), text
    assert "\u202e" not in message and "\x1b" not in message, message
    assert f"{where}x\\u202egpj\\x1b[31m" in message, message
    assert "y" * 150 in message and "y" * 300 not in message, message
    _, page = _ask_text(web, method, "/x%E2%80%AEgpj%1B%5B31m")
    assert "\u202e" not in page and "\x1b" not in page and "x\\u202egpj" in page, page
