"""The PostgreSQL exact-claims read (`Store.leaves_by_file_sha256(h, 65)`, the first 65
leaves of a file hash by log index) on a flooded log, before and after PostgreSQL
migration 5 (the file key index also ordered by log index) and the LATERAL read.

One real PostgreSQL (tests/pgserver.py) holds two databases with the same leaves:
--others leaves of distinct files, then --flood leaves of one file (the newest, as a
flood arriving in a log; ANALYZE after, so the planner knows the flooded hash). "before":
the key-only index of schema 4 and the statement of c1a54bc (a UNION ALL of
``... WHERE key AND hash ORDER BY idx LIMIT n``); "after": this store as it is. Each is
timed in alternated rounds of --calls reads of the flooded hash, against the same
database's read of a one-leaf hash (the bare baseline), and on reads of a hash sharing
the flooded one's 8-byte index key (a "near miss", no leaf's); the server's own connection
pool, so psycopg prepares the statement after 5 calls as the server does; and the first 5
reads of a new connection apart (planned with the values: "first"). Prints each
read's plan (EXPLAIN ANALYZE, BUFFERS) and the ratios; writes
out/bench/pg_exact_read.json (bench/results.py).

Usage: python bench/bench_pg_exact_read.py [--others 100000] [--flood 1000 10000]
    [--rounds 4] [--calls 30]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from results import Ratio, median_seconds, write_results

from provenance.store.postgres import PostgresStore
from provenance.store.sql import SqlStore

ROOT = Path(__file__).resolve().parents[1]
FLOODED = hashlib.sha256(b"flooded file").digest()
#: A hash sharing FLOODED's 8-byte index key, no leaf's: the key index finds every leaf of
#: FLOODED and the full-hash comparison rejects each (still a read growing with the flood)
NEAR_MISS = FLOODED[:8] + bytes(24)
LIMIT = 65  # MAX_EXACT_CLAIMS + 1, as the service reads


class _Before(PostgresStore):
    """The read of c1a54bc: the shared SQL's UNION ALL statement."""

    _first_leaves = SqlStore._first_leaves


def _fill(url: str, others: int, flood: int) -> None:
    """``others`` leaves of distinct files, then ``flood`` leaves of FLOODED; ANALYZE."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        for start, n, file in ((0, others, None), (others, flood, FLOODED)):
            c.execute(
                "INSERT INTO leaves SELECT i, sha256(('l'||i)::bytea), sha256(('c'||i)::bytea),"
                " '\\xd2'::bytea, i,"
                + ("%s" if file else "sha256(('f'||i)::bytea)")
                + ", 0, 0, repeat('e', 300)::bytea FROM generate_series(%s::bigint, %s::bigint) i",
                ([file] if file else []) + [start, start + n - 1],
            )
        c.execute("ANALYZE leaves")


def _to_schema_4(url: str) -> None:
    """The file key index of schema 4 (key only) in place of migration 5's."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        c.execute("DROP INDEX leaves_file_key_idx")
        c.execute("CREATE INDEX leaves_file_key ON leaves(substr(file_sha256, 1, 8))")
        c.execute("ANALYZE leaves")


def _plan(url: str, cls: type[PostgresStore]) -> str:
    import psycopg

    store = cls(url)
    sql, args = store._first_leaves([FLOODED], LIMIT)
    store.close()
    with psycopg.connect(url, autocommit=True) as c:
        rows = c.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql.replace("?", "%s"), args)
        return "\n".join("    " + str(r[0]) for r in rows)


def _call_s(fn: Callable[[], Any]) -> float:
    """Seconds of one call of ``fn``."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--others", type=int, default=100_000)
    ap.add_argument("--flood", type=int, nargs="+", default=[1000, 10_000])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--calls", type=int, default=30)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.pgserver import PgServer

    pg = PgServer.start()
    rows: list[Ratio] = []
    try:
        for flood in args.flood:
            urls: dict[str, tuple[type[PostgresStore], str]] = {}
            for label, cls in (("before", _Before), ("after", PostgresStore)):
                url = pg.new_database()
                cls(url).close()  # the schema
                _fill(url, args.others, flood)
                if label == "before":
                    _to_schema_4(url)
                urls[label] = cls, url
                print(f"{label}, {flood} leaves of one file, plan:\n{_plan(url, cls)}")
            one = hashlib.sha256(b"f7").digest()  # a one-leaf file
            per: dict[str, list[float]] = {}
            for _ in range(args.rounds):
                for label, (cls, url) in urls.items():
                    s = cls(url, max_connections=1)  # a new connection: plans anew
                    try:
                        # psycopg prepares a statement at its 6th call; the planner plans
                        # the first 5 with the values (a "custom" plan)
                        per.setdefault(f"{label} first", []).append(
                            statistics.median(
                                _call_s(partial(s.leaves_by_file_sha256, FLOODED, LIMIT))
                                for _ in range(5)
                            )
                        )
                        assert len(s.leaves_by_file_sha256(FLOODED, LIMIT)) == LIMIT
                        assert len(s.leaves_by_file_sha256(one, LIMIT)) == 1
                        for k, h in (("flood", FLOODED), ("one", one), ("near", NEAR_MISS)):
                            t = median_seconds(
                                partial(s.leaves_by_file_sha256, h, LIMIT), args.calls
                            )
                            per.setdefault(f"{label} {k}", []).append(t)
                    finally:
                        s.close()
            med = {k: statistics.median(v) for k, v in per.items()}
            print(flood, {k: f"{v * 1e3:.2f} ms" for k, v in med.items()}, flush=True)
            rows += [
                Ratio(
                    f"{flood} leaves of one file, {path}",
                    1 / med[v],
                    name,
                    1 / med[base],
                    "reads/s",
                )
                for path, v, name, base in (
                    ("before", "before flood", "1 leaf", "before one"),
                    ("after", "after flood", "1 leaf", "after one"),
                    ("after/before", "after flood", "before", "before flood"),
                    ("after/before, first 5 reads", "after first", "before", "before first"),
                    ("after/before, a near miss", "after near", "before", "before near"),
                )
            ]
    finally:
        pg.stop()
    write_results(
        "pg_exact_read",
        rows,
        f"{args.others} other leaves, then the flood; medians of {args.rounds} alternated"
        f" rounds of {args.calls} reads",
    )


if __name__ == "__main__":
    main()
