"""`prov witness serve` and `prov web` stop cleanly on SIGTERM (systemd's stop) and
SIGINT (Ctrl-C), as `prov serve` does: a request in flight is answered, the witness's
state lock is released, and the process says it stopped and exits 0. Before, uvicorn
re-raised the signal after its shutdown: SIGTERM killed the process (exit 143, no
message) and SIGINT ended in a KeyboardInterrupt. Real processes on loopback ports."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from provenance.log.checkpoint import generate_log_key, load_log_signer
from tests.conftest import ROOT, closed_port, read_line
from tests.drain import drain, finish

LOG = "example.org/log"


def _witness(tmp_path: Path, listen: str = "127.0.0.1:0") -> subprocess.Popen[str]:
    log = tmp_path / "log.pem"
    signer = load_log_signer(log, LOG) if log.exists() else generate_log_key(log, LOG)
    vkey = signer.verifier_key()
    return drain(subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "witness", "serve", "--key",
         str(tmp_path / "witness.pem"), "--log-key", vkey, "--state",
         str(tmp_path / "wstate"), "--listen", listen],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    ))  # fmt: skip


def _web() -> subprocess.Popen[str]:
    return drain(subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "web", "--server", closed_port()]
        + ["--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    ))  # fmt: skip


def _stop(proc: subprocess.Popen[str], sig: int | None) -> tuple[int, str, str]:
    """Send ``sig`` (None: it was sent) and wait for ``proc``: (exit status, out, err)."""
    if sig is not None:
        proc.send_signal(sig)
    try:
        out, err = finish(proc, timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = finish(proc)
    return proc.returncode, out, err


def _in_flight(address: str, path: str, headers: str = "") -> socket.socket:
    """A connection to ``address`` (HOST:PORT) with a POST to ``path`` begun (``headers``:
    more header lines, each ending in CRLF): its head read by the server, whose handler
    reads the body, and half its 10-byte body sent.

    The head asks ``Expect: 100-continue``: the server's "100 Continue", sent once its
    handler asks for the body, is the sign that the connection was accepted and its
    request is in flight. Before, 0.5 s of sleep stood for it: a connection still in the
    backlog when the signal came was reset (with no sleep, 7 of 12 runs under load)."""
    host, port = address.rsplit(":", 1)
    conn = socket.create_connection((host, int(port)), timeout=30)
    conn.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 10\r\n{headers}"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = conn.recv(4096)
        assert chunk, f"closed before its 100 Continue: {got!r}"
        got += chunk
    assert got == b"HTTP/1.1 100 Continue\r\n\r\n", got
    conn.sendall(b"01234")
    return conn


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_witness_serve_stops_cleanly(tmp_path: Path, sig: int) -> None:
    proc = _witness(tmp_path)
    read_line(proc, "witness key ")
    address = read_line(proc, "witness on ").removeprefix("http://")
    conn = _in_flight(address, "/add-checkpoint")
    proc.send_signal(sig)
    conn.sendall(b"56789")  # the request in flight is still answered
    with conn:
        head = conn.recv(4096).decode("latin-1")
    assert head.startswith("HTTP/1.1 400"), head  # not a checkpoint: refused as such
    rc, out, err = _stop(proc, None)
    assert rc == 0, (rc, out, err)
    assert out.splitlines()[-2:] == ["shutting down", "witness stopped"], out
    assert "Traceback" not in err, err
    # the state folder is free: another witness of it starts and stops
    again = _witness(tmp_path)
    read_line(again, "witness on ")
    assert _stop(again, signal.SIGTERM)[0] == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_prov_web_stops_cleanly(sig: int) -> None:
    proc = _web()
    address = read_line(proc, "web on ").removeprefix("http://")
    # a form's head, so that the page reads the body (a head that is no form's is
    # answered 400 before it, nothing in flight)
    conn = _in_flight(
        address, "/api/v1/verify", "Content-Type: multipart/form-data; boundary=B\r\n"
    )
    proc.send_signal(sig)
    conn.sendall(b"56789")
    with conn:
        head = conn.recv(4096).decode("latin-1")
    assert head.startswith("HTTP/1.1 400"), head  # its body is no form: refused as such
    rc, out, err = _stop(proc, None)
    assert rc == 0, (rc, out, err)
    assert out.splitlines()[-2:] == ["shutting down", "web stopped"], out
    assert "Traceback" not in err, err


def test_witness_serve_on_an_address_in_use_creates_nothing(tmp_path: Path) -> None:
    """The address is checked before the key and the state folder are created: before,
    the witness created both and printed "witness key ..." and then failed to bind."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = _witness(tmp_path, listen)
        out, err = finish(proc, timeout=60)
    assert proc.returncode == 1, (out, err)
    assert f"cannot listen on {listen}: address already in use" in err.lower(), err
    assert "witness key" not in out, out
    assert not (tmp_path / "witness.pem").exists()
    assert not (tmp_path / "wstate").exists()


_SIGNAL_WHILE_LOCKED = """
import os, signal, threading
import uvicorn
from provenance.web.serve import bind, serve_until_signalled


async def app(scope, receive, send):  # no request is made
    raise AssertionError(scope)


# A SIGTERM that lands while the main thread holds a threading.Event's own lock (as
# Event.wait does around its wait): the handler runs right there, between two bytecodes.
real_wait, sent = threading.Event.wait, []


def wait(self, timeout=None):
    # the main thread's wait with a timeout (Thread.start's own wait has none)
    if threading.current_thread() is threading.main_thread() and timeout and not sent:
        sent.append(True)
        with self._cond:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):
                pass
    return real_wait(self, timeout)


threading.Event.wait = wait
sock, _ = bind("127.0.0.1:0")
serve_until_signalled(uvicorn.Server(uvicorn.Config(app, log_level="error")), sock, "test", "ready")
"""


def test_a_signal_landing_while_the_main_thread_holds_a_lock_still_stops_it() -> None:
    """The signal handler of `serve_until_signalled` takes no lock: it runs in the main
    thread, also while that thread holds one. Before, it set the threading.Event the main
    thread waited on, whose lock `Event.wait` holds around its wait: a SIGTERM landing
    there blocked the process for good, no "shutting down" (a CI run of 4 December: the
    witness outlived SIGTERM by 30 s and was killed)."""
    proc = drain(subprocess.Popen(
        [sys.executable, "-c", _SIGNAL_WHILE_LOCKED],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    ))  # fmt: skip
    read_line(proc, "ready")
    proc.send_signal(signal.SIGTERM)  # the handler, not the patched wait, stops it now
    rc, out, err = _stop(proc, None)
    assert rc == 0, (rc, out, err)
    assert out.splitlines()[-2:] == ["shutting down", "test stopped"], out
