"""A Lookup's near-duplicate search of many photos over a large ordinary log: this tree
against another (a ``git worktree`` of an older commit) on the same database, same run.

The log: ``--leaves`` random PDQ codes of ``--devices`` devices, and for each of
``--files`` query photos ``--popular`` entries 1-12 bits from its code, each of another
device (a popular picture many people logged copies of). The query: ``--files`` photos,
each its code and 7 random "turned" codes packed (a Lookup's ``pdq_dihedral``), searched
together (`ProvenanceService._near_candidates_many`), first after a start (the leaves'
groups learnt) and again (learnt). Each tree runs in its own process on the same
database, alternated for ``--rounds``; medians printed.

Run: PYTHONPATH=. .venv/bin/python bench/bench_near_places.py --other /tmp/old-tree
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import _build_log  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
from pathlib import Path
from provenance.core.binding import PerceptualHash
from provenance.server.service import ProvenanceService, ServiceConfig
db, key, qfile = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
q = json.loads(qfile.read_text())
svc = ProvenanceService(ServiceConfig(db=db, log_key=key))
svc.pdq.wait_warm()
softs = [(PerceptualHash("pdq", bytes.fromhex(c), 90),) for c in q["codes"]]
turns = [bytes.fromhex(t) for t in q["turns"]]
out = []
for _ in range(2):
    t0 = time.perf_counter()
    found = svc._near_candidates_many(softs, turns=turns, frames=[1] * len(softs))
    out.append(time.perf_counter() - t0)
svc.close()
print(json.dumps({"first": out[0], "second": out[1], "candidates": sum(map(len, found))}))
"""


def _flip(code: bytes, bits: int, rng: random.Random) -> bytes:
    """``code`` with ``bits`` random bits flipped."""
    n = int.from_bytes(code)
    for b in rng.sample(range(256), bits):
        n ^= 1 << b
    return n.to_bytes(32)


def build(db: Path, key: Path, args: argparse.Namespace) -> dict[str, list[str]]:
    """The log (see the module's docstring); returns the query's codes and packed turns."""
    rng = random.Random(7)
    queries = [rng.randbytes(32) for _ in range(args.files)]
    codes = [rng.randbytes(32) for _ in range(args.leaves)]
    devs = [rng.randrange(args.devices) for _ in range(args.leaves)]
    for q in queries:
        for p in range(args.popular):
            codes.append(_flip(q, rng.randint(1, 12), rng))
            devs.append(args.devices + p)  # each a device of its own
    order = list(range(len(codes)))
    rng.shuffle(order)
    _build_log(
        db,
        key,
        len(codes),
        lambda i: codes[order[i]],
        lambda i: devs[order[i]].to_bytes(32),
    )
    return {
        "codes": [q.hex() for q in queries],
        "turns": [b"".join(rng.randbytes(32) for _ in range(7)).hex() for _ in queries],
    }


def run(tree: Path, db: Path, key: Path, qfile: Path) -> dict[str, float]:
    """One child's timings on ``tree``'s code."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(db), str(key), str(qfile)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--other", type=Path, required=True, help="the tree to compare with")
    p.add_argument("--leaves", type=int, default=200_000)
    p.add_argument("--devices", type=int, default=1_000)
    p.add_argument("--files", type=int, default=1_000)
    p.add_argument("--popular", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db, key, qfile = Path(tmp) / "b.db", Path(tmp) / "b.key", Path(tmp) / "q.json"
        t0 = time.perf_counter()
        qfile.write_text(json.dumps(build(db, key, args)))
        print(f"log built in {time.perf_counter() - t0:.0f} s", flush=True)
        got: dict[str, list[dict[str, float]]] = {"this": [], "other": []}
        for _ in range(args.rounds):
            got["this"].append(run(ROOT, db, key, qfile))
            got["other"].append(run(args.other, db, key, qfile))
        for name, runs in got.items():
            first = statistics.median(r["first"] for r in runs)
            second = statistics.median(r["second"] for r in runs)
            print(
                f"{name:>5}: first {first:.3f} s, second {second:.3f} s,"
                f" candidates {runs[0]['candidates']} ({args.files} files x 8 codes,"
                f" {args.popular} near entries each)",
                flush=True,
            )


if __name__ == "__main__":
    main()
