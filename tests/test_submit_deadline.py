"""A capture whose call deadline is no longer than the server's ``--submit-wait``, while
the log cannot write (another process holds the SQLite file's write lock): the server
answers before the caller's deadline that the log did not confirm it (UNAVAILABLE, worth
sending again). Before, it waited ``--submit-wait`` whatever the deadline, so a caller
whose deadline equalled it (the client's default 30 s against the server's default 30 s)
always saw its own deadline pass: "cannot reach the server (DEADLINE_EXCEEDED)", while
the server was there and its database was busy. A real `prov serve` on a real port."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients.api import ProvenanceClient
from provenance.core.errors import TransportError
from tests.conftest import (
    ADMIN_TOKEN,
    HOLD_SQLITE_WRITE_LOCK,
    enroll_key,
    read_line,
    signed_claim,
    start_server,
)

#: Seconds of both the server's --submit-wait and the caller's deadline.
WAIT_S = 4.0


@pytest.mark.parametrize("deadline", [WAIT_S, WAIT_S - 1])
def test_a_deadline_no_longer_than_the_submit_wait_is_answered_before_it(
    tmp_path: Path, deadline: float
) -> None:
    db = tmp_path / "log.db"
    srv = start_server(db, "--submit-wait", str(WAIT_S))
    holder = None
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            device = enroll_key(c)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_SQLITE_WRITE_LOCK, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,  # pipes: the holder writes one line, 'held', read here
            text=True,
        )
        assert read_line(holder, "held", 30) == "held"
        t0 = time.monotonic()
        with (
            ProvenanceClient(srv.address, timeout=deadline) as c,
            pytest.raises(TransportError) as got,
        ):
            c.submit(signed_claim(device, 1))
        took = time.monotonic() - t0
        # before: DEADLINE_EXCEEDED, "cannot reach the server at ..."
        assert got.value.code == "UNAVAILABLE", got.value
        assert "the log did not confirm the submission within" in str(got.value), got.value
        assert took < deadline, took
    finally:
        if holder is not None:
            holder.communicate(timeout=30)
        assert srv.stop() == 0
