"""`--trusted-proxy`: behind a reverse proxy, the per-client shares of `prov web` count
the client that the proxy's X-Forwarded-For names (its right-most address that is not a
trusted proxy), not the proxy. Before, every client behind a proxy had the proxy's
address and all of them shared one budget. Real `prov web` processes on loopback ports,
real sockets; the uploads are empty files (400 at once, no gRPC service needed)."""

from __future__ import annotations

import http.client
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from provenance.log.checkpoint import generate_log_key
from provenance.web.proxies import forwarded_client
from tests.conftest import ServerProc, read_line, start_server, start_web
from tests.test_http_slow_clients import _witness
from tests.test_usage_errors import _flat

#: An empty file in a multipart form (boundary B): `prov web` answers 400 at once.
EMPTY_FORM = (
    b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n\r\n--B--\r\n'
)


def _upload(proc: ServerProc, forwarded_for: str | None) -> tuple[int, str]:
    """(status, body) of an empty upload to ``proc`` from 127.0.0.1, with that
    X-Forwarded-For header (None: none)."""
    host, port = proc.address.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Content-Type": "multipart/form-data; boundary=B"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    try:
        conn.request("POST", "/api/v1/verify", body=EMPTY_FORM, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read().decode()
    finally:
        conn.close()


def _web(*extra: str) -> Iterator[ServerProc]:
    proc = start_web("127.0.0.1:1", "--uploads-per-minute", "1", *extra)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def behind_proxy() -> Iterator[ServerProc]:
    """`prov web` trusting 127.0.0.1 (the tests' own address) as its proxy, one upload a
    minute per client."""
    yield from _web("--trusted-proxy", "127.0.0.1")


def test_clients_behind_a_trusted_proxy_get_separate_upload_shares(
    behind_proxy: ServerProc,
) -> None:
    """Client A spending its upload a minute does not make client B wait: before, both
    were 127.0.0.1 and B got 429."""
    assert _upload(behind_proxy, "192.0.2.1")[0] == 400
    status, body = _upload(behind_proxy, "192.0.2.1")
    assert status == 429 and "too many uploads from 192.0.2.1" in body, (status, body)
    assert _upload(behind_proxy, "192.0.2.2")[0] == 400
    assert _upload(behind_proxy, "2001:db8::1")[0] == 400  # an IPv6 client too


def test_a_spoofed_left_most_address_is_not_used(behind_proxy: ServerProc) -> None:
    """The proxy appends the address it was reached from; what is left of it is the
    client's own text. A client changing that part each time is still one client."""
    assert _upload(behind_proxy, "198.51.100.7, 192.0.2.1")[0] == 400
    status, body = _upload(behind_proxy, "198.51.100.8, 192.0.2.1")
    assert status == 429 and "too many uploads from 192.0.2.1" in body, (status, body)


def test_a_malformed_header_from_the_proxy_counts_as_the_proxy(
    behind_proxy: ServerProc,
) -> None:
    """A header naming no address counts as the proxy's own (and never breaks the
    server): the next request, with garbage of another kind, shares that budget."""
    assert _upload(behind_proxy, "unknown")[0] == 400
    status, body = _upload(behind_proxy, "192.0.2.1, not an address")
    assert status == 429 and "too many uploads from 127.0.0.1" in body, (status, body)
    assert _upload(behind_proxy, "192.0.2.9")[0] == 400  # still serving


def test_the_header_from_an_untrusted_peer_is_ignored() -> None:
    """With only 10.0.0.0/8 trusted, the tests' 127.0.0.1 is a client like any other:
    its X-Forwarded-For changes nothing (as with no --trusted-proxy at all)."""
    for extra in (("--trusted-proxy", "10.0.0.0/8"), ()):
        for proc in _web(*extra):
            assert _upload(proc, "192.0.2.1")[0] == 400
            status, body = _upload(proc, "192.0.2.2")
            assert status == 429 and "too many uploads from 127.0.0.1" in body, (extra, body)


def test_serve_http_page_takes_trusted_proxy(tmp_path: Path) -> None:
    """`prov serve --http` passes --trusted-proxy to its page: two clients behind
    127.0.0.1 have one upload a minute each."""
    srv = start_server(
        tmp_path / "prov.db",
        "--http", "127.0.0.1:0", "--uploads-per-minute", "1", "--trusted-proxy", "127.0.0.0/8",
    )  # fmt: skip
    try:
        web = ServerProc(srv.proc, read_line(srv.proc, "web on "), tmp_path, srv.log)
        assert _upload(web, "192.0.2.1")[0] == 400
        assert _upload(web, "192.0.2.2")[0] == 400
        status, body = _upload(web, "192.0.2.1")
        assert status == 429 and "too many uploads from 192.0.2.1" in body, (status, body)
    finally:
        srv.stop()


NETS = [ipaddress.ip_network(n) for n in ("127.0.0.1/32", "10.0.0.0/8", "fd00::/8")]


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        ("127.0.0.1", ["192.0.2.1"], "192.0.2.1"),
        ("192.0.2.50", ["192.0.2.1"], "192.0.2.50"),  # untrusted peer: header ignored
        ("127.0.0.1", ["198.51.100.1, 192.0.2.1, 10.1.2.3"], "192.0.2.1"),  # proxy chain
        ("127.0.0.1", ["198.51.100.1", "192.0.2.1"], "192.0.2.1"),  # two headers, one list
        ("127.0.0.1", ["10.0.0.1, 10.0.0.2"], "10.0.0.1"),  # all trusted: the left-most
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", [""], "127.0.0.1"),
        ("127.0.0.1", ["192.0.2.1, x"], "127.0.0.1"),  # malformed: the proxy
        ("127.0.0.1", ["x, 192.0.2.1"], "192.0.2.1"),  # only the left part malformed
        ("127.0.0.1", ["192.0.2.1:5000"], "192.0.2.1"),
        ("127.0.0.1", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("127.0.0.1", ["::ffff:192.0.2.1"], "192.0.2.1"),
        ("::ffff:127.0.0.1", ["192.0.2.1"], "192.0.2.1"),  # a dual-stack socket's peer
        ("127.0.0.1", ["1.2.3.4:x", "[::1"], "127.0.0.1"),
        ("unix:/run/x", ["192.0.2.1"], "unix:/run/x"),
        # a chain as long as any real one is read; past MAX_FORWARDED_HOPS trusted
        # addresses in a row the request is the proxy's (before: thousands were walked)
        ("127.0.0.1", [", ".join(["10.0.0.8"] + ["10.0.0.9"] * 31)], "10.0.0.8"),
        ("127.0.0.1", [", ".join(["192.0.2.1"] + ["10.0.0.9"] * 31)], "192.0.2.1"),
        ("127.0.0.1", [", ".join(["192.0.2.1"] + ["10.0.0.9"] * 32)], "127.0.0.1"),
        ("127.0.0.1", [", ".join(["10.0.0.9"] * 6000)], "127.0.0.1"),
    ],
)
def test_forwarded_client_reads_from_the_right(peer: str, header: list[str], client: str) -> None:
    assert forwarded_client(peer, header, NETS) == client


