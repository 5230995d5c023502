"""SQLite migration 6: the claim, leaf and file hash indexes get free space in their pages
(a fully packed index splits a page on nearly every random insert, writing more pages to
the WAL per append), and the log's rows and answers stay exactly as they were."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from provenance.core.claims import Device, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM
from provenance.store import NewLeaf
from provenance.store.sqlite import SCHEMA_VERSION, SqliteStore

NOW = datetime(2026, 12, 2, tzinfo=UTC)
DEVICE = b"\xd1" * 32
LEAVES = 20_000
HASH_INDEXES = ("sqlite_autoindex_leaves_1", "leaves_leaf_key", "leaves_file_key")


def _leaves(n: int) -> list[NewLeaf]:
    out = []
    for k in range(n):
        signed = SignedClaim(PAYLOAD_TYPE_CLAIM, os.urandom(40), DEVICE, os.urandom(64))
        out.append(
            NewLeaf(os.urandom(32), signed, DEVICE, k + 1, os.urandom(32), NOW, False, b"e", ())
        )
    return out


def _schema_5(db: Path) -> list[NewLeaf]:
    """A schema-5 log of `LEAVES` leaves whose hash indexes are packed full, as
    migration 5's CREATE INDEX (or a VACUUM) leaves them."""
    store = SqliteStore(db)
    store.enroll(None, Device(DEVICE, b"\x02" * 32, NOW), NOW)
    leaves = _leaves(LEAVES)
    with store.append() as txn:
        txn.insert_leaves(0, leaves)
    store.close()
    with sqlite3.connect(db) as c:
        c.execute("REINDEX leaves")  # every index rebuilt sorted: its pages full
        c.execute("PRAGMA user_version = 5")
    return leaves


def _free(c: sqlite3.Connection) -> dict[str, float]:
    """The share of each hash index's leaf pages that is free (SQLite's dbstat)."""
    out = {}
    for name in HASH_INDEXES:
        unused, size = c.execute(
            "SELECT SUM(unused), SUM(pgsize) FROM dbstat WHERE name=? AND pagetype='leaf'",
            (name,),
        ).fetchone()
        out[name] = unused / size
    return out


def test_migration_6_leaves_room_in_the_hash_indexes_and_keeps_every_answer(
    tmp_path: Path,
) -> None:
    db = tmp_path / "v5.db"
    leaves = _schema_5(db)
    with sqlite3.connect(db) as c:
        before = c.execute("SELECT * FROM leaves ORDER BY idx").fetchall()
        packed = _free(c)
    assert max(packed.values()) < 0.05, packed
    store = SqliteStore(db)  # migrates
    try:
        c = store._writer
        assert c.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        # room for the next appends' inserts (as an index built by appends has), so they
        # seldom split a page: at 10^7 leaves 3.4 WAL pages per appended leaf, not 6.4
        loose = _free(c)
        assert min(loose.values()) > 0.12, loose
        # the rows, the checks and the answers are those of before
        assert c.execute("SELECT * FROM leaves ORDER BY idx").fetchall() == before
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert store.tree_size() == LEAVES
        for k in (0, 1, LEAVES // 2, LEAVES - 1):
            lf = leaves[k]
            by_leaf = store.leaf_by_leaf_hash(lf.leaf_hash)
            by_claim = store.leaf_by_claim_hash(lf.signed_claim.claim_hash)
            assert by_leaf is not None and by_leaf.index == k
            assert by_claim is not None and by_claim.index == k
            assert [r.index for r in store.leaves_by_file_sha256(lf.file_sha256)] == [k]
        assert store.leaf_by_leaf_hash(os.urandom(32)) is None
    finally:
        store.close()


def test_postgresql_hash_indexes_keep_room_after_a_rebuild(pg_url: str) -> None:
    """The PostgreSQL side of migration 6 needs no migration: its B-trees keep a tenth of
    each leaf page free when built or rebuilt (fillfactor 90), where SQLite's are packed
    full. Checked on the claim, leaf and file hash indexes after a REINDEX (pgstattuple)."""
    import psycopg

    from provenance.store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    try:
        store.enroll(None, Device(DEVICE, b"\x02" * 32, NOW), NOW)
        with store.append() as txn:
            txn.insert_leaves(0, _leaves(LEAVES))
    finally:
        store.close()
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        c.execute("REINDEX TABLE leaves")  # as migrations 4 and 5's CREATE INDEX: sorted
        for name in ("leaves_claim_hash_key", "leaves_leaf_key", "leaves_file_key_idx"):
            row = c.execute(
                "SELECT leaf_pages, avg_leaf_density FROM pgstatindex(%s)", (name,)
            ).fetchone()
            assert row is not None
            pages, density = row
            assert pages > 10 and density < 92, (name, pages, density)
