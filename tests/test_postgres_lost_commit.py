"""A group commit whose COMMIT went through but whose answer the connection lost (it
closed between the database committing and the server reading the answer): the writer
tries the batch again, whole, and finds it logged. A claim was answered with its
receipt (a replay's); a revocation was answered "already revoked, nothing changed"
(`prov admin revoke` exit 3), though the revocation logged was this very request. Now
the writer knows its own signed event in the log and answers with that entry's receipt.

A real `prov serve` reaches a real PostgreSQL through a TCP relay in the test that cuts
the connection carrying the revocation's ``UPDATE devices SET revoked_at`` when the database's
answer to its COMMIT comes back, the answer not passed on."""

from __future__ import annotations

import socket
import threading
from contextlib import closing
from pathlib import Path

from clients.api import ProvenanceClient
from tests.conftest import ADMIN_TOKEN, enroll_key, signed_claim, start_server
from tests.pgserver import PgServer

#: The database's CommandComplete message for a COMMIT (tag, length 11, "COMMIT\0").
COMMIT_DONE = b"C\x00\x00\x00\x0bCOMMIT\x00"


class Relay:
    """A TCP relay to ``port``; once `arm`ed, it closes the first connection that sent
    ``marker`` when the answer to that connection's COMMIT comes back, unsent."""

    def __init__(self, port: int, marker: bytes) -> None:
        self.port = port
        self.marker = marker
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.armed = threading.Event()
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> int:
        return int(self.listener.getsockname()[1])

    def arm(self) -> None:
        self.armed.set()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            far = socket.create_connection(("127.0.0.1", self.port))
            marked = threading.Event()
            threading.Thread(target=self._up, args=(near, far, marked), daemon=True).start()
            threading.Thread(target=self._down, args=(far, near, marked), daemon=True).start()

    def _up(self, near: socket.socket, far: socket.socket, marked: threading.Event) -> None:
        try:
            while data := near.recv(65536):
                if self.armed.is_set() and not self.cut.is_set() and self.marker in data:
                    marked.set()
                far.sendall(data)
        except OSError:
            pass

    def _down(self, far: socket.socket, near: socket.socket, marked: threading.Event) -> None:
        try:
            while data := far.recv(65536):
                if marked.is_set() and COMMIT_DONE in data and not self.cut.is_set():
                    self.cut.set()
                    for s in (near, far):
                        s.shutdown(socket.SHUT_RDWR)
                    return
                near.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def test_a_revocation_whose_commit_answer_was_lost_is_answered_as_logged(
    pg_server: PgServer, tmp_path: Path
) -> None:
    url = pg_server.new_database()
    with closing(Relay(pg_server.port, b"UPDATE devices SET revoked_at")) as relay:
        _revoke_through(url.replace(f":{pg_server.port}/", f":{relay.address}/"), relay, tmp_path)


def _revoke_through(url: str, relay: Relay, tmp_path: Path) -> None:
    # no device quota: its counts' sync would commit through the relay too (harmless)
    srv = start_server(
        url,
        "--log-key",
        str(tmp_path / "log.pem"),
        "--quota-claims-per-minute",
        "0",
        "--quota-claim-kb-per-minute",
        "0",
    )
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            key = enroll_key(c)
            c.submit(signed_claim(key, 1))
            relay.arm()
            device, already = c.revoke(key.key_id, "stolen")
            assert relay.cut.is_set(), "the relay never cut the revocation's COMMIT answer"
            assert device.revoked_at is not None
            assert not already, "this very revocation was answered as an earlier one"
            _, again = c.revoke(key.key_id, "stolen")
            assert again  # a second request: nothing changed
            # one revocation logged: enrollment, claim, revocation
            assert c.checkpoint().split("\n")[1] == "3"
    finally:
        srv.stop()
