"""What `clients.api` says when a call fails UNAVAILABLE or DEADLINE_EXCEEDED: the
server's own sentence when the server answered with one (the Lookup's time budget, the
index still loading, a full disk), "cannot reach the server" only when no server
answered. Real gRPC server on a loopback port, in-process service.

Before: every UNAVAILABLE or DEADLINE_EXCEEDED read "cannot reach the server at ...",
even "the Lookup ran out of time ..." sent by a server that was plainly reachable."""

from __future__ import annotations

import os
import socket

import pytest

from clients.api import ProvenanceClient, Query, is_unreachable
from provenance.core.errors import TransportError
from provenance.server.limits import ServerLimits
from provenance.server.rpc import ServerConfig, create_server
from tests.conftest import ADMIN_TOKEN, closed_port
from tests.inproc import InProc


def _photo(ref: str) -> Query:
    return Query(ref, os.urandom(32), (), "image/jpeg", b"", os.urandom(8 * 32), 90)


def test_a_servers_deadline_answer_is_shown_as_the_server_sent_it(inproc: InProc) -> None:
    limits = ServerLimits(lookup_s=1e-6)  # the budget runs out before the first file
    server, port = create_server(
        "127.0.0.1:0", inproc.service, ServerConfig(admin_token=ADMIN_TOKEN, limits=limits)
    )
    try:
        with ProvenanceClient(f"127.0.0.1:{port}", timeout=30) as c:
            with pytest.raises(TransportError) as e:
                c.lookup([_photo(f"p{i}") for i in range(50)])
    finally:
        server.stop(None)
    text = str(e.value)
    assert text.startswith("the Lookup ran out of time after answering"), text
    assert "cannot reach" not in text
    assert text.endswith("[DEADLINE_EXCEEDED]")
    assert e.value.code == "DEADLINE_EXCEEDED"  # retry logic still sees the code


def test_no_server_listening_is_cannot_reach() -> None:
    # a port nobody listens on, held so that no server started meanwhile is given it
    address = closed_port()
    with ProvenanceClient(address, timeout=5) as c:
        with pytest.raises(TransportError) as e:
            c.checkpoint()
    assert str(e.value).startswith(f"cannot reach the server at {address} (UNAVAILABLE")
    assert is_unreachable(e.value)


def test_a_server_that_never_answers_is_cannot_reach() -> None:
    with socket.socket() as s:  # accepts the TCP connection, never speaks HTTP/2
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with ProvenanceClient(f"127.0.0.1:{port}", timeout=1) as c:
            with pytest.raises(TransportError) as e:
                c.checkpoint()
    assert str(e.value).startswith(f"cannot reach the server at 127.0.0.1:{port}")
    assert is_unreachable(e.value)
