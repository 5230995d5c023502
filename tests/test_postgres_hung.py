"""A `prov serve` whose PostgreSQL stays connected but does not answer: a session holds a
lock the log's writer needs (the append lock, a ``LOCK TABLE``, as ``VACUUM FULL`` or
``ALTER TABLE`` hold one), or the database server's processes are stopped (SIGSTOP: TCP
stays up, nothing answers). Before, the group-commit writer waited for as long as that
lasted: every capture's caller saw its own deadline pass ("cannot reach the server", 40
s into a 40 s deadline), and SIGTERM left the server running (still after 60 s). Now the
waiting captures are answered UNAVAILABLE after ``--db-answer-wait`` seconds ("the log
database did not answer in N s; nothing was logged: send it again"), nothing of them is
in the database, the server's health check says NOT_SERVING meanwhile, and it goes on by
itself once the database answers again."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.api import ProvenanceClient
from provenance.core.errors import TransportError
from provenance.store.postgres import APPEND_LOCK
from tests.conftest import (
    ADMIN_TOKEN,
    ServerProc,
    enroll_key,
    read_line,
    signed_claim,
    start_server,
)
from tests.pgserver import PgServer

WAIT_S = 2  # --db-answer-wait
#: a generous bound on the seconds until a caller is answered (WAIT_S, the 2 s backstop of
#: a stopped database, a loaded CI machine); before, never within its 40 s deadline
ANSWERED_WITHIN_S = 20.0


def _serve(url: str, *extra: str) -> tuple[ServerProc, Any]:
    """A server with the short answer wait, and a device enrolled through it."""
    srv = start_server(
        url,
        "--db-answer-wait",
        str(WAIT_S),
        # no device quota: its counts' sync takes the append lock too (not the writer)
        "--quota-claims-per-minute",
        "0",
        "--quota-claim-kb-per-minute",
        "0",
        *extra,
    )
    with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
        device = enroll_key(c)
    return srv, device


def _refused(srv: ServerProc, claim: Any, deadline: float = 40) -> tuple[TransportError, float]:
    """Submit ``claim`` (``deadline`` seconds), which must be refused: the error and the
    seconds until the answer."""
    t0 = time.monotonic()
    with (
        ProvenanceClient(srv.address, timeout=deadline) as c,
        pytest.raises(TransportError) as got,
    ):
        c.submit(claim)
    return got.value, time.monotonic() - t0


def _logged(url: str) -> tuple[int, int]:
    """(leaves, largest checkpoint size) in the database."""
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(
            "SELECT (SELECT count(*) FROM leaves), (SELECT coalesce(max(size), 0) FROM checkpoints)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _unanswered(metrics_url: str) -> float:
    """``prov_log_appends_unanswered_total`` as /metrics says it (0 when absent)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith("prov_log_appends_unanswered_total "):
            return float(line.split()[1])
    return 0.0


def _health(srv: ServerProc, becomes: str | None = None) -> str:
    """The server's health check (`Check` of the server as a whole), once it says
    ``becomes`` when given (looked at every 0.1 s for 10 s: the server looks every 0.5 s)."""
    until = time.monotonic() + 10
    with grpc.insecure_channel(srv.address) as ch:
        stub: Any = health_pb2_grpc.HealthStub(ch)  # the stub declares no methods
        while True:
            got = stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            status = str(health_pb2.HealthCheckResponse.ServingStatus.Name(got.status))
            if becomes in (None, status) or time.monotonic() > until:
                return status
            time.sleep(0.1)


def _stopped_database(pg: PgServer) -> list[int]:
    """The postmaster's process id and those of its children (the backends)."""
    top = int((pg.root / "data" / "postmaster.pid").read_text().split()[0])
    pids = [top]
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == top:
                pids.append(int(name))
    return pids


@contextmanager
def _frozen(pg: PgServer) -> Iterator[None]:
    """The database server's processes stopped (SIGSTOP), continued at the end."""
    pids = _stopped_database(pg)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def test_a_held_append_lock_is_answered_and_the_server_goes_on(pg_url: str) -> None:
    srv, device = _serve(pg_url, "--metrics-listen", "127.0.0.1:0")
    try:
        metrics_url = read_line(srv.proc, "metrics on ")
        assert _health(srv) == "SERVING"
        holder = psycopg.connect(pg_url, autocommit=True)
        holder.execute("SELECT pg_advisory_lock(%s)", (APPEND_LOCK,))
        err, took = _refused(srv, signed_claim(device, 1))
        # before: "cannot reach the server ... (DEADLINE_EXCEEDED ...)" after 40 s
        assert err.code == "UNAVAILABLE", err
        assert f"the log database did not answer in {WAIT_S} s" in str(err), err
        assert "nothing was logged: send it again" in str(err), err
        assert "cannot reach the server" not in str(err), err
        assert took < ANSWERED_WITHIN_S, took
        assert _health(srv, "NOT_SERVING") == "NOT_SERVING"
        assert _unanswered(metrics_url) == 1  # /metrics answers meanwhile
        # a revocation waits on the same writer, and is answered the same way
        with (
            ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN, timeout=40) as c,
            pytest.raises(TransportError) as revoking,
        ):
            c.revoke(device.key_id, "lost")
        assert revoking.value.code == "UNAVAILABLE", revoking.value
        assert "nothing was logged: send it again" in str(revoking.value), revoking.value
        assert _logged(pg_url) == (1, 1)  # the enrollment only: nothing half-written
        holder.close()  # the lock is released: ready again without a capture
        assert _health(srv, "SERVING") == "SERVING"
        with ProvenanceClient(srv.address) as c:
            receipt, duplicate = c.submit(signed_claim(device, 1))
        assert (receipt.leaf_index, duplicate) == (1, False)
        assert _logged(pg_url) == (2, 2)
    finally:
        assert srv.stop() == 0
    log = srv.stderr()
    assert "did not answer in 2 s" in log and "answers again" in log, log[-3000:]


