"""grpc health ``Watch`` streams against a real `prov serve` on a loopback port: a
stream waits on the event loop, not in an RPC thread, so a client holding many open
cannot stop the server's other calls, and open streams are not counted as calls grpc
core dropped."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.api import ProvenanceClient
from provenance.core.errors import TransportError
from provenance.server.store_reads import PUBLIC_NOT_ANSWERING
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from tests.conftest import ADMIN_TOKEN, enroll_key, read_line, start_server
from tests.test_burst_limits import _unanswered

#: RPC threads of the server under test, and Watch streams opened: more than them
THREADS = 12
WATCHES = 2 * THREADS


def _get_unknown_device(channel: grpc.Channel) -> grpc.StatusCode:
    """A GetDevice of a device nobody enrolled (answered in an RPC thread): its code."""
    try:
        rpc.DeviceRegistryStub(channel).GetDevice(
            pb.GetDeviceRequest(device_id=b"\x01" * 32), timeout=30
        )
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def _serving_watch(channel: grpc.Channel, timeout_s: float) -> Any:
    """A health Watch of the server as a whole (``timeout_s`` its deadline), once it
    said SERVING."""
    health: Any = health_pb2_grpc.HealthStub(channel)  # the stub declares no methods
    stream = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
    assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
    return stream


def _rename_table(db: Path, name: str, to: str) -> None:
    """Rename table ``name`` of the SQLite file ``db`` to ``to`` (another process's
    connection, as an operator's tool)."""
    with sqlite3.connect(db) as other:
        other.execute(f"ALTER TABLE {name} RENAME TO {to}")


def test_open_health_watches_hold_no_rpc_thread(tmp_path: Path) -> None:
    """WATCHES open ``Watch`` streams (twice the RPC threads) from one client: a call
    served in an RPC thread is still answered (NOT_FOUND for an unknown device) while
    they are open and after they are cancelled, each stream got SERVING, and /metrics
    counts none of them as unanswered (before: grpc's sync health servicer held an RPC
    thread per stream for the stream's life and past its cancellation, so 32 streams,
    the default --rpc-threads, left every registry, log and verification call waiting
    for good: DEADLINE_EXCEEDED; each open stream also read as a dropped call)."""
    server = start_server(
        tmp_path / "w.db", "--rpc-threads", str(THREADS), "--metrics-listen", "127.0.0.1:0"
    )
    try:
        url = read_line(server.proc, "metrics on ")
        with grpc.insecure_channel(server.address) as channel:
            assert _get_unknown_device(channel) == grpc.StatusCode.NOT_FOUND
            health: Any = health_pb2_grpc.HealthStub(channel)
            streams = [
                health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=120)
                for _ in range(WATCHES)
            ]
            first = next(streams[0])
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            time.sleep(1)  # the others reach the server (calls on one connection, in order)
            assert _get_unknown_device(channel) == grpc.StatusCode.NOT_FOUND
            assert [next(s).status for s in streams[1:]] == [first.status] * (WATCHES - 1)
            assert _unanswered(url) == 0
            for s in streams:
                s.cancel()
            assert _get_unknown_device(channel) == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop()


def test_health_follows_whether_the_database_answers_reads(tmp_path: Path) -> None:
    """The SQLite file's checkpoints table renamed away under the running server (an
    operator's tool; every read of it fails, "no such table") while no capture is tried:
    the health Watch says NOT_SERVING though the log's writer is idle, GetCheckpoint
    still gives the newest checkpoint the server signed (from memory), and once the
    table is back the Watch says SERVING again by itself. Before, the health check said
    SERVING throughout, and GetCheckpoint was UNAVAILABLE."""
    db = tmp_path / "h.db"
    server = start_server(db)
    try:
        with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as c:
            enroll_key(c)
            signed = c.checkpoint()
        with grpc.insecure_channel(server.address) as channel:
            stream = _serving_watch(channel, 120)
            _rename_table(db, "checkpoints", "checkpoints_away")
            assert next(stream).status == health_pb2.HealthCheckResponse.NOT_SERVING
            with ProvenanceClient(server.address, timeout=30) as c:
                assert c.checkpoint() == signed
            _rename_table(db, "checkpoints_away", "checkpoints")
            assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
            stream.cancel()
    finally:
        assert server.stop() == 0
    assert "the log database does not answer reads" in server.stderr()


@pytest.mark.parametrize("gone", ["moved", "deleted"])
def test_health_says_not_serving_while_the_sqlite_file_is_gone(tmp_path: Path, gone: str) -> None:
    """The SQLite file moved away (or deleted) under the running server while no capture
    is tried: the health Watch says NOT_SERVING, and a GetDevice is refused UNAVAILABLE
    naming no path; the file moved back, the Watch says SERVING again by itself. Before,
    the probe's and the readers' open connections went on reading the file that was gone:
    SERVING throughout, and reads answered from it."""
    db = tmp_path / "h.db"
    away = tmp_path / "away.db"
    server = start_server(db)
    try:
        with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as c:
            device = enroll_key(c)
        with grpc.insecure_channel(server.address) as channel:
            stream = _serving_watch(channel, 60)
            # a probe answered while the file is there: the probe's thread holds an open
            # connection to it (one that could go on reading the file once it is gone)
            _rename_table(db, "checkpoints", "checkpoints_away")
            assert next(stream).status == health_pb2.HealthCheckResponse.NOT_SERVING
            _rename_table(db, "checkpoints_away", "checkpoints")
            assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
            if gone == "moved":
                db.rename(away)
            else:
                for f in (db, tmp_path / "h.db-wal", tmp_path / "h.db-shm"):
                    f.unlink(missing_ok=True)
            assert next(stream).status == health_pb2.HealthCheckResponse.NOT_SERVING
            with (
                ProvenanceClient(server.address, timeout=30) as c,
                pytest.raises(TransportError) as got,
            ):
                c.get_device(device.key_id)
            assert got.value.code == "UNAVAILABLE", got.value
            assert PUBLIC_NOT_ANSWERING in str(got.value), got.value
            for secret in (str(tmp_path), "h.db"):
                assert secret not in str(got.value), got.value
            if gone == "moved":
                away.rename(db)
                assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
            stream.cancel()
    finally:
        assert server.stop() == 0
    assert f"the database file {db} is gone" in server.stderr()
