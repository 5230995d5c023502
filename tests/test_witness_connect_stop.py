"""`prov serve --witness URL` stopped (SIGTERM) while its cosigner's TCP connect to the
witness is still in progress: the stop cuts the connect instead of waiting out
``--witness-timeout``. The witness is a real listening socket on loopback with a backlog
of 0 whose accept queue is filled and never accepted: Linux then drops the next SYN, so
a connect to it stays in SYN-SENT (seen with ``ss``). A real `prov serve` process."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provenance.log.checkpoint import DEFAULT_KEY_SUFFIX, generate_log_key
from provenance.store import open_store
from provenance.witness import cosigner_vkey
from tests.conftest import start_server
from tests.test_tiles import ORIGIN, _fill


@contextlib.contextmanager
def _never_accepting() -> Iterator[int]:
    """A loopback port whose handshakes never complete: a listener of backlog 0, its
    accept queue filled by connections it never accepts. Skips where a connect to it
    does not hang (a kernel answering a full queue with a reset)."""
    listener = socket.socket()
    held: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(8):
            probe = socket.socket()
            probe.settimeout(1.0)
            try:
                probe.connect(("127.0.0.1", port))
            except TimeoutError:
                probe.close()
                break
            except OSError as e:
                probe.close()
                pytest.skip(f"a full accept queue answers a connect with {e}, not silence")
            held.append(probe)
        else:
            pytest.skip("the accept queue never filled")
        yield port
    finally:
        listener.close()
        for sock in held:
            sock.close()


def _syn_sent(port: int) -> bool:
    """Whether a connect to the loopback ``port`` is in SYN-SENT (``ss``)."""
    out = subprocess.run(
        ["ss", "-tn", "state", "syn-sent", f"dport = :{port}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return f":{port}" in out


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_a_stop_cuts_a_connect_to_a_witness_that_never_completes_the_handshake(
    tmp_path: Path,
) -> None:
    """With ``--witness-timeout 120``, SIGTERM while the cosigner's connect to the witness
    is in SYN-SENT: the server stops within seconds (exit 0, "shutting down", no
    traceback, no warning about the witness), where it waited out the connect's timeout
    (about 60 s measured with ``--witness-timeout 60``)."""
    db = tmp_path / "a.db"
    store = open_store(db)
    # a device enrolled (the server logs its key history at start: a checkpoint of one
    # entry, which it then asks the witness to cosign)
    _fill(store, generate_log_key(tmp_path / ("a.db" + DEFAULT_KEY_SUFFIX), ORIGIN), 0, seed=1)
    store.close()
    witness = generate_log_key(tmp_path / "w.pem", "witness.test/silent")
    vkey = cosigner_vkey(witness.name, witness.public_key)
    with _never_accepting() as port:
        server = start_server(
            db, "--origin", ORIGIN, "--witness", f"http://127.0.0.1:{port}={vkey}",
            "--witness-timeout", "120",
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not _syn_sent(port) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _syn_sent(port), "the cosigner never began to connect to the witness"
            began = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            rc = server.proc.wait(timeout=100)
            took = time.monotonic() - began
        finally:
            server.stop()
        log = server.stderr()
    assert server.out is not None
    assert rc == 0, log
    assert took < 10, f"the stop took {took:.1f} s: it waited for the connect"
    assert "shutting down" in server.out.text(), server.out.text()
    assert "Traceback" not in log and "did not cosign" not in log, log
