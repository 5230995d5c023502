"""The /api help page's curl examples name this server by its own address (the address
the connection reached, as the server bound it), never by the request's Host header: a
client chooses that header, and the page reflected it (a hostile or just a different
Host appeared in the examples a reader copies). A real `prov web` on a real port; the
page needs no call to the service."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import closed_port, start_web

HOSTILE_HOSTS = [
    'evil.example"><script>alert(1)</script>',
    "evil.example",
    "evil.example:8443",
]


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    # the help page makes no call to the service; every Host answered: the page must not
    # name it even then (without --allowed-hosts '*' another name gets 421)
    proc = start_web(closed_port(), "--allowed-hosts", "*")
    yield proc.address
    proc.stop()


def _get_api(web: str, host: bytes | None) -> str:
    """The /api page's response (head and body) for a request carrying ``host`` as its
    Host header (None: no Host header, an HTTP/1.0 request)."""
    parts = urlsplit(web)
    assert parts.hostname and parts.port
    if host is None:
        request = b"GET /api HTTP/1.0\r\n\r\n"
    else:
        request = b"GET /api HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer.decode("utf-8", "replace")


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_the_api_page_does_not_reflect_the_host_header(web: str, host: str) -> None:
    page = _get_api(web, host.encode())
    assert page.startswith("HTTP/1.1 200"), page[:300]
    assert "evil" not in page, page
    assert "<script>" not in page
    # the examples name the address this server listens on
    assert f"curl -F file=@photo.jpg {web}/api/v1/verify" in page, page


def test_the_api_page_names_the_server_without_a_host_header(web: str) -> None:
    page = _get_api(web, None)
    assert page.startswith("HTTP/1.1 200"), page[:300]
    assert f"curl {web}/manifests/0" in page, page


def test_the_api_page_over_httpx_matches_the_listen_address(web: str) -> None:
    with httpx.Client(base_url=web, timeout=60) as http:
        r = http.get("/api", headers={"Host": "evil.example"})
    assert r.status_code == 200
    assert "evil.example" not in r.text
    assert f"'{web}/matches/byBinding?alg=pdq&amp;value=BASE64_OF_32_BYTES'" in r.text


@pytest.mark.parametrize(
    ("server", "scheme", "shown"),
    [
        (("127.0.0.1", 8080), "http", "http://127.0.0.1:8080"),
        (("::1", 8080), "http", "http://[::1]:8080"),
        (("10.0.0.5", 443), "https", "https://10.0.0.5:443"),
        (("/run/prov.sock", None), "http", ""),
        (None, "http", ""),
    ],
)
def test_own_address_is_the_bound_address(
    server: tuple[str, int | None] | None, scheme: str, shown: str
) -> None:
    from starlette.requests import Request

    from provenance.web.pages import own_address

    scope = {
        "type": "http",
        "scheme": scheme,
        "server": server,
        "path": "/api",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"evil.example")],
    }
    assert own_address(Request(scope)) == shown
