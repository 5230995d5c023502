"""The first near-duplicate search after a start near one device's N planted claims.

A device logs N claims carrying one popular photo's exact PDQ code (a quota of 600 a
minute: 10^4 in 17 minutes, 10^5 in under 3 hours). The server learns whose each leaf is
only for the leaves a search hits (`ProvenanceService._search_grouped`); this times the
first `_near_candidates` of that code after a start (learning), and a second (learnt),
in-process over a SQLite log built directly (bench_scale's way), and counts the store
reads of leaf owners it took. Run: PYTHONPATH=. .venv/bin/python bench/bench_group_rounds.py 10000
With --budget S the first search is given a deadline S seconds away (a Lookup's
--lookup-seconds, checked between rounds): it says when it stopped instead. With
--verify-budget S it is given a VerifyFile's `SearchBudget` of S seconds
(--verify-search-seconds): it says when it was cut and what it answered; with --recheck,
the device's groups are then forgotten as a revocation since makes a verdict forget them
(`_forget_groups`) and the search again is timed with and without that budget (the
recheck of `_near_logged`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import _build_log  # noqa: E402

from provenance.core.binding import PerceptualHash  # noqa: E402
from provenance.server.service import (  # noqa: E402
    ProvenanceService,
    SearchBudget,
    ServiceConfig,
)

HOT = bytes([0xA5] * 32)


def _flip(code: bytes, bit: int) -> bytes:
    """``code`` with bit ``bit`` flipped."""
    return (int.from_bytes(code) ^ (1 << bit)).to_bytes(32)


def build(db: Path, key: Path, planted: int, background: int) -> None:
    """A log of ``planted`` claims of one device at `HOT`, then ``background`` random ones."""
    _build_log(db, key, planted + background, lambda i: HOT if i < planted else os.urandom(32))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("planted", type=int, nargs="+")
    p.add_argument("--background", type=int, default=10_000)
    p.add_argument("--frames", type=int, default=1, help="a video query of this many frames at HOT")
    p.add_argument("--distinct", action="store_true", help="frame i: HOT with bit i %% 256 flipped")
    p.add_argument("--budget", type=float, help="the first search's deadline, seconds away")
    p.add_argument("--verify-budget", type=float, help="the first search's SearchBudget, s")
    p.add_argument("--recheck", action="store_true", help="time a search after forgetting")
    args = p.parse_args()
    for planted in args.planted:
        with tempfile.TemporaryDirectory() as tmp:
            db, key = Path(tmp) / "b.db", Path(tmp) / "b.key"
            build(db, key, planted, args.background)
            svc = ProvenanceService(ServiceConfig(db=db, log_key=key))
            svc.pdq.wait_warm()
            reads = [0]
            owners = getattr(svc.store, "leaf_owners", None)  # none before 6 December

            def counted(ids, owners=owners, reads=reads):  # type: ignore[no-untyped-def]
                reads[0] += 1
                return owners(ids)

            if owners is not None:
                svc.store.leaf_owners = counted  # type: ignore[method-assign]
            soft = tuple(
                PerceptualHash("pdq", _flip(HOT, i % 256) if args.distinct else HOT, 90, float(i))
                for i in range(args.frames)
            )
            times = []
            for n in range(2):
                t0 = time.perf_counter()
                if n == 0 and args.budget is not None:
                    deadline = time.monotonic() + args.budget
                    try:
                        svc._near_candidates_many([soft], deadline=deadline)
                        said = "answered"
                    except Exception as e:  # DeadlineError (none before 6 December)
                        said = f"{type(e).__name__}: {e}"
                    print(
                        f"  budget {args.budget} s: {said} after {time.perf_counter() - t0:.2f} s"
                    )
                    t0 = time.perf_counter()
                if n == 0 and args.verify_budget is not None:
                    budget = SearchBudget(args.verify_budget)
                    got = svc._near_candidates(soft, budget=budget)
                    print(
                        f"  verify budget {args.verify_budget} s: cut {budget.cut}, spent"
                        f" {budget.spent:.2f} s, {len(got)} candidates, after"
                        f" {time.perf_counter() - t0:.2f} s"
                    )
                    t0 = time.perf_counter()
                found = svc._near_candidates(soft)
                times.append(time.perf_counter() - t0)
            if args.recheck:
                again: list[SearchBudget | None] = [SearchBudget(args.verify_budget or 5.0), None]
                for again_budget in again:
                    with svc._groups_lock:  # what _forget_groups does on a revocation since
                        arr = svc._leaf_groups
                        arr[arr >= 0] = -1
                        svc._grouped_revocation.clear()
                    t0 = time.perf_counter()
                    svc._near_candidates(soft, budget=again_budget)
                    b = again_budget
                    said = "none" if b is None else f"{b.seconds} s, cut {b.cut}"
                    print(f"  recheck, budget {said}: {time.perf_counter() - t0:.2f} s")
            svc.close()
            print(
                f"planted {planted:>7,}: first search {times[0]:7.2f} s, second {times[1]:.3f} s,"
                f" leaf_owners reads {reads[0]}, candidates {len(found)}",
                flush=True,
            )
    sys.exit(0)


if __name__ == "__main__":
    main()
