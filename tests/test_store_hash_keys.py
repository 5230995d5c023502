"""Lookups by leaf and file hash through the 8-byte-key indexes (SQLite schema 5,
PostgreSQL schema 4): the same answers on every backend, hashes that share their first
8 bytes told apart, and the migration from the full-hash indexes."""

from __future__ import annotations

import logging
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from provenance.core.claims import Device, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM
from provenance.store import NewLeaf, Store
from provenance.store.memory import MemoryStore
from provenance.store.sql import _by_hash
from provenance.store.sqlite import _MIGRATIONS, SqliteStore

NOW = datetime(2026, 12, 2, tzinfo=UTC)
DEVICE = b"\xd1" * 32
KEY = os.urandom(8)  # the first 8 bytes every leaf hash and file hash below share
LEAF_A, LEAF_B, LEAF_C = (KEY + bytes([b]) * 24 for b in (1, 2, 3))
FILE_X, FILE_Y, FILE_Z = (KEY + bytes([b]) * 24 for b in (7, 8, 9))


def _leaf(leaf_hash: bytes, file_sha256: bytes, seq: int) -> NewLeaf:
    signed = SignedClaim(PAYLOAD_TYPE_CLAIM, os.urandom(40), DEVICE, os.urandom(64))
    return NewLeaf(leaf_hash, signed, DEVICE, seq, file_sha256, NOW, False, b"entry", ())


LEAVES = [_leaf(LEAF_A, FILE_X, 1), _leaf(LEAF_B, FILE_Y, 2), _leaf(os.urandom(32), FILE_X, 3)]


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        s: Store = SqliteStore(tmp_path / "prov.db")
    elif request.param == "memory":
        s = MemoryStore()
    else:
        from provenance.store.postgres import PostgresStore

        s = PostgresStore(request.getfixturevalue("pg_url"))
    _fill(s)
    return s


def _fill(s: Store) -> None:
    s.enroll(None, Device(DEVICE, b"\x02" * 32, NOW), NOW)
    with s.append() as txn:
        txn.insert_leaves(0, LEAVES)


def test_hashes_sharing_their_first_bytes_are_told_apart(store: Store) -> None:
    try:
        a, b = store.leaf_by_leaf_hash(LEAF_A), store.leaf_by_leaf_hash(LEAF_B)
        assert a is not None and (a.index, a.leaf_hash) == (0, LEAF_A)
        assert b is not None and (b.index, b.file_sha256) == (1, FILE_Y)
        assert store.leaf_by_leaf_hash(LEAF_C) is None  # same key, another hash
        assert store.leaf_by_leaf_hash(KEY) is None  # the key alone is no hash
        assert store.leaf_by_leaf_hash(b"") is None
        assert [r.index for r in store.leaves_by_file_sha256(FILE_X)] == [0, 2]
        assert [r.index for r in store.leaves_by_file_sha256(FILE_Y)] == [1]
        assert store.leaves_by_file_sha256(FILE_Z) == []
        assert store.leaves_by_file_sha256(KEY) == []
        found = store.leaf_by_claim_hash(LEAVES[2].signed_claim.claim_hash)
        assert found is not None and found.index == 2
    finally:
        store.close()


def _plan(c: sqlite3.Connection, sql: str) -> str:
    return " ".join(str(r[3]) for r in c.execute(f"EXPLAIN QUERY PLAN {sql}", (b"k", b"h")))


def test_postgresql_lookups_search_the_short_key_indexes(pg_url: str) -> None:
    """PostgreSQL (schema 4, and 5: the file key index also ordered by log index) has the
    8-byte-key indexes, not the full-hash ones, and plans the lookups' own SQL on them
    (sequential scans off, as on a table too big to scan)."""
    import psycopg

    from provenance.store.postgres import PostgresStore

    PostgresStore(pg_url).close()  # migrates
    with psycopg.connect(pg_url, autocommit=True) as c:
        names = {r[0] for r in c.execute("SELECT indexname FROM pg_indexes")}
        assert {"leaves_leaf_key", "leaves_file_key_idx"} <= names
        assert not {"leaves_leaf_hash", "leaves_file_sha256", "leaves_file_key"} & names
        c.execute("SET enable_seqscan = off")
        for column, index in (
            ("leaf_hash", "leaves_leaf_key"),
            ("file_sha256", "leaves_file_key_idx"),
        ):
            sql = f"EXPLAIN SELECT idx FROM leaves WHERE {_by_hash(column)}"
            plan = " ".join(r[0] for r in c.execute(sql.replace("?", "%s"), (b"k", b"h")))
            assert index in plan, plan


