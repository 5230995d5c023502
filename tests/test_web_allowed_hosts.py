"""DNS rebinding: a page at a name its attacker owns (``evil.example``) has the name
resolve to 127.0.0.1 or to a `prov web` on the visitor's network. To the browser the page
and `prov web` are then one origin: its POSTs pass the cross-site guard
(``Sec-Fetch-Site: same-origin``) and its GETs read the API (a reviewer's finding: both
were answered). The request's ``Host`` is the attacker's name, so `prov web` answers
only the names it is told (``--allowed-hosts``) besides IP addresses and localhost, which
no such page can have as its site; any other name gets 421 naming the flag. Real `prov
web` and `prov serve --http` processes on real ports."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, ServerProc, read_line, start_server, start_web

LOOKUP = json.dumps({"queries": [{"sha256": "00" * 32}]}).encode()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    srv = start_server(tmp_path_factory.mktemp("hosts") / "prov.db")
    try:
        yield srv
    finally:
        srv.stop()


def _host(http: httpx.Client, host: str, path: str = "/") -> httpx.Response:
    return http.get(path, headers={"Host": host})


def _refused(r: httpx.Response, name: str) -> str:
    assert r.status_code == 421, (name, r.status_code, r.text)
    body = r.json()["error"]
    assert body["code"] == 421, body
    message = str(body["message"])
    assert repr(name) in message and "--allowed-hosts" in message, message
    assert r.headers["x-content-type-options"] == "nosniff"  # the usual headers too
    return message


def test_a_rebinding_page_s_requests_are_refused(service: ServerProc) -> None:
    """What the browser sends for a page at ``evil.example:PORT`` whose name now resolves
    to 127.0.0.1: GETs of the page and the API, and a same-origin POST (which the
    cross-site guard answers, Sec-Fetch-Site being same-origin) are all 421."""
    web = start_web(service.address)
    try:
        port = web.address.rsplit(":", 1)[1]
        evil = f"evil.example:{port}"
        with httpx.Client(base_url=web.address, timeout=60) as http:
            for path in ("/api/v1/checkpoint", "/", "/log", "/static/app.js"):
                _refused(_host(http, evil, path), "evil.example")
            r = http.post(
                "/api/v1/lookup",
                content=LOOKUP,
                headers={
                    "Host": evil,
                    "Origin": f"http://{evil}",
                    "Sec-Fetch-Site": "same-origin",
                    "Content-Type": "text/plain",
                },
            )
            _refused(r, "evil.example")
            # the case and a trailing dot of a name do not matter
            _refused(_host(http, f"EVIL.example.:{port}"), "evil.example")
            # addresses and localhost are answered: no rebinding page has them as its site
            for host in (
                f"127.0.0.1:{port}",
                f"localhost:{port}",
                f"LocalHost.:{port}",
                f"app.localhost:{port}",
                f"[::1]:{port}",
                "10.0.0.5:8080",  # a reverse proxy that reached it by another address
                "127.0.0.1",
            ):
                assert _host(http, host).status_code == 200, host
            r = http.post(
                "/api/v1/lookup", content=LOOKUP, headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 200, r.text
    finally:
        web.stop()


def test_allowed_hosts_adds_names_and_a_star_allows_every_one(service: ServerProc) -> None:
    web = start_web(service.address, "--allowed-hosts", "newsroom.example, *.corp.example")
    try:
        # the start-up message says which names are answered
        assert read_line(web.proc, "web answers", timeout=30) == "--allowed-hosts"
        with httpx.Client(base_url=web.address, timeout=60) as http:
            for host in ("newsroom.example", "NewsRoom.example:8080", "prov.corp.example"):
                assert _host(http, host).status_code == 200, host
            for host in ("corp.example", "newsroom.example.evil.example", "evil.example"):
                _refused(_host(http, host), host)
    finally:
        web.stop()
    web = start_web(service.address, "--allowed-hosts", "*")
    try:
        with httpx.Client(base_url=web.address, timeout=60) as http:
            assert _host(http, "evil.example").status_code == 200
    finally:
        web.stop()


@pytest.mark.parametrize(
    # "*." was read as "*" (every name: the check off), "a..b" as a name
    "value",
    [
        *("", "news room.example", "a,,b", "https://x.example/", "*.", "*.:8080", "a..b.example"),
        "b\u00fccher.example",  # browsers send its punycode, which the message asks for
    ],
)
@pytest.mark.parametrize("flag", ["--allowed-hosts", "--metrics-allowed-hosts"])
def test_a_malformed_allowed_hosts_is_a_usage_error(value: str, flag: str) -> None:
    """The names of the page's --allowed-hosts, and of the /metrics port's
    --metrics-allowed-hosts (tests/test_metrics_hosts.py), are checked at start."""
    done = subprocess.run(
        [sys.executable, "-m", "clients.cli", "web", flag, value],
        capture_output=True,  # pipes: run() reads both to the end
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2, done
    assert flag in done.stderr and "is not a host name" in done.stderr, done.stderr
    if not value.isascii():
        assert "punycode" in done.stderr, done.stderr


def _raw(address: str, host: bytes, target: bytes = b"/api/v1/checkpoint") -> tuple[int, str]:
    """GET ``target`` with the Host header's bytes ``host`` over a raw socket (an HTTP
    client would refuse to send most of them); the status and the body."""
    hostname, port = address.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((hostname, int(port)), timeout=60) as s:
        s.sendall(
            b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def test_a_host_that_is_no_name_is_a_bad_request(service: ServerProc) -> None:
    """A Host header that is no host name, address and port (RFC 9110 7.2: userinfo, a
    space, UTF-8 not in punycode, an empty label, a port past 65535, nothing) is 400 (RFC
    9112 3.2), saying so; before, it was 421 advising ``--allowed-hosts`` with the header
    as given (a value the flag refuses), or, with a port past 65535, answered."""
    web = start_web(service.address)
    try:
        port = web.address.rsplit(":", 1)[1].encode()
        for host in (
            b"a@localhost:" + port,
            b"local host:" + port,
            "b\u00fccher.example".encode() + b":" + port,
            b"a..b.example",
            b"localhost:99999",
            b"[::1]:65536",
            b"",
        ):
            status, body = _raw(web.address, host)
            assert status == 400, (host, status, body)
            message = json.loads(body)["error"]["message"]
            assert "is not a host name" in message and "--allowed-hosts" not in message, message
        # a name, an address and localhost with any port are still told apart as before
        assert _raw(web.address, b"localhost:65535")[0] == 404  # the log is empty
        assert _raw(web.address, b"[::1]")[0] == 404
        assert _raw(web.address, b"evil.example:" + port)[0] == 421
    finally:
        web.stop()


def test_an_absolute_form_target_is_answered_for_the_host_it_names(service: ServerProc) -> None:
    """A request line naming its URL whole (``GET http://HOST:PORT/path``, RFC 9112
    3.2.2's absolute-form, which a server must accept) is answered as its path, the
    authority in it taken for the Host (the header ignored), so the Host rules apply to
    the name it gives. Before: 404 "no such page: /http://127.0.0.1:PORT/openapi.json"."""
    web = start_web(service.address)
    try:
        port = web.address.rsplit(":", 1)[1].encode()
        here = b"127.0.0.1:" + port
        status, body = _raw(web.address, here, b"http://" + here + b"/openapi.json")
        assert status == 200 and json.loads(body)["openapi"], (status, body[:300])
        status, body = _raw(web.address, here, b"HTTP://localhost:" + port + b"/openapi.json?x=1")
        assert status == 400 and "unknown query parameter 'x'" in body, (status, body)
        status, body = _raw(web.address, here, b"http://" + here)  # no path: /
        assert status == 200 and "<html" in body, (status, body[:300])
        status, body = _raw(web.address, here, b"http://evil.example:" + port + b"/openapi.json")
        assert status == 421 and "'evil.example'" in body, (status, body)
        status, body = _raw(web.address, here, b"http://a@" + here + b"/openapi.json")
        assert status == 400 and "is not a host name" in body, (status, body)
    finally:
        web.stop()


def test_bound_to_every_address_it_answers_the_machine_s_name(service: ServerProc) -> None:
    """``--listen 0.0.0.0:PORT``: the page is reached by the machine's addresses, which
    are answered, and by its name (`socket.gethostname`), which is too; the start-up
    message says that other names need --allowed-hosts."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "web", "--server", service.address]
        + ["--listen", "0.0.0.0:0"],
        stdout=subprocess.PIPE,  # pipes: read_line reads it to the lines wanted
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        port = read_line(proc, "web on ").rsplit(":", 1)[1]
        # "web answers Host: ... other names get 421 until added with --allowed-hosts"
        assert read_line(proc, "web answers", timeout=30) == "--allowed-hosts"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            name = socket.gethostname()
            assert _host(http, f"{name}:{port}").status_code == 200, name
            _refused(_host(http, f"evil.example:{port}"), "evil.example")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_prov_serve_http_takes_allowed_hosts(tmp_path: Path) -> None:
    srv = start_server(
        tmp_path / "prov.db", "--http", "127.0.0.1:0", "--allowed-hosts", "newsroom.example"
    )
    try:
        url = read_line(srv.proc, "web on ")
        with httpx.Client(base_url=url, timeout=60) as http:
            assert _host(http, "newsroom.example").status_code == 200
            assert _host(http, "localhost").status_code == 200
            message = _refused(_host(http, "evil.example"), "evil.example")
            assert "prov serve --http" in message, message  # the flag of this command too
    finally:
        srv.stop()
