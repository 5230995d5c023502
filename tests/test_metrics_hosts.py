"""DNS rebinding against the /metrics port (`--metrics-listen`): a page at a name its
attacker owns (``evil.example``), resolved to 127.0.0.1 or to a server on the visitor's
network, is same-origin with that port to the visitor's browser and could read the
process's metrics (before: any Host was answered, 200). The page (`prov web`, `prov serve
--http`) already answered only names it was told; the metrics port now takes the same
rule: IP addresses, localhost and names under .localhost, the name in --metrics-listen,
this machine's name and --metrics-allowed-hosts; another name gets 421, a Host that is no
name 400. Real ports, real processes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from provenance import metrics
from provenance.log.checkpoint import generate_log_key
from tests.conftest import cli_process, read_line, start_server


def _get(port: int, host: bytes | None, *extra: bytes, method: bytes = b"GET") -> tuple[int, bytes]:
    """``METHOD /metrics`` on 127.0.0.1:``port`` over a raw socket with the Host header's
    bytes ``host`` (None: no Host, HTTP/1.0) and the header lines ``extra``; the status
    and the body."""
    lines = [method + b" /metrics HTTP/1.1" if host is not None else method + b" /metrics HTTP/1.0"]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += [*extra, b"Connection: close", b"", b""]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"\r\n".join(lines))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head, "closed without an answer"
    return int(head.split()[1]), body


def _headers(port: int, host: bytes) -> dict[str, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}


def test_a_rebinding_page_cannot_read_the_metrics() -> None:
    port = metrics.serve_metrics("127.0.0.1:0")
    p = str(port).encode()
    # what a page at evil.example:PORT, its name now resolving to 127.0.0.1, sends
    for host in (b"evil.example:" + p, b"EVIL.example.:" + p, b"evil.example"):
        status, body = _get(port, host)
        assert status == 421, (host, status, body[:200])  # was 200, every metric
        text = body.decode()
        assert "'evil.example'" in text and "--metrics-allowed-hosts" in text, text
        assert b"process_" not in body and b"prov_" not in body
    assert _headers(port, b"evil.example")["x-content-type-options"] == "nosniff"
    status, body = _get(port, b"evil.example", method=b"HEAD")
    assert (status, body) == (421, b"")  # a HEAD gets the status, no body
    # addresses and localhost are answered: no rebinding page has one as its site
    for host in (
        b"127.0.0.1:" + p,
        b"localhost:" + p,
        b"LocalHost.",
        b"scrape.localhost:" + p,
        b"[::1]:" + p,
        b"10.0.0.5:9464",  # a scraper that reached it by another address (NAT)
        socket.gethostname().encode() + b":" + p,  # the machine's own name
    ):
        status, body = _get(port, host)
        assert status == 200 and b"prov_rpc_requests" in body, (host, status)
    # no Host at all (HTTP/1.0, a script): answered, as the page does
    assert _get(port, None)[0] == 200


def test_a_host_that_is_no_name_is_a_bad_request() -> None:
    port = metrics.serve_metrics("127.0.0.1:0")
    p = str(port).encode()
    for host, extra in (
        (b"a@localhost:" + p, ()),
        (b"local host:" + p, ()),
        ("b\u00fccher.example".encode(), ()),
        (b"a..b.example", ()),
        (b"localhost:99999", ()),
        (b"[::1]:65536", ()),
        (b"", ()),
        (b"127.0.0.1", (b"Host: evil.example",)),  # a second Host: which one is meant?
    ):
        status, body = _get(port, host, *extra)
        assert status == 400, (host, extra, status, body[:200])  # was 200
        text = body.decode()
        assert "Host" in text and "--metrics-allowed-hosts" not in text, text


def test_bound_to_a_name_it_answers_that_name() -> None:
    """``--metrics-listen localhost:0`` binds by a name: that name is answered (it is
    localhost anyway); here through `serve_metrics`' ``allowed`` names."""
    port = metrics.serve_metrics("127.0.0.1:0", allowed=("prom-target.example", "*.svc.example"))
    assert _get(port, b"prom-target.example:9464")[0] == 200
    assert _get(port, b"prov.ns.svc.example")[0] == 200
    assert _get(port, b"svc.example")[0] == 421
    assert _get(port, b"evil.example")[0] == 421


@pytest.mark.parametrize("command", ["serve", "web", "witness"])
def test_metrics_allowed_hosts_names_a_scrape_target(command: str, tmp_path: Path) -> None:
    """Prometheus sends the target's name as Host (``targets: ['prov:9464']``):
    ``--metrics-allowed-hosts prov`` lets it in, on each command that has a /metrics port;
    the start-up lines say what the port answers."""
    allow = ["--metrics-listen", "127.0.0.1:0", "--metrics-allowed-hosts", "prov,*.mon.example"]
    if command == "serve":
        srv = start_server(tmp_path / "prov.db", *allow)
        proc = srv.proc
    elif command == "web":
        proc = cli_process(["web", "--server", "127.0.0.1:9", "--listen", "127.0.0.1:0", *allow])
    else:
        vkey = generate_log_key(tmp_path / "log.pem", "log.test/one").verifier_key()
        proc = cli_process(
            ["witness", "serve", "--key", str(tmp_path / "w.pem"), "--log-key", vkey]
            + ["--state", str(tmp_path / "state"), "--listen", "127.0.0.1:0", *allow]
        )
    try:
        url = read_line(proc, "metrics on ")
        # "metrics answers Host: any IP address, localhost, ..., prov, *.mon.example; ..."
        assert read_line(proc, "metrics answers Host:") == "--metrics-allowed-hosts"
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert _get(port, b"prov:9464")[0] == 200
        assert _get(port, b"a.mon.example")[0] == 200
        assert _get(port, b"evil.example")[0] == 421
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _raw(port: int, request: bytes) -> bytes:
    """``request``'s bytes sent as they are to 127.0.0.1:``port``; all that comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_a_request_whose_host_the_check_cannot_see_is_a_bad_request() -> None:
    """Requests with no Host to check were answered 200 with every metric: HTTP/1.1 with
    none (RFC 9112 section 3.2: a server MUST answer 400), a Host with a space before its
    colon (read as another field, "Host "; section 5.1: MUST be rejected, 400, as proxies
    may read it as Host), and HTTP/0.9 (no headers at all). No scraper sends these; an
    HTTP/1.0 request without Host is still answered."""
    port = metrics.serve_metrics("127.0.0.1:0")
    for request in (
        b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost : evil.example\r\nConnection: close\r\n\r\n",
        b"GET /metrics HTTP/1.0\r\nHost\t: evil.example\r\n\r\n",
        b"GET /metrics\r\n\r\n",  # http.server reads headers after it too
    ):
        answer = _raw(port, request)
        assert b"prov_" not in answer and b"process_" not in answer, (request, answer[:200])
        assert b"Host" in answer, (request, answer[:300])
        if not request.startswith(b"GET /metrics\r\n"):  # HTTP/0.9 has no status line
            assert answer.startswith(b"HTTP/1.0 400 "), (request, answer[:300])
    assert _get(port, None)[0] == 200  # HTTP/1.0 with no Host: answered, as before
