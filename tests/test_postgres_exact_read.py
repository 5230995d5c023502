"""PostgreSQL's exact-claims read (each file hash's first leaves by log index, the
`MAX_EXACT_CLAIMS` bound) reads a bounded number of rows however many leaves bind the
hash: migration 5's index (the file key, then the log index) serves its ORDER BY idx
LIMIT, and the planner uses it. A real PostgreSQL server (tests/pgserver.py), real
leaves; a database of schema 4 (the key-only index) migrates, also with servers
starting together."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from provenance.store.postgres import SCHEMA_VERSION, PostgresStore

FLOODED = hashlib.sha256(b"flooded file").digest()
LIMIT = 65


def _insert(c: psycopg.Connection[Any], start: int, n: int, file: bytes | None) -> None:
    """Leaves ``start``..``start + n - 1``, each of its own file, or all of ``file``."""
    c.execute(
        "INSERT INTO leaves SELECT i, sha256(('l'||i)::bytea), sha256(('c'||i)::bytea),"
        " '\\xd2'::bytea, i, "
        + ("%s" if file else "sha256(('f'||i)::bytea)")
        + ", 0, 0, 'entry'::bytea FROM generate_series(%s::bigint, %s::bigint) i",
        ([file] if file else []) + [start, start + n - 1],
    )


def _flooded_log(url: str, others: int = 20_000, flood: int = 3_000) -> None:
    """``others`` leaves of distinct files, then ``flood`` of FLOODED (a flood arriving
    in a log), and statistics that know it: the plan the old read got wrong."""
    PostgresStore(url).close()
    with psycopg.connect(url, autocommit=True) as c:
        _insert(c, 0, others, None)
        _insert(c, others, flood, FLOODED)
        c.execute("ANALYZE leaves")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for sub in plan.get("Plans", []):
        yield from _nodes(sub)


def _explain(c: psycopg.Connection[Any], sql: str, args: list[Any]) -> list[dict[str, Any]]:
    """The nodes of ``sql``'s executed plan (EXPLAIN ANALYZE, JSON)."""
    [[doc]] = c.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, args).fetchall()
    return list(_nodes(doc[0]["Plan"]))


def _assert_bounded(nodes: list[dict[str, Any]]) -> None:
    """The plan reads the file key index in order and stops after LIMIT rows: no sort,
    no other scan of the leaves."""
    kinds = [n["Node Type"] for n in nodes]
    assert "Sort" not in kinds and "Seq Scan" not in kinds, kinds
    [scan] = [n for n in nodes if n.get("Relation Name") == "leaves"]
    assert scan["Node Type"] == "Index Scan", kinds
    assert scan["Index Name"] == "leaves_file_key_idx"
    assert scan["Actual Rows"] * scan["Actual Loops"] == LIMIT


def test_a_flooded_hash_is_read_through_the_ordered_index(pg_url: str) -> None:
    """The store's own statement, planned with the flooded hash's statistics (the first
    calls on a connection) and as the generic plan of a prepared statement (the later
    ones), reads LIMIT index entries; the answer is the first LIMIT leaves by index."""
    _flooded_log(pg_url)
    store = PostgresStore(pg_url)
    try:
        recs = store.leaves_by_file_sha256(FLOODED, LIMIT)
        assert [r.index for r in recs] == list(range(20_000, 20_000 + LIMIT))
        assert all(r.file_sha256 == FLOODED for r in recs)
        sql, args = store._first_leaves([FLOODED], LIMIT)
    finally:
        store.close()
    sql = sql.replace("?", "%s")
    with psycopg.connect(pg_url, autocommit=True) as c:
        _assert_bounded(_explain(c, sql, args))
        c.execute(f"PREPARE first_leaves AS {sql.replace('%s', '$1')}")
        c.execute("SET plan_cache_mode = force_generic_plan")
        array = "ARRAY['\\x" + FLOODED.hex() + "'::bytea]"
        _assert_bounded(_explain(c, f"EXECUTE first_leaves({array})", []))