@pytest.mark.parametrize("command", [["web", "--server", "127.0.0.1:1"], ["serve"]])
@pytest.mark.parametrize("value", ["nope", "10.0.0.1/8", "300.1.1.1", "10.0.0.0/33", ""])
def test_a_trusted_proxy_that_is_no_address_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], command: list[str], value: str
) -> None:
    capsys.readouterr()
    rc = prov_main([*command, "--listen", "127.0.0.1:99999", "--trusted-proxy", value])
    err = _flat(capsys.readouterr().err)
    assert rc == 2 and "--trusted-proxy" in err and "--listen" not in err, err
    assert "is not an IP address or a CIDR network" in err, err


def test_the_witness_takes_trusted_proxy_and_checks_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`prov witness serve` refuses a bad value (exit 2) and serves with a good one (its
    only per-client share is the connection cap, which counts the proxy's connections)."""
    vkey = generate_log_key(tmp_path / "other-log.pem", "log.test/p").verifier_key()
    capsys.readouterr()
    rc = prov_main(
        ["witness", "serve", "--key", str(tmp_path / "w.pem"), "--log-key", vkey,
         "--state", str(tmp_path / "s"), "--trusted-proxy", "nope"]
    )  # fmt: skip
    err = _flat(capsys.readouterr().err)
    assert rc == 2 and "--trusted-proxy" in err and "'nope' is not an IP address" in err, err
    proc = _witness(tmp_path, "--trusted-proxy", "127.0.0.1", "--trusted-proxy", "fd00::/8")
    try:
        host, port = proc.address.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/add-checkpoint", body=b"x", headers={"X-Forwarded-For": "a, b"})
        assert conn.getresponse().status == 400
        conn.close()
    finally:
        proc.stop()
