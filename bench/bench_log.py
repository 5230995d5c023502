"""The transparency log's costs, each against a baseline from the same run.

1. Durable appends/s: the group-commit writer (one transaction and one fsync per batch,
   acknowledgement only after COMMIT) with concurrent submitters, against one SQLite
   commit per entry (synchronous=FULL) and against one bulk insert with a single commit.
2. Proof generation from the SQLite node table at 10^5 and 10^6 leaves (median, p99),
   against the same proofs from an in-memory tree.

Usage: python bench/bench_log.py [--sizes 100000 1000000] [--submitters 32] [--appends 3000]
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from results import Ratio, write_results  # bench/results.py, next to this script

from provenance.core import merkle
from provenance.core.claims import Claim, HardBinding, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, sign_payload
from provenance.core.keyhistory import KeyEvent, KeyEventKind, KeySigner, sign_key_event
from provenance.core.keys import DeviceKey
from provenance.log.checkpoint import LogSigner, generate_log_key
from provenance.server.writer import GroupCommitWriter, PendingClaim, PendingKeyEvent
from provenance.store import KEY_HISTORY_META, Store
from provenance.store.sqlite import SqliteStore
from provenance.wire import convert as wire


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def _enroll(
    store: Store, writer: GroupCommitWriter, signer: LogSigner, count: int, now: datetime
) -> list[DeviceKey]:
    """``count`` new device keys enrolled through ``writer`` (of ``store``) as the service
    enrolls them (`ProvenanceService.enroll`): a one-time token each, a key-history entry signed by
    the admin key (the log key of a server started without ``--admin-token``) committed
    with its registry row; the key history marked as kept from the log's start."""
    admin = KeySigner(signer.public_key, signer.sign_message)
    store.setdefault_meta(KEY_HISTORY_META, str(store.tree_size()))
    keys = [DeviceKey.generate() for _ in range(count)]
    pending = []
    for key in keys:
        tok = os.urandom(32)
        store.add_token(tok, "", now, now.replace(year=now.year + 1))
        ev = KeyEvent(
            KeyEventKind.ENROLLMENT, key.key_id, now, key.public_key, authorised_by="token"
        )
        pending.append(PendingKeyEvent(sign_key_event(admin, wire.encode_key_event(ev)), ev, tok))
    writer.submit_key_events(pending)
    return keys


