"""What holding every logged claim to the key history adds to `prov log audit --db`.

Builds a real log (a real service on a SQLite file: ``--devices`` devices enrolled with
tokens, ``--claims`` claims signed by their real Ed25519 keys, submitted as the server
takes them, a checkpoint each), then times:

1. `ClaimKeyAuditor` alone over the log's entries (decode and one Ed25519 verification
   per claim, `registry.check_claim_signature`): the check's own cost, per claim;
2. the whole `prov log audit --db` (a child process, CPU = user + system) of this tree,
   and, with ``--baseline DIR`` (a checkout without the check, e.g. ``git archive main``),
   of that tree on the same file, alternated ``--rounds`` times.

Usage: python bench/bench_claim_audit.py [--claims 3000] [--devices 10] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from provenance.core.argtypes import positive_int  # noqa: E402
from provenance.log.audit import KeyHistoryReader  # noqa: E402
from provenance.log.claim_audit import ClaimKeyAuditor  # noqa: E402
from provenance.server.service import ProvenanceService, ServiceConfig  # noqa: E402
from tests.inproc import Clock, InProc  # noqa: E402


def build(folder: Path, claims: int, devices: int) -> tuple[Path, str, list[bytes]]:
    """A log of ``devices`` enrollments and ``claims`` claims in ``folder``: (database,
    verifier key, its entries)."""
    clock = Clock()
    cfg = ServiceConfig(db=folder / "prov.db", log_key=folder / "log.key")
    rig = InProc(ProvenanceService(cfg, clock), clock, folder / "prov.db")
    try:
        devs = [rig.enroll() for _ in range(devices)]
        for i in range(claims):
            rig.submit(devs[i % devices].next_claim())
            if i % 64 == 0:
                clock.advance(seconds=1)
        entries, _ = rig.service.entries(0, claims + devices)
        while len(entries) < claims + devices:
            more, _ = rig.service.entries(len(entries), claims + devices)
            entries += more
        return folder / "prov.db", rig.service.signer.verifier_key(), entries
    finally:
        rig.service.close()


def check_alone(entries: list[bytes]) -> float:
    """Seconds of CPU for the claim check over ``entries`` (the key events read too)."""
    claims = ClaimKeyAuditor()
    reader = KeyHistoryReader(claims)
    t0 = time.process_time()
    for _ in reader.tap(entries):
        pass
    claims.finish(lambda first, end: entries[first:end])
    spent = time.process_time() - t0
    assert not claims.problems and not reader.problems, claims.problems + reader.problems
    return spent


def audit_cpu(tree: Path, db: Path, vkey: str, folder: Path) -> float:
    """CPU seconds (user + system) of one `prov log audit --db` by the code in ``tree``."""
    state = folder / f"state-{os.getpid()}-{time.monotonic_ns()}.json"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, "-m", "clients.cli", "log", "audit", "--db", str(db)]
    cmd += ["--state", str(state), "--log-key", vkey]
    done = subprocess.run(
        cmd, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"audit by {tree} failed ({done.returncode}): {done.stderr}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--claims", type=positive_int, default=3000)
    ap.add_argument("--devices", type=positive_int, default=10)
    ap.add_argument("--rounds", type=positive_int, default=3)
    ap.add_argument("--baseline", type=Path, help="a tree of the code without the check")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.monotonic()
        db, vkey, entries = build(folder, args.claims, args.devices)
        print(f"built {len(entries)} entries in {time.monotonic() - t0:.1f} s")
        alone = [check_alone(entries) for _ in range(args.rounds)]
        per = [s / args.claims * 1e6 for s in alone]
        print(
            "claim check alone: "
            + ", ".join(f"{s:.3f} s ({p:.0f} us a claim)" for s, p in zip(alone, per, strict=True))
        )
        for _ in range(args.rounds):
            new = audit_cpu(ROOT, db, vkey, folder)
            line = f"prov log audit --db CPU: this tree {new:.2f} s"
            if args.baseline is not None:
                old = audit_cpu(args.baseline, db, vkey, folder)
                line += f", baseline {old:.2f} s, added {new - old:+.2f} s"
            print(line)


if __name__ == "__main__":
    main()
