"""The submission path of the asyncio server (issue 15): no store read on the event loop,
revocations decided by the writer from the registry and the log, interceptors run once
per method, the remembered checkpoint written a few times a second, not per commit.
Real servers, a real PostgreSQL, real keys."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import uvloop

from clients.api import ProvenanceClient
from provenance.core.claims import Receipt
from provenance.core.errors import RevokedKeyError, TransportError, UnknownDeviceError
from provenance.server.rollback import CheckpointMemo, memo_path
from provenance.server.rpc import HandlersWrapped, ServerConfig, create_server
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from tests.conftest import ADMIN_TOKEN, ServerProc, enroll_key, signed_claim, start_server
from tests.inproc import InProc


@pytest.mark.slow
def test_a_device_read_stalled_in_the_database_stalls_no_other_call(pg_url: str) -> None:
    """PostgreSQL holds the registry locked: the submission that must read its device's
    key waits (in a pool thread), while the event loop goes on answering other calls; the
    submission completes once the lock goes."""
    import psycopg

    srv = start_server(pg_url)
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            key = enroll_key(c)
    finally:
        srv.stop()
    srv = start_server(pg_url)  # a fresh server: it has not read this device's key yet
    outcome: list[tuple[Receipt, bool]] = []
    try:
        with psycopg.connect(pg_url) as lock, ProvenanceClient(srv.address) as c:
            lock.execute("LOCK TABLE devices IN ACCESS EXCLUSIVE MODE")
            waiting = threading.Thread(
                target=lambda: outcome.append(c.submit(signed_claim(key, seq=1)))
            )
            waiting.start()
            time.sleep(1.0)  # the submission is now waiting for the lock
            assert not outcome
            with grpc.insecure_channel(srv.address) as ch:
                with pytest.raises(grpc.RpcError) as e:  # answered on the loop meanwhile
                    rpc.CapturesStub(ch).SubmitCapture(pb.SubmitCaptureRequest(), timeout=20)
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "no signed claim" in str(e.value.details())
            assert not outcome
            lock.rollback()  # releases the lock
            waiting.join(30)
        assert len(outcome) == 1
        receipt, duplicate = outcome[0]
        assert not duplicate and receipt.leaf_index == 1  # leaf 0: the enrollment
    finally:
        srv.stop()


def test_a_revocation_only_the_log_holds_refuses_submissions_on_the_wire(
    tmp_path: Path,
) -> None:
    """The registry row is edited to lift a revocation behind the log's back, on a server
    that already checked the device's signatures (its key is kept): the writer reads the
    log's revocation in its transaction and refuses the claim (PERMISSION_DENIED)."""
    import sqlite3

    db = tmp_path / "prov.db"
    srv: ServerProc = start_server(db)
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            key = enroll_key(c)
            c.submit(signed_claim(key, seq=1))
            c.revoke(key.key_id, "key extracted")
            with sqlite3.connect(db) as edit:
                edit.execute(
                    "UPDATE devices SET revoked_at=NULL, revocation_reason='' WHERE device_id=?",
                    (key.key_id,),
                )
            assert c.get_device(key.key_id).revoked_at is None  # the edit is in the table
            with pytest.raises(TransportError, match="key extracted") as e:
                c.submit(signed_claim(key, seq=2))
            assert e.value.code == "PERMISSION_DENIED"
    finally:
        srv.stop()


def test_the_writer_refuses_a_revoked_device_the_signature_check_let_through(
    inproc: InProc,
) -> None:
    """The key kept for signature checks never answers for revocation: a device revoked
    after its key was kept is refused, an unknown one too."""
    dev = inproc.enroll()
    inproc.submit(dev.next_claim())  # the key is kept now
    inproc.service.revoke(dev.device_id, "lost", None)
    with pytest.raises(RevokedKeyError, match="lost"):
        inproc.submit(dev.next_claim())
    from provenance.core.keys import DeviceKey
    from tests.inproc import Device

    with pytest.raises(UnknownDeviceError):
        inproc.submit(Device(DeviceKey.generate()).next_claim())