def test_a_table_lock_fails_reads_and_writes_in_time(pg_url: str) -> None:
    """A ``LOCK TABLE`` (as ``VACUUM FULL`` or ``ALTER TABLE`` take) of the log's tables:
    the capture and a read of what the lock holds are answered in time."""
    srv, device = _serve(pg_url)
    try:
        holder = psycopg.connect(pg_url)
        holder.execute("LOCK TABLE leaves, checkpoints IN ACCESS EXCLUSIVE MODE")
        err, took = _refused(srv, signed_claim(device, 1))
        assert err.code == "UNAVAILABLE", err
        assert "nothing was logged" in str(err), err
        assert took < ANSWERED_WITHIN_S, took
        t0 = time.monotonic()
        with ProvenanceClient(srv.address, timeout=40) as c, pytest.raises(TransportError) as got:
            c.entries(0, 1)  # reads the leaves
        assert got.value.code == "UNAVAILABLE", got.value
        assert "did not answer in 2 s" in str(got.value), got.value
        assert time.monotonic() - t0 < ANSWERED_WITHIN_S
        holder.rollback()
        holder.close()
        assert _logged(pg_url) == (1, 1)
        with ProvenanceClient(srv.address) as c:
            assert c.submit(signed_claim(device, 1))[0].leaf_index == 1
    finally:
        assert srv.stop() == 0


def test_a_stopped_database_server_is_answered_and_the_server_goes_on(
    pg_server: PgServer, pg_url: str
) -> None:
    """The database server's processes stopped (SIGSTOP), its connections open: the
    writer's transaction is given up (its connection cut), the caller told, and once the
    processes go on the next capture is logged. When the writer finds no open connection
    free (a read holds the one there was, waiting on the stopped server too), it waits
    as in an outage (its new connections hang until libpq's connect_timeout): the caller
    is answered before its deadline that the log did not confirm it (its deadline is
    longer than ``--submit-wait``)."""
    srv, device = _serve(pg_url, "--submit-wait", "5")
    try:
        with _frozen(pg_server):
            err, took = _refused(srv, signed_claim(device, 1), deadline=15)
            # before: "cannot reach the server ... (DEADLINE_EXCEEDED ...)" at the deadline
            assert err.code == "UNAVAILABLE", err
            said = str(err)
            assert (
                "the log database did not answer in" in said
                and "nothing was logged: send it again" in said
            ) or "the log did not confirm the submission within 14 s" in said, err
            assert took < 15, took
        assert _logged(pg_url) == (1, 1)
        got: list[int] = []
        until = time.monotonic() + 30  # the pool's new connections: a hang guard
        while not got and time.monotonic() < until:
            try:
                with ProvenanceClient(srv.address, timeout=15) as c:
                    got.append(c.submit(signed_claim(device, 1))[0].leaf_index)
            except TransportError as e:
                assert e.code == "UNAVAILABLE", e
        assert got == [1]
    finally:
        assert srv.stop() == 0


def test_the_server_stops_while_the_database_does_not_answer(pg_url: str) -> None:
    """SIGTERM with a capture waiting on a held lock: before, the server was still
    running 60 s later (its writer never gave up, and stopping waits for it)."""
    srv, device = _serve(pg_url)
    holder = psycopg.connect(pg_url, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (APPEND_LOCK,))
        answers: list[str] = []

        def submit() -> None:
            try:
                with ProvenanceClient(srv.address, timeout=40) as c:
                    c.submit(signed_claim(device, 1))
            except TransportError as e:
                answers.append(f"{e.code}: {e}")

        caller = threading.Thread(target=submit, daemon=True)
        caller.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        give_up = time.monotonic() + 20
        while holder.execute(waiting).fetchone() == (0,):
            assert time.monotonic() < give_up, "the writer never waited for the append lock"
            time.sleep(0.05)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(timeout=ANSWERED_WITHIN_S)  # the hang guard: raises past it
        assert srv.proc.returncode == 0, srv.stderr()[-3000:]
        assert time.monotonic() - t0 < ANSWERED_WITHIN_S
        caller.join(timeout=10)
        assert len(answers) == 1 and answers[0].startswith("UNAVAILABLE"), answers
        assert "cannot reach the server" not in answers[0], answers
        assert _logged(pg_url) == (1, 1)
    finally:
        holder.close()
        srv.stop(signal.SIGKILL)
