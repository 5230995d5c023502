"""Verification of a file whose bytes many logged claims bind, before and after the
bound on the claims examined per file hash (`provenance.core.verify.MAX_EXACT_CLAIMS`).

Builds one SQLite log (a real `prov serve`, quotas off) holding --claims signed claims
of the sample photo's bytes from one enrolled device, and one claim of another file.
Then, in alternated rounds, a `prov serve` of the code at --old-root (a checkout from
before the bound) and one of this checkout serve that log in turn; each is timed on
--calls `Lookup`s of the photo's SHA-256 and on --calls `VerifyFile` uploads of the
photo, against the same server's `Lookup` of the one-claim file (the bare baseline:
one claim examined). Medians over the rounds; prints the ratios and writes
out/bench/exact_claims.json (bench/results.py).

Usage: python bench/bench_exact_claims.py --old-root DIR [--claims 1000] [--rounds 4]
    [--calls 10] [--postgresql]
(--postgresql: the log in a PostgreSQL database of tests/pgserver.py, not SQLite; writes
out/bench/exact_claims_postgresql.json.)
(DIR: e.g. ``git archive edcfac8 | tar -x -C DIR``.)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench_service import _claim  # bench/bench_service.py: a made-up signed claim
from prov_server import prov_command, start, stopping  # bench/prov_server.py, next to this script
from results import Ratio, median_seconds, write_results

from clients.api import ProvenanceClient, Query
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.keys import DeviceKey

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "clients" / "samples" / "rocket.jpg"
TOKEN = "bench-admin-token-0123456789"


def _serve(root: Path, db: Path | str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """`prov serve` of the code at ``root`` on ``db`` (a SQLite path, or a PostgreSQL URL
    with its log key file in ``extra``), and its HOST:PORT."""
    command = prov_command("serve", "--db", str(db), "--listen", "127.0.0.1:0", "--no-detector")
    return start(
        [*command, *extra], cwd=root, env={"PROV_ADMIN_TOKEN": TOKEN, "PYTHONPATH": str(root)}
    )


def _build(db: Path | str, keys: list[str], claims: int, photo_sha: bytes, single: bytes) -> None:
    proc, address = _serve(ROOT, db, "--quota-claims-per-minute", "0", *keys)
    with stopping(proc):
        with ProvenanceClient(address, admin_token=TOKEN) as c:
            key = DeviceKey.generate()
            token, _ = c.create_enrollment_token()
            c.enroll(token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode()))
            for seq, sha in enumerate([single] + [photo_sha] * claims, 1):
                c.submit(_claim(key, seq, sha))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old-root", type=Path, required=True)
    ap.add_argument("--claims", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--postgresql", action="store_true", help="a PostgreSQL log, not SQLite")
    args = ap.parse_args()
    photo_sha = hashlib.sha256(PHOTO.read_bytes()).digest()
    single = os.urandom(32)
    with tempfile.TemporaryDirectory() as work, ExitStack() as stack:
        db: Path | str = Path(work) / "exact.db"
        keys: list[str] = []
        if args.postgresql:
            sys.path.insert(0, str(ROOT))
            from tests.pgserver import PgServer

            pg = PgServer.start()
            stack.callback(pg.stop)
            db, keys = pg.new_database(), ["--log-key", f"{work}/log.key"]
        t = time.perf_counter()
        _build(db, keys, args.claims, photo_sha, single)
        print(f"logged {args.claims} claims of one file in {time.perf_counter() - t:.1f} s")
        per: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for label, root in (("before", args.old_root.resolve()), ("after", ROOT)):
                proc, address = _serve(root, db, *keys)
                with stopping(proc):
                    with ProvenanceClient(address) as c:
                        got = {
                            "one": median_seconds(
                                lambda: c.lookup([Query("f", single)]), args.calls
                            ),
                            "lookup": median_seconds(
                                lambda: c.lookup([Query("f", photo_sha)]), args.calls
                            ),
                            "verify": median_seconds(lambda: c.verify_file(PHOTO), args.calls),
                        }
                for k, v in got.items():
                    per.setdefault(f"{label} {k}", []).append(v)
                print(label, {k: f"{v * 1e3:.1f} ms" for k, v in got.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in per.items()}
    n = args.claims
    names = {"lookup": "Lookup", "verify": "VerifyFile"}
    rows = [
        Ratio(
            f"{label}: {names[k]}, {n} claims",
            1 / med[f"{label} {k}"],
            "Lookup, 1 claim",
            1 / med[f"{label} one"],
            "calls/s",
        )
        for k in names
        for label in ("before", "after")
    ] + [
        Ratio(
            f"after/before: {names[k]}, {n} claims",
            1 / med[f"after {k}"],
            "before",
            1 / med[f"before {k}"],
            "calls/s",
        )
        for k in names
    ]
    write_results(
        "exact_claims_postgresql" if args.postgresql else "exact_claims",
        rows,
        f"{n} claims of one file ({'PostgreSQL' if args.postgresql else 'SQLite'}); medians of {args.rounds} alternated rounds of"
        f" {args.calls} calls each",
    )


if __name__ == "__main__":
    main()
