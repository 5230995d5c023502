"""`prov log audit --tiles URL` given, or redirected by a hostile server to, a URL that is
no valid URL (a bracketed host that is no IPv6 address, a port that is no number or past
65,535): a usage error (exit 2) or a transport failure in words (exit 1), never a
traceback. Real HTTP servers on loopback ports, the CLI in this process."""

from __future__ import annotations

import socket
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provenance.log.checkpoint import LogSigner
from provenance.terminal import quoted
from tests.test_tiles import ORIGIN, _audit, _Quiet, _serving

_BAD_TARGETS = [
    "http://[::1/checkpoint",  # an unclosed bracket: urlsplit's "Invalid IPv6 URL"
    "http://[zz]/checkpoint",  # a bracketed host that is no IP address
    "http://127.0.0.1:99999999999999999999/checkpoint",  # getaddrinfo's OverflowError
    "http://127.0.0.1:65536/checkpoint",  # a port past 65,535
    "http://127.0.0.1:abc/checkpoint",  # a port that is no number
    # a scheme, then no authority and a path of //HOST: urllib rewrites it as
    # http://HOST/... and follows that (checked as a path of the server asked, before)
    "http:////[zz]/checkpoint",
    "http:////127.0.0.1:99999999999999999999/checkpoint",
    "http:////h:99999/checkpoint",
]


def _redirecting(target: str) -> type[BaseHTTPRequestHandler]:
    """A handler answering every GET with a 302 to ``target``."""

    class Redirect(_Quiet):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Redirect


@pytest.mark.parametrize("target", _BAD_TARGETS)
def test_a_redirect_to_no_valid_url_is_a_transport_failure_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    """Before, a traceback (exit 1): ValueError "Invalid IPv6 URL" or "'zz' does not
    appear to be an IPv4 or IPv6 address" from urljoin in the redirect handler,
    OverflowError from getaddrinfo; a port that is no number was "the server sent an
    answer that is not valid HTTP"."""
    vkey = LogSigner(Ed25519PrivateKey.generate(), ORIGIN).verifier_key()
    with _serving(_redirecting(target)) as url:
        rc = _audit("--state", str(tmp_path / "s.json"), "--tiles", url, "--log-key", vkey)
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err
    assert "redirects to" in err and "which is no valid URL" in err, err
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize(
    "given",
    [
        "http://[::1",
        "http://[zz]/tlog/",
        "http://127.0.0.1:99999999999999999999/",
        "http://127.0.0.1:65536/",
        "http://127.0.0.1:abc/",
        "http://",
        "http:///tlog/",
    ],
)
def test_a_tiles_url_that_is_no_valid_url_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], given: str
) -> None:
    """Before, a traceback for the first three, "the server sent an answer that is not
    valid HTTP" (exit 1) for a port that is no number, "no host given" (exit 1) for
    none."""
    vkey = LogSigner(Ed25519PrivateKey.generate(), ORIGIN).verifier_key()
    rc = _audit("--state", str(tmp_path / "s.json"), "--tiles", given, "--log-key", vkey)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert f"Invalid value for --tiles: {quoted(given)}: " in " ".join(err.split()), err


def test_a_failure_at_a_redirects_target_names_the_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tiles server redirecting to another host that refuses the connection: the error
    names where the redirect led, not only the URL asked (before: 'cannot fetch
    http://127.0.0.1:PORT/checkpoint: connection refused', the server named up and
    answering)."""
    vkey = LogSigner(Ed25519PrivateKey.generate(), ORIGIN).verifier_key()
    closed = socket.socket()  # bound, never listening: a target that refuses
    closed.bind(("127.0.0.1", 0))
    target = f"http://127.0.0.1:{closed.getsockname()[1]}/elsewhere/checkpoint"
    try:
        with _serving(_redirecting(target)) as url:
            rc = _audit("--state", str(tmp_path / "s.json"), "--tiles", url, "--log-key", vkey)
    finally:
        closed.close()
    err = capsys.readouterr().err
    assert rc == 1 and "connection refused" in err, err
    assert f"at {target}, where it was redirected to" in err, err


def test_a_redirect_is_checked_and_named_as_urllib_follows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``Location: http:////127.0.0.1:PORT/x`` is followed to http://127.0.0.1:PORT/x
    (urllib rebuilds the target before joining it to the URL asked): the error names
    that, not a path of the server asked (http://127.0.0.1:SERVER//127.0.0.1:PORT/x)."""
    vkey = LogSigner(Ed25519PrivateKey.generate(), ORIGIN).verifier_key()
    closed = socket.socket()  # bound, never listening: a target that refuses
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    try:
        with _serving(_redirecting(f"http:////127.0.0.1:{port}/x")) as url:
            rc = _audit("--state", str(tmp_path / "s.json"), "--tiles", url, "--log-key", vkey)
    finally:
        closed.close()
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 1 and "connection refused" in err, err
    assert f"(at http://127.0.0.1:{port}/x, where it was redirected to)" in err, err


def _moved(status: int) -> type[BaseHTTPRequestHandler]:
    """A handler redirecting every path P to /moved/P, which answers ``status``."""

    class Moved(_Quiet):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            moved = self.path.startswith("/moved/")
            body = b"down for maintenance" if moved else b""
            self.send_response(status if moved else 302)
            if not moved:
                self.send_header("Location", "/moved" + self.path)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Moved


@pytest.mark.parametrize("status", [404, 403, 503])
def test_an_http_error_at_a_redirects_target_names_the_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    """A tiles server redirecting to a place that answers 404, 403 or 503: the error
    names where the redirect led, as a failure to connect there does (before, only the
    URL asked: 'the tiled log does not serve http://127.0.0.1:PORT/checkpoint (404)',
    a URL that answers with a redirect)."""
    vkey = LogSigner(Ed25519PrivateKey.generate(), ORIGIN).verifier_key()
    with _serving(_moved(status)) as url:
        rc = _audit("--state", str(tmp_path / "s.json"), "--tiles", url, "--log-key", vkey)
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err
    assert f"at {url}moved/checkpoint, where it was redirected to" in err, err
