"""A submission from a device that is not enrolled costs one store read (its key), not
two (its key and its quota count): a flood of forged device ids reaches the database
once each. Counted by a real PostgreSQL (``pg_stat_user_tables``) under a real server.

Before: 100 such submissions scanned the ``meta`` table (quota counts) 200 times on top
of the 100 reads of ``devices``."""

from __future__ import annotations

import pytest

from clients.api import ProvenanceClient
from provenance.core.errors import TransportError
from provenance.core.keys import DeviceKey
from tests.conftest import signed_claim, start_server

SUBMISSIONS = 100


def _scans(pg_url: str) -> dict[str, int]:
    """Table scans (sequential + index) of ``devices`` and ``meta`` so far."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as c:
        rows = c.execute(
            "SELECT relname, seq_scan + COALESCE(idx_scan, 0) FROM pg_stat_user_tables"
            " WHERE relname IN ('devices', 'meta')"
        ).fetchall()
    return {str(name): int(n) for name, n in rows}


def _serve(pg_url: str, unknown: int) -> dict[str, int]:
    """Scans made by one `prov serve` (start to stop, its statistics flushed as its
    connections end) answering ``unknown`` submissions from devices never enrolled."""
    before = _scans(pg_url)
    # the forgery penalty off: past its budget (60 a minute per client) such submissions
    # are refused unread, which test_forgery_penalty checks; here each must be read
    srv = start_server(pg_url, "--forgeries-per-minute", "0")
    try:
        with ProvenanceClient(srv.address) as c:
            for _ in range(unknown):
                with pytest.raises(TransportError) as e:
                    c.submit(signed_claim(DeviceKey.generate(), seq=1))
                assert e.value.code == "NOT_FOUND" and "not enrolled" in str(e.value)
    finally:
        assert srv.stop() == 0
    after = _scans(pg_url)
    return {t: after[t] - before.get(t, 0) for t in after}


@pytest.mark.slow
def test_an_unknown_device_costs_one_store_read(pg_url: str) -> None:
    _serve(pg_url, 0)  # creates the tables
    idle = _serve(pg_url, 0)  # what a start and a stop read by themselves
    busy = _serve(pg_url, SUBMISSIONS)
    assert busy["devices"] - idle["devices"] == SUBMISSIONS, (idle, busy)
    assert busy["meta"] - idle["meta"] < SUBMISSIONS // 10, (idle, busy)
