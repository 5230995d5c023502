"""`StoreReads`: whether the log database answers reads, probed off the callers' paths,
and the newest checkpoint held for GetCheckpoint while it does not (the servers'
behaviour: tests/test_postgres_hung.py, tests/test_health_watch.py)."""

from __future__ import annotations

import base64
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from clients.api import ProvenanceClient
from provenance.core.errors import StorageError, StoreUnavailableError, TransportError
from provenance.server.store_reads import PUBLIC_NOT_ANSWERING, StoreReads
from tests.conftest import ADMIN_TOKEN, enroll_key, signed_claim, start_server

HELD = (2, "log.example\n2\nroot of 2\n\n— log.example sig\n")
NEWER = (3, "log.example\n3\nroot of 3\n\n— log.example sig\n")


def _until(check: StoreReads, answering: bool) -> None:
    """Wait until ``check.answering()`` is ``answering`` (a hang guard of 30 s)."""
    until = time.monotonic() + 30
    while check.answering() != answering:
        assert time.monotonic() < until, "the probe's answer never came"
        time.sleep(0.01)


def test_a_database_that_does_not_answer_gets_one_probe_and_bounded_checks() -> None:
    """A read that never returns (a stopped PostgreSQL): a check waits at most the
    probe's bound and says the database does not answer, and so do a hundred checks
    after it without waiting, all on the one probe (no flood); GetCheckpoint's read gets
    the checkpoint held. Once the database answers, the probe says so and the newest
    checkpoint is read and held."""
    gate = threading.Event()
    calls: list[int] = []

    def read() -> tuple[int, str]:
        calls.append(1)
        gate.wait(60)
        return NEWER

    reads = StoreReads(read)
    reads.saw(HELD)
    try:
        assert reads.answers() is False
        assert not any(reads.answers() for _ in range(100))
        assert reads.latest() == HELD
        assert len(calls) == 1, calls
        gate.set()
        _until(reads, True)
        assert reads.newest == NEWER
        assert reads.latest() == NEWER
    finally:
        gate.set()
        reads.close()


def test_a_read_that_fails_serves_the_checkpoint_held() -> None:
    """A read that fails at once (the database refuses connections): the checkpoint held
    is served, the database said not to answer; with none held, the store's error."""

    def read() -> tuple[int, str]:
        raise StoreUnavailableError("the database cannot be used now: refused")

    reads = StoreReads(read)
    try:
        with pytest.raises(StoreUnavailableError):
            reads.latest()
        reads.saw(HELD)
        reads.saw((1, "log.example\n1\nroot of 1\n"))  # never replaces a newer one
        assert reads.latest() == HELD
        assert reads.answering() is False
    finally:
        reads.close()


def test_a_checkpoint_of_another_history_is_reported_and_not_held(tmp_path: Path) -> None:
    """The database's checkpoint of a tree size the server signed changes root under the
    running server (restored from another backup, failed over to a replica that had not
    the last commits, another log's file): the server's log says so at once, as an error
    naming both roots, and the checkpoint held (served while the database does not
    answer) stays the one the server signed. Before, the second was silently ignored
    (only a larger tree size was compared)."""
    db = tmp_path / "prov.db"
    srv = start_server(db)
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            c.submit(signed_claim(enroll_key(c), 1))
            signed = c.checkpoint()
            origin, size, root, rest = signed.split("\n", 3)
            other = base64.b64encode(bytes(32)).decode()
            with sqlite3.connect(db) as out:
                out.execute(
                    "UPDATE checkpoints SET note=? WHERE size=?",
                    ("\n".join((origin, size, other, rest)), int(size)),
                )
            until = time.monotonic() + 30
            while "another history" not in srv.stderr():
                assert time.monotonic() < until, srv.stderr()[-3000:]
                c.checkpoint()  # read from the database: it is held or compared
                time.sleep(0.05)
            with sqlite3.connect(db) as out:
                out.execute("ALTER TABLE checkpoints RENAME TO hidden")
            assert c.checkpoint() == signed
            with pytest.raises(TransportError, match="cannot be used now"):
                c.entries(0, 1)
    finally:
        assert srv.stop() == 0
    log = srv.stderr()
    told = [line for line in log.splitlines() if "another history" in line]
    assert len(told) == 1, log[-3000:]
    assert root in told[0] and other in told[0] and "ERROR" in told[0], told


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (StoreUnavailableError("connection refused"), True),  # the whole database
        (StorageError("no such table: checkpoints"), False),  # one table: reads are tried
    ],
)
def test_reads_are_refused_at_once_only_for_a_database_that_does_not_answer(
    error: StorageError, refused: bool
) -> None:
    """`refuse_unanswered`: a probe failing for want of a connection refuses the callers'
    reads untried (`PUBLIC_NOT_ANSWERING`), another StorageError refuses nothing; once a
    probe is answered, nothing is refused."""
    failing = threading.Event()
    failing.set()

    def read() -> tuple[int, str]:
        if failing.is_set():
            raise error
        return HELD

    reads = StoreReads(read)
    try:
        assert reads.answers() is False
        if refused:
            with pytest.raises(StoreUnavailableError) as got:
                reads.refuse_unanswered()
            assert got.value.public == PUBLIC_NOT_ANSWERING, got.value
            assert "connection refused" in str(got.value), got.value
        else:
            reads.refuse_unanswered()
        failing.clear()
        _until(reads, True)
        reads.refuse_unanswered()
    finally:
        reads.close()


def test_reads_are_refused_at_once_while_a_probe_is_unanswered() -> None:
    """A probe out past its bound (a stopped server): reads refused untried, before the
    probe's own error comes."""
    gate = threading.Event()
    reads = StoreReads(lambda: (gate.wait(60), HELD)[1])
    try:
        assert reads.answers() is False
        with pytest.raises(StoreUnavailableError, match="its probe is unanswered after"):
            reads.refuse_unanswered()
        gate.set()
        _until(reads, True)
        reads.refuse_unanswered()
    finally:
        gate.set()
        reads.close()
