"""Two `prov serve` over one PostgreSQL database whose operator made REPEATABLE READ (or
SERIALIZABLE) the default isolation (``ALTER DATABASE ... SET
default_transaction_isolation``, a shop's policy): a group commit's transaction took
its snapshot with its first statement, the append lock's, before it waited for the lock,
so once another server's commit went in meanwhile it read the old head and wrote leaves
and nodes over that commit's; the claims failed with "the log database is damaged:
duplicate key value ...", or a serialization failure. The store's write transactions are
READ COMMITTED now, whatever the database's default."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from clients.api import ProvenanceClient
from provenance.store.postgres import APPEND_LOCK
from tests.conftest import ADMIN_TOKEN, enroll_key, signed_claim, start_server


def _waiting_for_the_append_lock(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("level", ["repeatable read", "serializable"])
def test_two_servers_append_together_under_a_stricter_default_isolation(
    pg_url: str, level: str
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as c:
        name = c.execute("SELECT current_database()").fetchone()
        assert name is not None
        c.execute(f"ALTER DATABASE {name[0]} SET default_transaction_isolation = '{level}'")
    a = start_server(pg_url)
    b = start_server(pg_url)
    try:
        with ProvenanceClient(a.address, admin_token=ADMIN_TOKEN) as ca:
            keys = [enroll_key(ca), enroll_key(ca)]
        holder = psycopg.connect(pg_url, autocommit=True)
        try:
            # both servers' group commits start while the append lock is held, and wait
            holder.execute("SELECT pg_advisory_lock(%s)", (APPEND_LOCK,))

            def submit(k: int) -> tuple[int, bool]:
                with ProvenanceClient((a, b)[k].address) as c:
                    receipt, duplicate = c.submit(signed_claim(keys[k], 1))
                return receipt.leaf_index, duplicate

            with ThreadPoolExecutor(2) as pool:
                futures = [pool.submit(submit, k) for k in range(2)]
                give_up = time.monotonic() + 60
                while _waiting_for_the_append_lock(pg_url) < 2:
                    assert time.monotonic() < give_up, "the servers never waited for the lock"
                    time.sleep(0.05)
                holder.execute("SELECT pg_advisory_unlock(%s)", (APPEND_LOCK,))
                got = sorted(f.result(timeout=60) for f in futures)
        finally:
            holder.close()
        # two enrollments, then the two claims, one after the other, neither refused
        assert got == [(2, False), (3, False)]
    finally:
        for srv in (a, b):
            srv.stop()
