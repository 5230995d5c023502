"""What the log server's cosigner says about a witness that fails, in a person's words:
what failed, why, what to check; never a Python exception class name. Before, an
exchange that failed after the connection was made said ``RemoteDisconnected: Remote end
closed connection without response``, ``BadStatusLine: ...`` or ``SSLError: [SSL:
WRONG_VERSION_NUMBER] ...``, and a connection that failed without a reason from the
system said ``... is not reachable: TimeoutError``.

The cosigner (`provenance.witness.client.Cosigner`) runs in this process against real
sockets on loopback ports that misbehave as a wrong URL or a broken witness does."""

from __future__ import annotations

import http.client
import http.server
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provenance.core.errors import WitnessError
from provenance.core.merkle import MemoryTree
from provenance.log.checkpoint import Checkpoint, generate_log_key
from provenance.witness import Witness
from provenance.witness.client import Cosigner, WitnessSpec, fetch_cosigned_checkpoint

ORIGIN = "media-provenance.local/log"

#: Python's exception class names, as they leaked: a word in CamelCase ending in Error,
#: Exception or Disconnected, or one of http.client's own.
CLASS_NAME = re.compile(r"\b[A-Z][a-z]+[A-Z]\w*(Error|Exception|Disconnected|Line|Read)\b")