def test_submissions_are_answered_from_a_uvloop_event_loop(inproc: InProc) -> None:
    """The grpc.aio server runs on uvloop's loop (grpc.aio's per-call work costs less on
    it: docs/performance.md), and real submissions over the wire, concurrent ones
    sharing group commits, are answered from it once durable."""
    server, port = create_server("127.0.0.1:0", inproc.service, ServerConfig())
    try:

        async def loop_type() -> type:
            return type(asyncio.get_running_loop())

        assert asyncio.run_coroutine_threadsafe(loop_type(), server._loop).result(10) is (
            uvloop.Loop
        )
        devices = [inproc.enroll() for _ in range(16)]
        with ProvenanceClient(f"127.0.0.1:{port}") as c:
            claims = [d.next_claim() for d in devices]  # one each: no chain order to keep
            threads = [threading.Thread(target=lambda s=s: got.append(c.submit(s))) for s in claims]
            got: list[tuple[Any, bool]] = []
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        assert len(got) == len(claims)
        assert not any(dup for _, dup in got)
        # after the 16 enrollments' leaves; each answer came once its leaf was durable
        assert sorted(r.leaf_index for r, _ in got) == list(range(16, 32))
        assert inproc.service.store.tree_size() == 32
    finally:
        server.stop()


def test_interceptors_wrap_each_method_once_at_registration() -> None:
    """`HandlersWrapped` wraps each registered method's handler once, the first
    interceptor outermost, and registers it by name and in a generic handler alike."""
    import asyncio

    made: list[str] = []

    class Tagging(grpc.aio.ServerInterceptor):
        def __init__(self, tag: str) -> None:
            self.tag = tag

        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            handler = await continuation(details)
            made.append(f"{self.tag}{details.method}")
            inner = handler.unary_unary
            return handler._replace(unary_unary=lambda r, c: (self.tag, inner(r, c)))

    class Recorder:  # the grpc.aio server's two registration calls, recorded
        def __init__(self) -> None:
            self.registered: dict[str, dict[str, Any]] = {}
            self.generic: list[Any] = []

        def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
            self.registered[service] = handlers

        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            self.generic.extend(handlers)

    base: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(lambda r, c: r)
    server = Recorder()
    wrapping = HandlersWrapped(server)  # type: ignore[arg-type]  # a recorder, not a grpc.aio.Server
    handlers = {"One": base, "Two": base}
    wrapping.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("a.S", handlers),))
    wrapping.add_registered_method_handlers("a.S", handlers)
    assert not server.registered and not server.generic  # nothing before `register`
    asyncio.run(wrapping.register([Tagging("outer"), Tagging("inner")]))
    assert sorted(made) == ["inner/a.S/One", "inner/a.S/Two", "outer/a.S/One", "outer/a.S/Two"]
    one = server.registered["a.S"]["One"]
    assert one.unary_unary(b"r", None) == ("outer", ("inner", b"r"))
    (generic,) = server.generic
    assert generic.service(SimpleNamespace(method="/a.S/One")) is one
    assert generic.service(SimpleNamespace(method="/a.S/Three")) is None


def test_a_checkpoint_after_a_quiet_spell_is_written_without_waiting_for_more(
    tmp_path: Path,
) -> None:
    """The memo thread is woken only while it waits for a checkpoint: one handed over
    after a quiet spell is written at once, not left pending until the next commit."""
    path = memo_path(tmp_path / "log.key")
    memo = CheckpointMemo(path, interval_s=0.05)

    def written(text: str) -> bool:
        deadline = time.monotonic() + 30  # a hang guard (5 s was short under load)
        while time.monotonic() < deadline:
            if path.exists() and path.read_text() == text:
                return True
            time.sleep(0.01)
        return False

    try:
        memo.update(1, "note 1\n")
        assert written("note 1\n")
        time.sleep(0.2)  # past the interval: the thread waits for the next one
        memo.update(2, "note 2\n")
        assert written("note 2\n")
    finally:
        memo.close()


def test_the_remembered_checkpoint_is_written_a_few_times_a_second(tmp_path: Path) -> None:
    """A stream of commits writes the memo file at most once per interval (the newest
    checkpoint each time), not once per commit; closing writes the last one at once."""
    path = memo_path(tmp_path / "log.key")
    memo = CheckpointMemo(path, interval_s=0.5)
    seen: set[str] = set()
    t0 = time.monotonic()
    for size in range(1, 301):
        memo.update(size, f"note {size}\n")
        time.sleep(0.002)
        if path.exists():
            seen.add(path.read_text())
    elapsed = time.monotonic() - t0
    memo.close()
    assert path.read_text() == "note 300\n"
    assert 1 <= len(seen) <= elapsed / 0.5 + 2, (len(seen), elapsed)