def test_a_schema_4_database_gets_the_ordered_index(pg_url: str) -> None:
    """A database of schema 4 (the key-only file index) migrates at the first writable
    open, by several stores at once (servers starting together): one ordered index, the
    key-only one gone, schema 5 recorded once; a read-only open before does not migrate
    it and still answers. The reads' order and limits are the same throughout."""
    _flooded_log(pg_url, others=200, flood=100)
    with psycopg.connect(pg_url, autocommit=True) as c:  # back to schema 4
        c.execute("DROP INDEX leaves_file_key_idx")
        c.execute("CREATE INDEX leaves_file_key ON leaves(substr(file_sha256, 1, 8))")
        c.execute("DELETE FROM schema_version WHERE version = 5")
        _insert(c, 300, 3, FLOODED)  # more leaves of the hash, after others
    want = list(range(200, 300)) + [300, 301, 302]
    other = hashlib.sha256(b"f7").digest()  # one leaf: 7

    def check(store: PostgresStore) -> None:
        assert [r.index for r in store.leaves_by_file_sha256(FLOODED, 5)] == want[:5]
        assert [r.index for r in store.leaves_by_file_sha256(FLOODED, 200)] == want
        assert [r.index for r in store.leaves_by_file_sha256(FLOODED)] == want
        many = store.leaves_by_file_sha256_many([other, FLOODED, FLOODED[:8] + other[8:]], 2)
        assert {h: [r.index for r in rs] for h, rs in many.items()} == {
            FLOODED: want[:2],
            other: [7],
        }

    audit = PostgresStore(pg_url, read_only=True)
    try:
        assert "schema version 4" in audit.outdated
        check(audit)
    finally:
        audit.close()

    errors: list[BaseException] = []
    opened: list[PostgresStore] = []

    def open_store() -> None:
        try:
            opened.append(PostgresStore(pg_url))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        for s in opened:
            check(s)
    finally:
        for s in opened:
            s.close()
    with psycopg.connect(pg_url, autocommit=True) as c:
        indexes = {
            r[0]: r[1]
            for r in c.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'leaves'"
            )
        }
        assert "leaves_file_key" not in indexes
        assert indexes["leaves_file_key_idx"].endswith("(substr(file_sha256, 1, 8), idx)")
        versions = [r[0] for r in c.execute("SELECT version FROM schema_version ORDER BY 1")]
        assert versions == list(range(1, SCHEMA_VERSION + 1)) and SCHEMA_VERSION == 5


@pytest.mark.parametrize("hashes", [1, 40])
def test_the_bounded_batch_read_answers_each_hash(pg_url: str, hashes: int) -> None:
    """`leaves_by_file_sha256_many` with a limit (one LATERAL statement over an array):
    each hash's first leaves by index, absent hashes and duplicates left out."""
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as c:
        _insert(c, 0, 50, None)
        _insert(c, 50, 10, FLOODED)
        _insert(c, 60, 50, None)
        _insert(c, 110, 10, FLOODED)
    at = [i for i in range(0, 110, 2) if not 50 <= i < 60][:hashes]  # one-leaf files
    files = [hashlib.sha256(f"f{i}".encode()).digest() for i in at]
    store = PostgresStore(pg_url)
    try:
        got = store.leaves_by_file_sha256_many([*files, FLOODED, FLOODED, b"\x00" * 32], 12)
        assert {h: [r.index for r in rs] for h, rs in got.items()} == {
            **{f: [i] for i, f in zip(at, files, strict=True)},
            FLOODED: [*range(50, 60), 110, 111],
        }
    finally:
        store.close()


def test_a_migration_at_start_is_logged(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """An operator upgrading `prov serve` over a PostgreSQL log saw nothing in the server's
    log say that it migrated the schema (docs/deploy.md, "Upgrading": a newcomer's
    finding). The store that migrates says from which version to which, once; a store
    opened on a current schema says nothing."""
    _flooded_log(pg_url, others=20, flood=10)
    with psycopg.connect(pg_url, autocommit=True) as c:  # back to schema 4
        c.execute("DROP INDEX leaves_file_key_idx")
        c.execute("CREATE INDEX leaves_file_key ON leaves(substr(file_sha256, 1, 8))")
        c.execute("DELETE FROM schema_version WHERE version = 5")
    caplog.set_level("INFO", logger="provenance.store.postgres")
    for _ in range(2):
        PostgresStore(pg_url).close()
    said = [r.getMessage() for r in caplog.records if "schema" in r.getMessage()]
    assert len(said) == 1, said
    assert f"schema migrated from version 4 to {SCHEMA_VERSION}" in said[0], said