def writer_rate(
    stores: Sequence[Store], key: Path, submitters: int, total: int, max_batch: int = 512
) -> float:
    """Durable appends/s through one group-commit writer per store (several stores over
    one database act as several servers), submitter i feeding writer i % len(stores),
    with at most ``max_batch`` claims per commit. The devices are enrolled and their
    claims signed before the clock starts: the database is a log an honest server
    writes (a full `prov log audit --db` passes it)."""
    signer = generate_log_key(key, "bench.local/log")
    now = datetime.now(UTC)
    writers = [
        GroupCommitWriter(s, signer, lambda: datetime.now(UTC), lambda *a: None, max_batch)
        for s in stores
    ]
    devices = _enroll(stores[0], writers[0], signer, submitters, now)

    def pending(dev: DeviceKey, seq: int) -> PendingClaim:
        claim = Claim(dev.key_id, seq, now, "image/jpeg", 1, HardBinding(os.urandom(32)))
        data = wire.encode_claim(claim)
        sig = sign_payload(dev, PAYLOAD_TYPE_CLAIM, data)
        return PendingClaim(SignedClaim(PAYLOAD_TYPE_CLAIM, data, dev.key_id, sig), claim)

    per = total // submitters
    work_items = [[pending(d, s + 1) for s in range(per)] for d in devices]

    def run(items: list[PendingClaim], writer: GroupCommitWriter) -> None:
        for p in items:
            writer.submit(p)

    threads = [
        threading.Thread(target=run, args=(w, writers[i % len(writers)]))
        for i, w in enumerate(work_items)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = per * submitters / (time.perf_counter() - t0)
    for w in writers:
        w.close()
    return rate


def _sqlite_rate(work: Path, tag: str, submitters: int, total: int, max_batch: int) -> float:
    store = SqliteStore(work / f"appends-{tag}.db")
    try:
        return writer_rate([store], work / f"appends-{tag}.key", submitters, total, max_batch)
    finally:
        store.close()


def bench_appends(work: Path, submitters: int, total: int) -> list[Ratio]:
    group = _sqlite_rate(work, "group", submitters, total, max_batch=512)
    one = _sqlite_rate(work, "one", submitters, total // 4, max_batch=1)

    con = sqlite3.connect(work / "single.db", isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE t (idx INTEGER PRIMARY KEY, leaf BLOB, entry BLOB)")
    n_single = min(300, total)
    t0 = time.perf_counter()
    for i in range(n_single):
        con.execute("BEGIN")
        con.execute("INSERT INTO t VALUES (?, ?, ?)", (i, os.urandom(32), os.urandom(250)))
        con.execute("COMMIT")
    single = n_single / (time.perf_counter() - t0)
    rows = [(i, os.urandom(32), os.urandom(250)) for i in range(n_single, n_single + 100_000)]
    t0 = time.perf_counter()
    con.execute("BEGIN")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    con.execute("COMMIT")
    bulk = len(rows) / (time.perf_counter() - t0)
    con.close()
    print(f"durable appends, {submitters} concurrent submitters")
    print(f"  group commit (service writer):  {group:10.0f} appends/s")
    print(f"  same writer, one claim/commit:  {one:10.0f} appends/s   ratio {group / one:7.2f}x")
    print(
        f"  bare SQLite, one commit/row:    {single:10.0f} rows/s      ratio {group / single:7.2f}x"
    )
    print(f"  bulk insert, one commit:        {bulk:10.0f} rows/s      ratio {group / bulk:7.4f}")
    return [
        Ratio(
            f"durable appends, {submitters} submitters",
            group,
            "SQLite batched insert",
            bulk,
            "rows/s",
        ),
        Ratio("durable appends, group vs one per commit", group, "one claim/commit", one, "rows/s"),
    ]


def bench_proofs(work: Path, size: int, samples: int) -> list[Ratio]:
    mem = merkle.MemoryTree()
    store = SqliteStore(work / f"proofs-{size}.db")
    rng = random.Random(size)
    batch = 50_000
    t0 = time.perf_counter()
    for start in range(0, size, batch):
        hashes = [rng.randbytes(32) for _ in range(min(batch, size - start))]
        for h in hashes:
            mem.append_leaf_hash(h)
        with store.append() as txn:
            txn.put_nodes(merkle.append_batch(start, hashes, txn.get_nodes))
    build = time.perf_counter() - t0
    assert merkle.root(size, store.get_nodes) == mem.root()
    print(f"proofs at {size:,} leaves (tree built in {build:.1f} s)")
    rows: list[Ratio] = []
    for kind in ("inclusion", "consistency"):
        t_db: list[float] = []
        t_mem: list[float] = []
        for _ in range(samples):
            if kind == "inclusion":
                i = rng.randrange(size)
                args: tuple[int, int] = (i, size)
                # (index, size) or (size1, size2), then the node reader -> the proof's hashes
                fn: Callable[[int, int, merkle.NodeReader], list[bytes]] = merkle.inclusion_proof
            else:
                m = rng.randrange(1, size)
                args = (m, size)
                fn = merkle.consistency_proof
            t0 = time.perf_counter()
            p_db = fn(*args, store.get_nodes)
            t_db.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            p_mem = fn(*args, mem.get_nodes)
            t_mem.append(time.perf_counter() - t0)
            assert p_db == p_mem
        med_db, med_mem = statistics.median(t_db), statistics.median(t_mem)
        print(
            f"  {kind:11s} SQLite median {med_db * 1e3:7.3f} ms p99 {_pct(t_db, 0.99) * 1e3:7.3f} ms |"
            f" memory median {med_mem * 1e3:7.3f} ms p99 {_pct(t_mem, 0.99) * 1e3:7.3f} ms |"
            f" ratio {med_db / med_mem:5.1f}x"
        )
        rows.append(
            Ratio(
                f"{kind} proofs from SQLite, {size:,} leaves",
                1 / med_db,
                "in-memory tree",
                1 / med_mem,
                "proofs/s",
            )
        )
    store.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--submitters", type=int, default=32)
    ap.add_argument("--appends", type=int, default=3000)
    ap.add_argument("--samples", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = bench_appends(work, args.submitters, args.appends)
        for size in args.sizes:
            rows += bench_proofs(work, size, args.samples)
    write_results("log", rows)


if __name__ == "__main__":
    main()
