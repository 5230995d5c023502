"""`StoreReads`: whether the log database answers reads, probed off the callers' paths,
and the newest checkpoint held for GetCheckpoint while it does not (the servers'
behaviour: tests/test_postgres_hung.py, tests/test_health_watch.py)."""

from __future__ import annotations

import threading
import time

import pytest

from provenance.core.errors import StoreUnavailableError
from provenance.server.store_reads import StoreReads

HELD = (2, "checkpoint of 2")
NEWER = (3, "checkpoint of 3")


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
        reads.saw((1, "an older one"))  # never replaces a newer one
        assert reads.latest() == HELD
        assert reads.answering() is False
    finally:
        reads.close()