def _tcp_server(answer: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback TCP server that hands each connection to ``answer`` then closes it;
    yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)  # so that the loop sees ``stop``
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                answer(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(10)
    listener.close()


def _close_at_once(conn: socket.socket) -> None:
    conn.recv(65536)  # the request: then no answer at all


def _not_http(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")


def _http2(conn: socket.socket) -> None:
    conn.recv(65536)  # answered as a gRPC server (`prov serve --listen`) does: SETTINGS
    conn.sendall(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64")
    conn.shutdown(socket.SHUT_WR)  # then the rest of the request read: no reset
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass  # the client gone or slow: the frame was sent


def _plain_http(conn: socket.socket) -> None:
    conn.recv(65536)  # a TLS hello read as a request: answered in plain HTTP
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def _cut_short(conn: socket.socket) -> None:
    """A 200 of fewer bytes than its Content-Length, then the connection closed (the
    whole request read first, so that the close resets nothing)."""
    got = b""
    while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < _length(got):
        more = conn.recv(65536)
        if not more:
            return
        got += more
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\nwitness.test/w1 AAAA")


def _length(request: bytes) -> int:
    """The Content-Length of ``request`` (its head), 0 without one."""
    found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", request.partition(b"\r\n\r\n")[0])
    return int(found.group(1)) if found else 0


def _problem(tmp_path: Path, url: str) -> str:
    """The problem the cosigner reports for one witness at ``url`` once it has asked it
    to cosign a checkpoint."""
    signer = generate_log_key(tmp_path / "log.pem", ORIGIN)
    wsigner = generate_log_key(tmp_path / "w.pem", "witness.test/w1")
    vkey = Witness(wsigner, [signer.verifier_key()], tmp_path / "w").vkey()
    tree = MemoryTree()
    tree.append(b"leaf")
    note = signer.sign(Checkpoint(ORIGIN, 1, tree.root(), None))
    cosigner = Cosigner(
        [WitnessSpec(url, vkey)], 1, lambda old, new: [], lambda: (1, note), timeout_s=5
    )
    try:
        cosigner.submit(1, note)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            problem = cosigner.statuses()[0].problem
            if problem:
                return problem
            time.sleep(0.02)
    finally:
        cosigner.close()
    raise AssertionError("the cosigner reported no problem in 30 s")


@pytest.mark.parametrize(
    ("answer", "scheme", "said"),
    [
        (_close_at_once, "http", "closed the connection without answering"),
        (_not_http, "http", "answered something that is not HTTP ('SSH-2.0-OpenSSH_9.6"),
        (_plain_http, "https", "the TLS handshake failed"),
        # revwiturl61: before, http.client's read(n) took the bytes short of the
        # Content-Length as the whole answer: "its answer is not a valid cosignature"
        (_cut_short, "http", "ended its answer before its end; it is asked again later"),
        (_http2, "http", "answered as an HTTP/2 server (gRPC: is it a `prov serve` address?)"),
    ],
    ids=["closes", "not-http", "tls-to-plain-http", "cut-short", "http2-grpc"],
)
def test_a_failed_exchange_is_said_in_words(
    tmp_path: Path, answer: Callable[[socket.socket], None], scheme: str, said: str
) -> None:
    for port in _tcp_server(answer):
        problem = _problem(tmp_path, f"{scheme}://127.0.0.1:{port}")
        assert f"witness at 127.0.0.1:{port}" in problem, problem
        assert said in problem, problem
        assert not CLASS_NAME.search(problem), problem


def test_a_connection_failing_without_a_reason_is_said_in_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system's error without a message (here the standard library's connect raises
    a bare TimeoutError, as a socket layer may): before, the class name was the reason."""

    def connect(self: http.client.HTTPConnection) -> None:
        raise TimeoutError

    monkeypatch.setattr(http.client.HTTPConnection, "connect", connect)
    problem = _problem(tmp_path, "http://127.0.0.1:9")
    assert "witness at 127.0.0.1:9 is not reachable: no answer within 5 s" in problem, problem
    assert not CLASS_NAME.search(problem), problem


def _size_hint_409(conn: socket.socket) -> None:
    conn.recv(65536)  # the request: answered "I hold 1 entry" (c2sp.org/tlog-witness)
    conn.sendall(
        b"HTTP/1.1 409 Conflict\r\nContent-Type: text/x.tlog.size\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n1\n"
    )


def test_an_unforeseen_failure_of_this_server_is_said_in_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The witness holds 1 entry (its 409 answer), so the cosigner builds a consistency
    proof from 1 to 2, and that fails in a way no code foresees (the server's proof
    function raising KeyError, as a bug in it would: no known input reaches this path,
    the last guard of the rounds). Before, the problem was the exception's repr,
    ``failed on checkpoint 2: KeyError(5)``; now it says what failed, in words, and the
    traceback goes to the server's log."""
    signer = generate_log_key(tmp_path / "log.pem", ORIGIN)
    wsigner = generate_log_key(tmp_path / "w.pem", "witness.test/w1")
    vkey = Witness(wsigner, [signer.verifier_key()], tmp_path / "w").vkey()
    tree = MemoryTree()
    tree.append(b"leaf 0")
    tree.append(b"leaf 1")
    note = signer.sign(Checkpoint(ORIGIN, 2, tree.root(), None))

    def consistency(old: int, new: int) -> list[bytes]:
        raise KeyError(5)

    for port in _tcp_server(_size_hint_409):
        spec = WitnessSpec(f"http://127.0.0.1:{port}", vkey)
        cosigner = Cosigner([spec], 1, consistency, lambda: (2, note), timeout_s=5)
        try:
            cosigner.submit(2, note)
            deadline = time.monotonic() + 30
            while not (problem := cosigner.statuses()[0].problem):
                assert time.monotonic() < deadline, "the cosigner reported no problem in 30 s"
                time.sleep(0.02)
        finally:
            cosigner.close()
    assert problem.startswith("failed on checkpoint 2: this server failed"), problem
    assert "internal error" in problem and "log" in problem, problem
    assert "KeyError" not in problem and "(5)" not in problem, problem
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records), caplog.text


def test_an_ipv6_witness_is_named_with_brackets(tmp_path: Path) -> None:
    """A witness at an IPv6 address is named ``[::1]:PORT`` in the cosigner's words, as
    in its URL: before, ``::1:PORT`` (the port read as one more group of the address)."""
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    problem = _problem(tmp_path, f"http://[::1]:{port}")
    assert f"witness at [::1]:{port} is not reachable" in problem, problem


def test_an_exchange_failing_without_a_reason_is_said_in_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exchange that fails after the connection with the system's error carrying no
    text and no errno (the standard library's getresponse raises a bare OSError here):
    the message says so, never ending in "failed: " with nothing after it."""

    def getresponse(self: http.client.HTTPConnection) -> http.client.HTTPResponse:
        raise OSError

    monkeypatch.setattr(http.client.HTTPConnection, "getresponse", getresponse)
    for port in _tcp_server(_close_at_once):
        problem = _problem(tmp_path, f"http://127.0.0.1:{port}")
        assert f"exchange with the witness at 127.0.0.1:{port} failed: " in problem, problem
        assert not problem.rstrip().endswith("failed:"), problem
        assert "no reason" in problem, problem
        assert not CLASS_NAME.search(problem), problem


def test_a_web_pages_404_at_a_witness_url_is_said_to_be_no_witness() -> None:
    """`prov verify --witness-url` of a web server's address (`prov web`'s, say) that
    answers 404 with an HTML page: said to be no witness, not "it has cosigned no
    checkpoint of the log (HTTP 404: <!doctype html>\\x0a<html ...)" (h-newuser61: before,
    300 characters of the page were quoted as the witness's word)."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)  # the standard library's HTML error page

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(WitnessError) as caught:
            fetch_cosigned_checkpoint(f"http://127.0.0.1:{server.server_address[1]}", ORIGIN)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    said = str(caught.value)
    assert "with a web page (HTML), as no witness does" in said, said
    assert "<" not in said and "cosigned no checkpoint" not in said, said


def _redirect(conn: socket.socket) -> None:
    conn.recv(65536)  # the request: sent elsewhere, as a web server moved to https does
    conn.sendall(
        b"HTTP/1.1 308 Permanent Redirect\r\nLocation: https://elsewhere.test/add-checkpoint"
        b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )


def test_a_witness_redirecting_the_request_is_said_to_redirect_not_followed(
    tmp_path: Path,
) -> None:
    """A redirect is not followed (the policy names the witness's own URL), and the
    problem says so, and where to: before, only ``HTTP 308:`` and the empty body, as
    `prov verify --witness-url` already says it for the checkpoint it asks for."""
    for port in _tcp_server(_redirect):
        problem = _problem(tmp_path, f"http://127.0.0.1:{port}")
    assert "HTTP 308, a redirect (to https://elsewhere.test/add-checkpoint), not followed" in (
        problem
    ), problem
