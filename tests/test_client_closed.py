"""What a `ProvenanceClient` says of a call once it is closed: a call made on a closed
client, and a call that its own client's ``close`` cut short, raise our TransportError
saying the client was closed, not grpc's bare ValueError ("Cannot invoke RPC on closed
channel!") nor "the server ... is stopping, or too busy", which blames the server. A real
`prov serve` on a loopback port.

Before: ``ValueError: Cannot invoke RPC on closed channel!`` for the first; "the server
at 127.0.0.1:P ended the call without an answer (CANCELLED): it is stopping, or too busy
to take more calls now; try again in a moment" for the second."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clients.api import ProvenanceClient, is_unreachable
from provenance.core.errors import TransportError
from tests.conftest import ServerProc

CLOSED = "this client was closed; open a new ProvenanceClient"


def test_a_call_on_a_closed_client_says_it_was_closed(server: ServerProc, tmp_path: Path) -> None:
    client = ProvenanceClient(server.address, timeout=60)
    client.log_key()  # it works while open
    client.close()
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xd9")
    calls: dict[str, Callable[[], object]] = {
        "log_key": client.log_key,
        "verify_file": lambda: client.verify_file(photo),
        "verify_stream": lambda: client.verify_stream([b"x"], "a.jpg", 60, 1),
    }
    for name, call in calls.items():
        with pytest.raises(TransportError) as e:
            call()
        assert CLOSED in str(e.value), (name, e.value)
        assert not is_unreachable(e.value), name  # not worth retrying on this client


def test_a_call_cut_short_by_its_clients_close_says_so(server: ServerProc) -> None:
    client = ProvenanceClient(server.address, timeout=60)
    sending = threading.Event()
    release = threading.Event()
    failed: list[BaseException] = []

    def blocks() -> Iterator[bytes]:
        sending.set()  # gRPC has taken the header: the call is under way
        release.wait(60)
        yield b"x"

    def verify() -> None:
        try:
            client.verify_stream(blocks(), "a.jpg", 60, 1)
        except BaseException as e:  # noqa: BLE001 - whatever it raised is looked at
            failed.append(e)

    caller = threading.Thread(target=verify)
    caller.start()
    try:
        assert sending.wait(60), "the call never started sending"
        client.close()
    finally:
        release.set()
        caller.join(60)
    assert not caller.is_alive()
    assert len(failed) == 1 and isinstance(failed[0], TransportError), failed
    text = str(failed[0])
    assert "cancelled" in text and "closed" in text, text
    assert "too busy" not in text and "stopping" not in text, text
    assert failed[0].code == "CANCELLED"
