"""Servers of one log whose clocks disagree (two services over one real PostgreSQL
database, one 10 minutes slow), or one server whose clock is set back: the log's time
never goes back. Before, each server stamped entries and checkpoints with its own clock:
a key revoked through the server that was right was still taken by the slow one, its
claim logged after the revocation with a time before it, which `prov verify` judges by
time, so the stolen key's capture read as a signed original; and the log's entries and
checkpoints went back 10 minutes in log order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from provenance.core.errors import RevokedKeyError
from provenance.log.checkpoint import Checkpoint, split_note
from provenance.server.service import ProvenanceService, ServiceConfig
from tests.conftest import ADMIN_TOKEN
from tests.inproc import Clock, Device, InProc, open_inproc

SLOW = timedelta(minutes=10)


def _signed_at(note: str) -> datetime:
    cp = Checkpoint.parse_body(split_note(note)[0])
    assert cp.timestamp is not None
    return cp.timestamp


@pytest.fixture
def servers(pg_url: str, tmp_path: Path) -> Iterator[tuple[InProc, InProc]]:
    """Services A (right clock) and B (`SLOW` behind) on one fresh database, closed
    after."""
    now = datetime.now(UTC)
    cfg = ServiceConfig(db=pg_url, log_key=tmp_path / "log.key", admin_token=ADMIN_TOKEN)
    right, slow = Clock(now), Clock(now - SLOW)
    a = InProc(ProvenanceService(cfg, right), right, tmp_path)
    try:
        b = InProc(ProvenanceService(cfg, slow), slow, tmp_path)
        try:
            yield a, b
        finally:
            b.service.close()
    finally:
        a.service.close()


def test_a_key_revoked_through_one_server_is_refused_by_a_slow_one(
    servers: tuple[InProc, InProc],
) -> None:
    a, b = servers
    dev = a.enroll()
    first = a.submit(dev.next_claim()).receipt
    revoked = a.service.revoke(dev.device_id, "stolen", None)
    assert revoked.revoked_at is not None
    with pytest.raises(RevokedKeyError):
        b.submit(dev.next_claim())
    # the log's times go forward whichever server wrote the entry
    second = b.submit(b.enroll().next_claim()).receipt
    assert second.leaf_index > first.leaf_index
    assert second.integrated_at >= revoked.revoked_at
    assert _signed_at(second.checkpoint) >= _signed_at(first.checkpoint)


def test_entries_and_checkpoints_keep_log_order_in_time_across_servers(
    servers: tuple[InProc, InProc],
) -> None:
    a, b = servers
    devs = [a.enroll(), b.enroll()]
    receipts = []
    for k in range(6):
        via = (a, b)[k % 2]
        receipts.append(via.submit(devs[k % 2].next_claim()).receipt)
        via.clock.advance(seconds=1)
    receipts.sort(key=lambda r: r.leaf_index)
    times = [r.integrated_at for r in receipts]
    signed = [_signed_at(r.checkpoint) for r in receipts]
    assert times == sorted(times)
    assert signed == sorted(signed)
    rows = list(a.service.store.checkpoint_rows(0))
    assert [_signed_at(note) for _, note in rows] == sorted(_signed_at(note) for _, note in rows)


def test_a_revocation_asked_now_through_a_slow_server_does_not_reach_back(
    servers: tuple[InProc, InProc],
) -> None:
    """Revoking "now" through the slow server took its clock's time, 10 minutes before
    the log's: every capture logged meanwhile through the others was covered, judged
    REVOKED_KEY though logged before anyone asked for the revocation."""
    a, b = servers
    dev = a.enroll()
    logged = a.submit(dev.next_claim()).receipt
    revoked = b.service.revoke(dev.device_id, "stolen", None)
    assert revoked.revoked_at is not None
    assert revoked.revoked_at > logged.integrated_at
    with pytest.raises(RevokedKeyError):
        a.submit(dev.next_claim())


def test_a_clock_set_back_does_not_reopen_a_revoked_key(tmp_path: Path) -> None:
    one = open_inproc(tmp_path, Clock(datetime.now(UTC)))
    try:
        dev: Device = one.enroll()
        one.submit(dev.next_claim())
        one.service.revoke(dev.device_id, "stolen", None)
        one.clock.advance(minutes=-10)  # NTP stepping the clock back
        with pytest.raises(RevokedKeyError):
            one.submit(dev.next_claim())
    finally:
        one.service.close()


def test_a_clock_once_at_the_last_time_does_not_stop_the_log(tmp_path: Path) -> None:
    """A clock that once read the last time a datetime holds (9999-12-31T23:59:59.999999Z:
    a broken clock or a test's faked one), then set right. Each commit is timed a
    microsecond past the newest checkpoint's time while this clock is behind it, and a
    microsecond past that last time is no time at all: before, every later submission
    failed with "the log could not record the submission: date value out of range", and
    a revocation "now" with a traceback, for good. The log's time stays there (it never
    goes back) and the log goes on."""
    last = datetime.max.replace(tzinfo=UTC)
    clock = Clock(datetime.now(UTC))
    right = clock.now
    one = open_inproc(tmp_path, clock)
    try:
        dev = one.enroll()
        clock.now = last - timedelta(microseconds=1)
        one.submit(dev.next_claim())
        clock.now = right
        times = [one.submit(dev.next_claim()).receipt.integrated_at for _ in range(3)]
        assert times == sorted(times) and times[-1] == last
        revoked = one.service.revoke(dev.device_id, "stolen", None)
        assert revoked.revoked_at == last
        with pytest.raises(RevokedKeyError):
            one.submit(dev.next_claim())
    finally:
        one.service.close()
