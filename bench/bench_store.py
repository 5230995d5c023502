"""The store at scale (issues 12 and 15), each figure against a baseline from the same run,
on a cached SQLite log of N realistic captures (default 10^6, `bench/biglog.py`).

1. Store size: bytes per capture (file size after VACUUM INTO / entries, the index packs
   included) now that
   receipts are rebuilt on demand, against the layout that stored every receipt whole
   (now + the mean encoded size of 1,000 sampled receipts, rebuilt); with --pg, also
   PostgreSQL's pg_total_relation_size over every table, at --pg-leaves captures.
2. Start-up (`ProvenanceService` construction, the default checks; the median of
   --repeat starts): after (the near-duplicate index read from stored packs, its tables
   built in the background while lookups scan) against before (every soft-hash row
   decoded into a `PerceptualHash`, then the tables built before the first lookup
   returns; measured on the first --before-leaves leaves and scaled linearly); the time
   until the index is warm, a lookup while warming and after. --big N adds an estimate
   at N entries (the pack load measured on synthetic packs of random hashes plus this
   run's O(log n) part); at 10^7 the real log is measured instead with --leaves 10000000
   (`bench/biglog.py` builds it once and caches it: its docstring gives the time).
3. The start-up re-hash of the leaves after the verified mark (--rehash of them): the raw
   entry fields against the raw columns, against entries and claims decoded into
   dataclasses and datetimes (before).
4. Durable appends/s through the group-commit writer on a copy of the log (acknowledged
   only after COMMIT, synchronous=FULL: the WAL fsynced), --submitters concurrent
   submitters, each an asyncio task that submits its next claim once the last one is
   acknowledged (as SubmitCapture on the asyncio server), against a SQLite batched insert
   of the same rows (leaves, soft hashes, Merkle nodes, one checkpoint and the device
   rows per batch of the writer's mean batch size, each batch one durable commit, the
   same page cache and WAL checkpoints on a thread as the store) into a fresh copy of
   the same log. Each copy is written back to disk (sync) before its clock starts.
   --repeat runs, medians reported.

Usage: python bench/bench_store.py [--leaves 1000000] [--parts size startup rehash appends]
    [--submitters 256] [--appends 6000] [--repeat 3] [--big 0] [--pg --pg-leaves 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from biglog import ORIGIN, build_log, cached_log, signer_of  # bench/biglog.py
from results import Ratio, write_results  # bench/results.py, next to this script

from provenance.core import merkle
from provenance.core.binding import PerceptualHash
from provenance.core.claims import Claim, HardBinding, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM
from provenance.index.mih import MihIndex, _build
from provenance.index.packs import DIGEST_KEY, PACK_LEAVES, load_index, pack_digest, write_packs
from provenance.server.service import ProvenanceService, ServiceConfig
from provenance.server.startup import check_index_row
from provenance.server.writer import GroupCommitWriter, PendingClaim
from provenance.store import HashPack, LeafRecord
from provenance.store.sql import _leaf
from provenance.store.sqlite import (
    CHECKPOINT_INTERVAL_S,
    WAL_CHECKPOINT_PAGES,
    WRITER_CACHE_KIB,
    SqliteStore,
)
from provenance.wire import convert as wire

ROOT = Path(__file__).resolve().parents[1]


def _vacuumed_size(db: Path, work: Path) -> int:
    out = work / "vacuumed.db"
    out.unlink(missing_ok=True)
    with sqlite3.connect(db) as c:
        c.execute("VACUUM INTO ?", (str(out),))
    size = out.stat().st_size
    out.unlink()
    return size


def bench_size(db: Path, key: Path, leaves: int, work: Path) -> tuple[list[Ratio], dict[str, Any]]:
    svc = ProvenanceService(ServiceConfig(db=db, log_key=key, origin=ORIGIN))  # stores packs
    after = _vacuumed_size(db, work) / leaves
    try:
        rng = np.random.default_rng(1)
        sample = [int(i) for i in rng.integers(0, leaves, 1000)]
        receipt = statistics.mean(
            len(wire.encode_receipt(svc._receipt(rec)))
            for i in sample
            if (rec := svc.store.leaf_by_index(i)) is not None
        )
    finally:
        svc.close()
    before = after + receipt
    print(f"store size at {leaves:,} captures (after VACUUM)")
    print(f"  receipts rebuilt on demand: {after:8.0f} bytes per capture")
    print(
        f"  receipts stored whole:      {before:8.0f} bytes per capture (mean receipt {receipt:.0f} B)"
    )
    row = Ratio(
        f"captures per MB of SQLite store, {leaves:,}",
        1e6 / after,
        "receipts stored whole",
        1e6 / before,
        "captures/MB",
    )
    return [row], {"bytes_per_capture": after, "bytes_per_capture_before": before}


def bench_pg_size(leaves: int, work: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from provenance.log.checkpoint import generate_log_key
    from provenance.store.postgres import PostgresStore
    from tests.pgserver import PgServer

    pg = PgServer.start()
    try:
        url = pg.new_database()
        store = PostgresStore(url)
        build_log(store, generate_log_key(work / "pg.logkey.pem", ORIGIN), leaves)
        write_packs(store, 0, leaves)  # as the running server does
        with store._read() as c:
            c.execute("VACUUM FULL")
            (total,) = c.execute(
                "SELECT SUM(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n"
                " ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'"
            ).fetchone()
        store.close()
    finally:
        pg.stop()
    per = int(total) / leaves
    print(
        f"  PostgreSQL, {leaves:,} captures: {per:8.0f} bytes per capture (pg_total_relation_size)"
    )
    return {"pg_leaves": leaves, "pg_bytes_per_capture": per}


def _old_index(db: Path, limit: int) -> float:
    """The start-up index load before packs: every soft-hash row decoded into a
    PerceptualHash and added one by one, then the tables built before the first lookup;
    of the first ``limit`` leaves."""
    t0 = time.perf_counter()
    m = MihIndex()
    con = sqlite3.connect(db)
    start, page = 0, 10_000
    video = False
    while start < limit:
        rows = con.execute(
            "SELECT leaf_idx, algorithm, hash, quality, timestamp_seconds FROM soft_hashes"
            " WHERE leaf_idx>=? AND leaf_idx<? ORDER BY leaf_idx",
            (start, start + page),
        ).fetchall()
        if not rows:
            break
        items = [
            (int(i), PerceptualHash(str(a), bytes(h), int(q), float(ts))) for i, a, h, q, ts in rows
        ]
        video |= any(h.timestamp_seconds > 0 for _, h in items)
        m.add_many(items)
        start += page
    con.close()
    with m._lock:
        m._fold_lists()
        ids = np.concatenate([i for i, _ in m._pending_arrays])
        words = np.vstack([w for _, w in m._pending_arrays])
    _build(words, ids)
    return time.perf_counter() - t0


def _lookup_s(svc: ProvenanceService) -> float:
    q = PerceptualHash("pdq", os.urandom(32), 100)
    t0 = time.perf_counter()
    svc.pdq.search(q)
    return time.perf_counter() - t0


def bench_startup(
    db: Path, key: Path, leaves: int, work: Path, big: int, before_leaves: int, repeat: int
) -> tuple[list[Ratio], dict[str, Any]]:
    cfg = ServiceConfig(db=db, log_key=key, origin=ORIGIN)
    t0 = time.perf_counter()
    ProvenanceService(cfg).close()  # the first start of a log without packs stores them
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    svc = ProvenanceService(cfg)
    starts = [time.perf_counter() - t0]
    warming_lookup = _lookup_s(svc) if svc.pdq.warming else float("nan")
    svc.pdq.wait_warm()
    warm = time.perf_counter() - t0
    lookup = statistics.median(_lookup_s(svc) for _ in range(20))
    fixed = starts[0] - svc.index_load_seconds  # opening, checks from the mark: O(log n)
    svc.close()
    for _ in range(repeat - 1):
        t0 = time.perf_counter()
        svc = ProvenanceService(cfg)
        starts.append(time.perf_counter() - t0)
        svc.pdq.wait_warm()  # not building tables behind the next start
        svc.close()
    start = statistics.median(starts)
    # before, linear in the log: measured on at most --before-leaves leaves, scaled
    measured = min(leaves, before_leaves)
    old = _old_index(db, measured) * leaves / measured
    before = fixed + old
    print(f"start-up at {leaves:,} entries (default checks)")
    print(f"  before (rows decoded, tables built first): {before:8.2f} s")
    runs = ", ".join(f"{x:.2f}" for x in starts)
    print(
        f"  after (packs, tables in the background):   {start:8.2f} s   ({before / start:.1f}x; runs {runs})"
    )
    print(
        f"    of which checks and opening {fixed:.2f} s; first start, storing packs, {first:.2f} s"
    )
    print(
        f"  warm (tables built) after {warm:.2f} s; lookup while warming {warming_lookup * 1e3:.1f} ms, warm {lookup * 1e3:.2f} ms"
    )
    out: dict[str, Any] = {
        "leaves": leaves,
        "start_before_s": before,
        "start_before_measured_leaves": measured,
        "start_after_s": start,
        "start_runs_s": [round(x, 2) for x in starts],
        "first_start_after_s": first,
        "checks_s": fixed,
        "warm_after_s": warm,
        "lookup_warming_ms": warming_lookup * 1e3,
        "lookup_warm_ms": lookup * 1e3,
    }
    rows = [
        Ratio(
            f"start-up at {leaves:,} entries",
            1 / start,
            "rows decoded (before)",
            1 / before,
            "starts/s",
        )
    ]
    if big:
        packs = big // PACK_LEAVES
        store = SqliteStore(work / "packs.db")
        store._writer.execute("PRAGMA synchronous=OFF")
        rng = np.random.default_rng(2)
        for k in range(packs):
            ids = np.arange(k * PACK_LEAVES, (k + 1) * PACK_LEAVES, dtype=np.int64)
            words = rng.integers(0, 2**63, (PACK_LEAVES, 4), dtype=np.uint64)
            pack = HashPack(int(ids[0]), int(ids[-1]) + 1, ids, words, False)
            store.put_pack(pack)  # with its digest, as `write_packs` stores it
            store.set_meta(DIGEST_KEY.format(first=pack.first), pack_digest(pack))
        n = packs * PACK_LEAVES
        t0 = time.perf_counter()
        loaded = load_index(store, n)
        m = MihIndex()
        for part in loaded.parts:
            m.add_arrays(part.ids, part.words)
        m.prepare()
        load = time.perf_counter() - t0
        q = PerceptualHash("pdq", os.urandom(32), 100)
        t1 = time.perf_counter()
        m.search(q)
        scan = time.perf_counter() - t1
        m.wait_warm()
        big_warm = time.perf_counter() - t0
        store.close()
        del loaded, m
        est_after = fixed + load
        est_before = fixed + old * n / leaves
        print(f"start-up at {n:,} entries (estimate: packs measured, checks from this run)")
        print(f"  before {est_before:8.1f} s, after {est_after:8.2f} s ({est_before / est_after:.0f}x);"
              f" index load {load:.2f} s, warm after {big_warm:.1f} s, lookup while warming {scan * 1e3:.0f} ms")  # fmt: skip
        out |= {
            "est_leaves": n,
            "est_start_before_s": est_before,
            "est_start_after_s": est_after,
            "est_index_load_s": load,
            "est_warm_s": big_warm,
            "est_lookup_warming_ms": scan * 1e3,
        }
        rows.append(Ratio(f"start-up at {n:,} entries (est.)", 1 / est_after, "rows decoded (before)", 1 / est_before, "starts/s"))  # fmt: skip
    return rows, out


def _old_check(rec: LeafRecord) -> None:
    """The start-up check of one leaf before: entry and claim decoded into dataclasses."""
    signed, integrated_at = wire.decode_log_entry(rec.entry)
    claim = wire.decode_claim(signed.claim_bytes)
    if (
        rec.claim_hash != signed.claim_hash
        or rec.file_sha256 != claim.hard_binding.sha256
        or rec.device_id != claim.device_id
        or rec.sequence != claim.sequence
        or rec.integrated_at != integrated_at
    ):
        raise AssertionError(f"leaf {rec.index} differs")


def bench_rehash(db: Path, leaves: int, count: int) -> tuple[list[Ratio], dict[str, Any]]:
    """Leaves/s re-hashed and checked at start (the leaves after the verified mark)."""
    store = SqliteStore(db)
    start = leaves - count
    t0 = time.perf_counter()
    for row in store.iter_index_rows(start):
        if merkle.leaf_hash(row[7]) != row[1]:
            raise AssertionError("leaf hash")
        check_index_row(row)
    after = count / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(start, leaves, 10_000):
        with store._read() as c:
            rows = c.execute(
                "SELECT idx, leaf_hash, claim_hash, device_id, sequence, file_sha256,"
                " integrated_at, chain_linked, entry FROM leaves WHERE idx>=? ORDER BY idx"
                " LIMIT 10000",
                (i,),
            ).fetchall()
        for r in map(_leaf, rows):
            if merkle.leaf_hash(r.entry) != r.leaf_hash:
                raise AssertionError("leaf hash")
            _old_check(r)
    before = count / (time.perf_counter() - t0)
    store.close()
    print(f"start-up re-hash of the {count:,} leaves after the mark, at {leaves:,}")
    print(
        f"  raw fields: {after:9.0f} leaves/s; decoded into claims (before) {before:9.0f} ({after / before:.1f}x)"
    )
    ratio = Ratio(
        f"start-up re-hash at {leaves:,}", after, "claims decoded (before)", before, "leaves/s"
    )
    return [ratio], {"rehash_per_s": after, "rehash_before_per_s": before}


def _writer_run(
    db: Path, key: Path, submitters: int, total: int, mode: str = "asyncio"
) -> tuple[float, float, int, int]:
    """(appends/s, CPU seconds per append over all threads, leaves before, commits) of
    the group-commit writer on ``db``:
    ``submitters`` concurrent callers, each submitting its next claim once the last one
    is acknowledged; asyncio tasks awaiting `GroupCommitWriter.submit_async` as the
    asyncio server's SubmitCapture does (``mode`` "asyncio"), or threads blocking in
    `submit`."""
    store = SqliteStore(db, exclusive=True)  # as a server opens it
    store.started()  # and once its start-up checks passed: the WAL is checkpointed
    signer = signer_of(key)
    with store._read() as c:
        devs = c.execute("SELECT device_id, last_sequence FROM devices").fetchall()
    now = datetime.now(UTC)
    n0 = store.tree_size()
    (c0,) = store._writer.execute("SELECT COUNT(*) FROM checkpoints").fetchone()
    per = total // submitters

    def pending(dev: bytes, seq: int) -> PendingClaim:
        claim = Claim(dev, seq, now, "image/jpeg", 3_000_000, HardBinding(os.urandom(32)),
                      (PerceptualHash("pdq", os.urandom(32), 100),), 4032, 3024)  # fmt: skip
        data = wire.encode_claim(claim)
        return PendingClaim(SignedClaim(PAYLOAD_TYPE_CLAIM, data, dev, os.urandom(64)), claim)

    work = [[pending(bytes(d), int(s) + 1 + k) for k in range(per)] for d, s in devs[:submitters]]
    writer = GroupCommitWriter(store, signer, lambda: datetime.now(UTC), lambda *a: None, 512)
    os.sync()  # the copy's dirty pages written back now, not under the timed commits

    def run(items: list[PendingClaim]) -> None:
        for p in items:
            writer.submit(p)

    async def run_async(items: list[PendingClaim]) -> None:
        for p in items:  # as SubmitCapture on the asyncio server
            await writer.submit_async(p)

    async def all_async() -> None:
        await asyncio.gather(*(run_async(w) for w in work))

    t0, cpu0 = time.perf_counter(), time.process_time()
    if mode == "asyncio":
        asyncio.run(all_async())
    else:
        threads = [threading.Thread(target=run, args=(w,)) for w in work]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    rate = per * len(work) / (time.perf_counter() - t0)
    writer.close()  # every submission is acknowledged: this only stops its threads
    cpu = (time.process_time() - cpu0) / (per * len(work))
    (c1,) = store._writer.execute("SELECT COUNT(*) FROM checkpoints").fetchone()
    store.close()
    return rate, cpu, n0, int(c1) - int(c0)


Rows = dict[str, list[tuple[Any, ...]]]


def _new_rows(src: Path, n0: int) -> Rows:
    """The rows the writer added to ``src`` after leaf ``n0``: leaves, soft hashes, Merkle
    nodes and checkpoints."""
    s = sqlite3.connect(src)
    rows = {
        "leaves": s.execute("SELECT * FROM leaves WHERE idx>=? ORDER BY idx", (n0,)).fetchall(),
        "soft": s.execute(
            "SELECT * FROM soft_hashes WHERE leaf_idx>=? ORDER BY leaf_idx", (n0,)
        ).fetchall(),
        "nodes": s.execute(
            "SELECT level, idx, hash FROM nodes WHERE (idx << level) >= ?", (n0,)
        ).fetchall(),
        "cps": s.execute("SELECT * FROM checkpoints WHERE size>? ORDER BY size", (n0,)).fetchall(),
    }
    s.close()
    return rows


def _insert_run(new: Rows, dst: Path, n0: int, batch: int) -> tuple[float, float]:
    """(rows/s, CPU seconds per row) of a SQLite batched insert into ``dst`` of the rows
    ``new`` (`_new_rows` after leaf ``n0``), ``batch`` leaves per durable commit."""
    leaves, soft, nodes, cps = new["leaves"], new["soft"], new["nodes"], new["cps"]
    c = sqlite3.connect(dst, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=FULL")
    c.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")  # as the store's writer
    c.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    n = len(leaves)
    stop = threading.Event()

    def checkpoints() -> None:  # as the store's checkpoint thread
        cc = sqlite3.connect(dst)
        while not stop.wait(CHECKPOINT_INTERVAL_S):
            cc.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        cc.close()

    # each batch's rows, cut before the clock starts
    parts = [
        (
            leaves[lo : lo + batch],
            [r for r in soft if n0 + lo <= r[0] < n0 + lo + batch],
            [r for r in nodes if n0 + lo <= r[1] << r[0] < n0 + lo + batch],
            cps[min(k, len(cps) - 1)],
            [(r[4], r[2], r[3]) for r in leaves[lo : lo + batch]],
        )
        for k, lo in enumerate(range(0, n, batch))
    ]
    insert_leaves = f"INSERT INTO leaves VALUES ({','.join('?' * len(leaves[0]))})"
    checkpointer = threading.Thread(target=checkpoints)
    checkpointer.start()
    os.sync()
    t0, cpu0 = time.perf_counter(), time.process_time()
    for rows, soft_rows, node_rows, cp, dev_rows in parts:
        c.execute("BEGIN IMMEDIATE")
        c.executemany(insert_leaves, rows)
        c.executemany("INSERT INTO soft_hashes VALUES (?,?,?,?,?)", soft_rows)
        c.executemany("INSERT OR IGNORE INTO nodes VALUES (?,?,?)", node_rows)
        c.execute("INSERT OR REPLACE INTO checkpoints VALUES (?,?,?)", cp)
        c.executemany(
            "UPDATE devices SET last_sequence=?, last_claim_hash=? WHERE device_id=?", dev_rows
        )
        c.execute("COMMIT")
    rate = n / (time.perf_counter() - t0)
    stop.set()
    checkpointer.join()
    cpu = (time.process_time() - cpu0) / n
    c.close()
    return rate, cpu


def _copy(db: Path, to: Path) -> None:
    """A copy of the closed cached log (no WAL beside it), written back to disk before
    anything is timed. An earlier copy at ``to`` is removed first, with its WAL."""
    for p in (to, Path(f"{to}-wal"), Path(f"{to}-shm")):
        p.unlink(missing_ok=True)
    if Path(f"{db}-wal").exists():
        with sqlite3.connect(db) as c:
            c.execute("VACUUM INTO ?", (str(to),))
    else:
        shutil.copyfile(db, to)
    os.sync()


def bench_appends(
    db: Path, key: Path, leaves: int, work: Path, submitters: int, total: int, repeat: int
) -> tuple[list[Ratio], dict[str, Any]]:
    """Durable appends (see module docstring, part 4), ``repeat`` times on fresh copies
    (one copy of the log on disk at a time: the writer's, then the insert's); medians
    reported."""
    copy = work / "appends.db"
    rates: list[float] = []
    bulks: list[float] = []
    cpus: list[float] = []
    bulk_cpus: list[float] = []
    batches: list[int] = []
    for _ in range(repeat):
        _copy(db, copy)
        rate, cpu, n0, commits = _writer_run(copy, key, submitters, total)
        mean_batch = max(1, round(total / max(1, commits)))
        new = _new_rows(copy, n0)
        _copy(db, copy)
        bulk, bulk_cpu = _insert_run(new, copy, n0, mean_batch)
        copy.unlink()
        rates.append(rate)
        bulks.append(bulk)
        cpus.append(cpu)
        bulk_cpus.append(bulk_cpu)
        batches.append(mean_batch)
        print(f"durable appends at {leaves:,} leaves, {submitters} concurrent submitters")
        print(
            f"  group-commit writer:             {rate:9.0f} appends/s ({commits} commits, mean batch {mean_batch}); {cpu * 1e6:.0f} us CPU each"
        )
        print(
            f"  SQLite batched insert, same rows: {bulk:9.0f} rows/s    ratio {rate / bulk:.2f}; {bulk_cpu * 1e6:.0f} us CPU each"
        )
    rate, bulk = statistics.median(rates), statistics.median(bulks)
    cpu, bulk_cpu = statistics.median(cpus), statistics.median(bulk_cpus)
    ratios = [r / x for r, x in zip(rates, bulks, strict=True)]
    if repeat > 1:
        print(f"  medians of {repeat}: {rate:.0f} appends/s, {bulk:.0f} rows/s, ratio"
              f" {statistics.median(ratios):.2f} (runs {', '.join(f'{x:.2f}' for x in ratios)});"
              f" CPU per append {cpu * 1e6:.0f} us, per inserted row {bulk_cpu * 1e6:.0f} us")  # fmt: skip
    row = Ratio(
        f"durable appends at {leaves:,} leaves",
        rate,
        "SQLite batched insert, same rows",
        bulk,
        "rows/s",
    )
    return [row], {
        "appends_per_s": rate,
        "insert_rows_per_s": bulk,
        "appends_ratio_median": statistics.median(ratios),
        "appends_runs": [round(x) for x in rates],
        "insert_runs": [round(x) for x in bulks],
        "mean_batch": statistics.median(batches),
        "submitters": submitters,
        "appends_per_run": total,
        "cpu_us_per_append": cpu * 1e6,
        "cpu_us_per_insert_row": bulk_cpu * 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leaves", type=int, default=1_000_000)
    ap.add_argument("--parts", nargs="+", choices=["size", "startup", "rehash", "appends"], default=["size", "startup", "rehash", "appends"])  # fmt: skip
    ap.add_argument(
        "--big", type=int, default=10_000_000, help="start-up estimate at this size (0: none)"
    )
    ap.add_argument(
        "--before-leaves",
        type=int,
        default=1_000_000,
        help="start-up before: measured on this many leaves, scaled to the log",
    )
    ap.add_argument("--submitters", type=int, default=256)
    ap.add_argument("--rehash", type=int, default=100_000, help="leaves re-hashed after the mark")
    ap.add_argument("--appends", type=int, default=6000)
    ap.add_argument(
        "--repeat", type=int, default=1, help="starts and append runs (medians reported)"
    )
    ap.add_argument("--json", default="store", help="results in out/bench/JSON.json")
    ap.add_argument("--pg", action="store_true", help="also measure PostgreSQL's size")
    ap.add_argument("--pg-leaves", type=int, default=100_000)
    args = ap.parse_args()
    db, key = cached_log(args.leaves)
    rows: list[Ratio] = []
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=db.parent) as tmp:
        work = Path(tmp)
        if "size" in args.parts:
            r, f = bench_size(db, key, args.leaves, work)
            rows += r
            figures |= f
            if args.pg:
                figures |= bench_pg_size(args.pg_leaves, work)
        if "startup" in args.parts:
            r, f = bench_startup(
                db, key, args.leaves, work, args.big, args.before_leaves, args.repeat
            )
            rows += r
            figures |= f
        if "rehash" in args.parts:
            r, f = bench_rehash(db, args.leaves, min(args.leaves, args.rehash))
            rows += r
            figures |= f
        if "appends" in args.parts:
            r, f = bench_appends(
                db, key, args.leaves, work, args.submitters, args.appends, args.repeat
            )
            rows += r
            figures |= f
    write_results(
        args.json,
        rows,
        note=json.dumps(
            {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
        ),
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
