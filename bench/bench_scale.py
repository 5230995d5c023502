"""Scale-out and start-up (issue 12), each as a ratio against a baseline from the same run.

1. Durable appends/s through the group-commit writer (acknowledged only after COMMIT):
   PostgreSQL with 1 writer and with 3 writers over one database (3 servers: appends
   serialised by the advisory lock), against SQLite (one writer).
2. SubmitCapture/s end to end through real `prov serve` processes and gRPC clients:
   PostgreSQL with 1 and 3 servers, against 1 server on SQLite.
3. Start-up at N log entries (default 10^6): the check before this change (every entry
   re-hashed, now `--full-check`) against after (a signed verified mark at the head:
   O(log n) reads), the check alone and the whole service start (which also loads the
   near-duplicate index: from the rows at a first start, from its stored packs after);
   and an estimate at 10^7 (the O(n) parts scaled linearly). `bench/bench_store.py` has
   the start-up before and after the index packs, at 10^6 and 10^7. The log is built directly in the store with one device and
   placeholder signatures and receipts (start-up never checks those).

PostgreSQL: a temporary cluster from the Debian package (tests/pgserver.py).
All processes share this machine's cores, so only same-run ratios mean much.

Usage: nice -n 19 python bench/bench_scale.py [--leaves 1000000] [--appends 3000]
       [--submits 1500] [--parts appends submits startup] [--json out/bench_scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_log import writer_rate  # noqa: E402

from clients.api import ProvenanceClient  # noqa: E402
from provenance.core import merkle  # noqa: E402
from provenance.core.binding import PerceptualHash  # noqa: E402
from provenance.core.claims import Claim, HardBinding, SignedClaim  # noqa: E402
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM  # noqa: E402
from provenance.log.checkpoint import (  # noqa: E402
    Checkpoint,
    NoteVerifier,
    generate_log_key,
    load_log_signer,
)
from provenance.server.service import ProvenanceService, ServiceConfig  # noqa: E402
from provenance.server.startup import check_log_at_start  # noqa: E402
from provenance.store import NewLeaf  # noqa: E402
from provenance.store.postgres import PostgresStore  # noqa: E402
from provenance.store.sqlite import SqliteStore  # noqa: E402
from provenance.wire import convert as wire  # noqa: E402
from tests.conftest import ADMIN_TOKEN, PG_LOG_KEYS, enroll_key, signed_claim, start_server  # noqa: E402
from tests.pgserver import PgServer  # noqa: E402


def bench_appends(work: Path, new_db: Any, submitters: int, total: int) -> dict[str, float]:
    lite = SqliteStore(work / "appends.db")
    sqlite = writer_rate([lite], work / "appends-sqlite.key", submitters, total)
    lite.close()
    out = {"sqlite_1": sqlite}
    for n in (1, 3):
        url = new_db()
        stores = [PostgresStore(url) for _ in range(n)]
        out[f"postgresql_{n}"] = writer_rate(stores, work / f"appends-pg{n}.key", submitters, total)
        for s in stores:
            s.close()
    print(f"durable appends/s, {submitters} concurrent submitters (group commit)")
    for k, v in out.items():
        print(f"  {k:14s} {v:9.0f} appends/s   ratio to SQLite {v / sqlite:6.2f}")
    return out


def _submit_rate(db: Path | str, servers: int, devices: int, total: int) -> float:
    procs = [start_server(db)]
    procs += [start_server(db) for _ in range(servers - 1)]
    try:
        with ProvenanceClient(procs[0].address, admin_token=ADMIN_TOKEN) as c:
            keys = [enroll_key(c) for _ in range(devices)]
        per = total // devices
        claims = [[signed_claim(k, s + 1) for s in range(per)] for k in keys]

        def run(i: int) -> None:
            clients = [ProvenanceClient(p.address) for p in procs]
            for j, sc in enumerate(claims[i]):
                clients[(i + j) % len(clients)].submit(sc)
            for c in clients:
                c.close()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(devices)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return per * devices / (time.perf_counter() - t0)
    finally:
        for p in procs:
            p.stop()


def bench_submits(work: Path, new_db: Any, devices: int, total: int) -> dict[str, float]:
    sqlite = _submit_rate(work / "submit.db", 1, devices, total)
    out = {"sqlite_1": sqlite}
    for n in (1, 3):
        url = new_db()
        PG_LOG_KEYS[url] = work / f"submit-pg{n}.logkey.pem"
        out[f"postgresql_{n}"] = _submit_rate(url, n, devices, total)
    print(f"SubmitCapture/s, {devices} concurrent devices through real servers")
    for k, v in out.items():
        print(f"  {k:14s} {v:9.0f} calls/s     ratio to SQLite {v / sqlite:6.2f}")
    return out


def _build_log(
    db: Path,
    key: Path,
    leaves: int,
    code: Callable[[int], bytes] | None = None,
    device: Callable[[int], bytes] | None = None,
) -> None:
    """A SQLite log of ``leaves`` entries (one PDQ hash each: ``code`` of the leaf's
    index, random when None), of one device or ``device`` of the leaf's index (32-byte
    ids, not enrolled), built in batches."""
    store = SqliteStore(db)
    signer = generate_log_key(key, "bench.local/log")
    store.set_meta("origin", signer.name)
    store.set_meta("log_verifier_key", signer.verifier_key())
    dev, now, batch = os.urandom(32), datetime.now(UTC), 20_000
    t0 = time.perf_counter()
    for start in range(0, leaves, batch):
        new = []
        for i in range(start, min(leaves, start + batch)):
            pdq = PerceptualHash("pdq", os.urandom(32) if code is None else code(i), 90)
            if device is not None:
                dev = device(i)
            claim = Claim(dev, i + 1, now, "image/jpeg", 1, HardBinding(os.urandom(32)), (pdq,))
            signed = SignedClaim(PAYLOAD_TYPE_CLAIM, wire.encode_claim(claim), dev, b"\0" * 64)
            entry = wire.encode_log_entry(signed, now)
            new.append(
                NewLeaf(merkle.leaf_hash(entry), signed, dev, i + 1, claim.hard_binding.sha256,
                        now, True, entry, (pdq,))
            )  # fmt: skip
        with store.append() as txn:
            txn.put_nodes(merkle.append_batch(start, [lf.leaf_hash for lf in new], txn.get_nodes))
            txn.insert_leaves(start, new)
            if start + len(new) == leaves:
                root = merkle.root(leaves, txn.get_nodes)
                txn.put_checkpoint(
                    leaves, signer.sign(Checkpoint(signer.name, leaves, root, now)), now
                )
        print(f"\r  building the log: {start + len(new):,} / {leaves:,}", end="", flush=True)
    print(f"  ({time.perf_counter() - t0:.0f} s)")
    store.close()


def bench_startup(work: Path, leaves: int) -> dict[str, float]:
    db, key = work / "startup.db", work / "startup.logkey.pem"
    _build_log(db, key, leaves)
    store = SqliteStore(db)
    signer = load_log_signer(key, "bench.local/log")
    verifier = NoteVerifier.from_vkey(signer.verifier_key())
    t0 = time.perf_counter()
    check_log_at_start(store, signer, verifier, "all")  # before: every entry re-hashed
    check_all = time.perf_counter() - t0
    t0 = time.perf_counter()
    check_log_at_start(store, signer, verifier, "new")  # after: the mark is at the head
    check_new = time.perf_counter() - t0
    store.close()
    starts = {}
    for name, full in (("before", True), ("after", False)):
        t0 = time.perf_counter()
        ProvenanceService(ServiceConfig(db=db, log_key=key, full_check=full)).close()
        starts[name] = time.perf_counter() - t0
    index = starts["after"] - check_new  # what is left of a start: the index build, opening
    out = {
        "leaves": leaves,
        "check_before_s": check_all,
        "check_after_s": check_new,
        "start_before_s": starts["before"],
        "start_after_s": starts["after"],
        "est_1e7_start_before_s": (check_all + index) * 1e7 / leaves,
        "est_1e7_start_after_s": check_new + index * 1e7 / leaves,
    }
    print(f"start-up at {leaves:,} entries")
    print(f"  check, full re-hash (before): {check_all:8.2f} s")
    print(
        f"  check, from the mark (after): {check_new:8.3f} s   ratio {check_all / check_new:8.0f}x"
    )
    print(f"  service start, before:        {starts['before']:8.2f} s")
    print(
        f"  service start, after:         {starts['after']:8.2f} s   (the near-duplicate index build is O(n))"
    )
    print(
        f"  estimate at 10^7: before {out['est_1e7_start_before_s']:.0f} s, after {out['est_1e7_start_after_s']:.0f} s"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leaves", type=int, default=1_000_000)
    ap.add_argument("--appends", type=int, default=3000)
    ap.add_argument("--submitters", type=int, default=32)
    ap.add_argument("--submits", type=int, default=1500)
    ap.add_argument("--devices", type=int, default=16)
    ap.add_argument(
        "--parts", nargs="+", choices=["appends", "submits", "startup"],
        default=["appends", "submits", "startup"],
    )  # fmt: skip
    ap.add_argument("--json", type=Path, default=ROOT / "out" / "bench_scale.json")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: still stop PostgreSQL
    pg = PgServer.start()
    try:
        new_db = pg.new_database
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            work = Path(tmp)
            result: dict[str, Any] = {}
            if "appends" in args.parts:
                result["appends_per_s"] = bench_appends(work, new_db, args.submitters, args.appends)
            if "submits" in args.parts:
                result["submit_capture_per_s"] = bench_submits(
                    work, new_db, args.devices, args.submits
                )
            if "startup" in args.parts:
                result["startup"] = bench_startup(work, args.leaves)
    finally:
        pg.stop()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