def test_a_schema_4_database_migrates_to_the_short_key_indexes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database with the full-hash indexes (schema 4) gets the 8-byte-key ones at the
    first writable open, saying so (minutes on a large log), keeps its answers, and the
    lookups search the new indexes."""
    db = tmp_path / "v4.db"
    old = SqliteStore(db)
    with old._writer as c:  # back to schema 4: the full-hash indexes
        c.execute("DROP INDEX leaves_leaf_key")
        c.execute("DROP INDEX leaves_file_key")
        c.execute("CREATE INDEX leaves_file_sha256 ON leaves(file_sha256)")
        c.execute("CREATE INDEX leaves_leaf_hash ON leaves(leaf_hash)")
        c.execute("PRAGMA user_version = 4")
    _fill(old)
    old.close()
    audit = SqliteStore(db, read_only=True)  # not migrated: the old indexes still answer
    try:
        assert "schema version 4" in audit.outdated
        assert [r.index for r in audit.leaves_by_file_sha256(FILE_X)] == [0, 2]
        assert audit.leaf_by_leaf_hash(LEAF_C) is None
    finally:
        audit.close()
    with caplog.at_level(logging.INFO, logger="provenance.store.sqlite"):
        store = SqliteStore(db)
    said = [r.getMessage() for r in caplog.records]
    assert any(f"migrating schema 4 to {max(_MIGRATIONS)}" in m for m in said), said
    assert any("migrated in" in m for m in said), said
    try:
        c = store._writer
        assert c.execute("PRAGMA user_version").fetchone() == (max(_MIGRATIONS),)
        names = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"leaves_leaf_key", "leaves_file_key"} <= names
        assert not {"leaves_leaf_hash", "leaves_file_sha256"} & names
        # the lookups' own SQL searches the new indexes (not a scan of the leaves)
        plan = _plan(c, f"SELECT idx FROM leaves WHERE {_by_hash('leaf_hash')}")
        assert "USING INDEX leaves_leaf_key" in plan
        plan = _plan(c, f"SELECT idx FROM leaves WHERE {_by_hash('file_sha256')}")
        assert "USING INDEX leaves_file_key" in plan
        b = store.leaf_by_leaf_hash(LEAF_B)
        assert b is not None and b.index == 1
        assert [r.index for r in store.leaves_by_file_sha256(FILE_X)] == [0, 2]
        assert store.leaf_by_leaf_hash(LEAF_C) is None
    finally:
        store.close()


def test_a_batch_read_tells_apart_hashes_sharing_their_key(store: Store) -> None:
    """`leaves_by_file_sha256_many` (the Lookup's batch read) gives each hash exactly its
    own leaves, duplicates and hashes sharing the first 8 bytes included."""
    try:
        many = [FILE_Z, FILE_X, FILE_Y, FILE_X, KEY, b""]
        found = {
            h: [r.index for r in recs] for h, recs in store.leaves_by_file_sha256_many(many).items()
        }
        assert found == {FILE_X: [0, 2], FILE_Y: [1]}
        assert store.leaves_by_file_sha256_many([]) == {}
    finally:
        store.close()


def test_a_sqlite_batch_read_searches_the_short_key_index(tmp_path: Path) -> None:
    """The batch read's own SQL (traced as SQLite runs it) is planned on leaves_file_key,
    not as a scan of every leaf (the key index cannot serve `file_sha256 IN (...)`)."""
    store = SqliteStore(tmp_path / "prov.db")
    try:
        _fill(store)
        store.leaves_by_file_sha256_many([FILE_X])  # this thread's reader connection
        ran: list[str] = []
        store._local.conn.set_trace_callback(ran.append)
        store.leaves_by_file_sha256_many([FILE_X, FILE_Y])
        store._local.conn.set_trace_callback(None)
        [sql] = [s for s in ran if s.lstrip().upper().startswith("SELECT")]
        plan = " ".join(str(r[3]) for r in store._writer.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "USING INDEX leaves_file_key" in plan, plan
    finally:
        store.close()
