"""`prov sign` whose server is reached but cannot log the claim now (its database holds
a lock the writer needs, and answers UNAVAILABLE "the log database did not answer in N
s; nothing was logged: send it again", as docs/deploy.md tells callers) queues the claim
and says the server's own words. Before, it said "queued: server HOST:PORT unreachable"
for every UNAVAILABLE, so an operator following deploy.md looked for a network fault
while the server answered (`prov device sync` already said the server's words). Real
PostgreSQL, real server, the log's append lock held by another session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from provenance.store.postgres import APPEND_LOCK
from tests.conftest import SAMPLES, Cli, ServerProc, start_server

#: `prov sign`'s exit code when its claims are signed but only queued.
EXIT_QUEUED = 4


@pytest.fixture
def server_db(pg_url: str) -> str:
    return pg_url


@pytest.fixture
def server(server_db: str) -> Iterator[ServerProc]:
    """A server that gives up on a held lock after 1 s (``--db-answer-wait``), with no
    device quota (its counts' sync takes the append lock too)."""
    srv = start_server(
        server_db,
        "--db-answer-wait",
        "1",
        "--quota-claims-per-minute",
        "0",
        "--quota-claim-kb-per-minute",
        "0",
    )
    yield srv
    srv.stop()


def test_a_claim_the_server_cannot_log_now_is_queued_with_the_servers_words(
    enrolled: Cli, server_db: str, tmp_path: Path
) -> None:
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    holder = psycopg.connect(server_db, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (APPEND_LOCK,))
        rc, out, err = enrolled("sign", str(photo))
    finally:
        holder.close()
    flat = " ".join((out + err).split())
    assert rc == EXIT_QUEUED, (rc, flat)
    assert f"queued: the server at {enrolled.server} cannot log it now" in flat, flat
    assert "the log database did not answer in 1 s; nothing was logged" in flat, flat
    assert "unreachable" not in flat, flat
    # the lock released, the queued claim is logged
    rc, out, err = enrolled("device", "sync")
    assert rc == 0 and "submitted 1 of 1" in out, (rc, out, err)
