"""What a hostile signed note costs its reader: time, peak memory and message length.

A genuine checkpoint note with one hostile field added: a 50 MB signature line by an
unknown key, a 50 MB key name, a 50 MB malformed line, a 1 MB line in a note under the
1 MiB bound; and the largest note taken (99 lines of 8 KiB by unknown keys beside the
log's). Each case runs `open_checkpoint` in a fresh child process (``--root``: another
checkout's code, e.g. /work/main, to compare), best of --runs, with its peak RSS growth
over the note already built (ru_maxrss) and the refusal's message length. Rows compare
each case's time with opening the honest note.

Usage: python bench/bench_note_bounds.py [--runs 3] [--root PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from results import Ratio, write_results  # bench/results.py, next to this script

ROOT = Path(__file__).resolve().parent.parent

#: The child: builds the note of case argv[1], opens it argv[2] times, prints JSON.
CHILD = r"""
import base64, json, resource, sys, time
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from provenance.core.errors import ProvenanceError
from provenance.log.checkpoint import Checkpoint, LogSigner, NoteVerifier, open_checkpoint
signer = LogSigner(Ed25519PrivateKey.generate(), "bench.example/log")
note = signer.sign(Checkpoint("bench.example/log", 5, bytes(32)))
case, runs = sys.argv[1], int(sys.argv[2])
big = 50_000_000
line = lambda name, raw: f"\u2014 {name} {base64.b64encode(raw).decode()}\n"
notes = {
    "honest": lambda: note,
    "50 MB unknown line": lambda: note + "\u2014 other.example/w " + "A" * big + "\n",
    "50 MB key name": lambda: note + line("n" * big, bytes(68)),
    "50 MB malformed line": lambda: note + "x" * big + "\n",
    "1 MB line, 1 MiB note": lambda: note + "\u2014 other.example/w " + "A" * 1_000_000 + "\n",
    "99 lines of 8 KiB": lambda: note + "".join(
        line("other.example/w", i.to_bytes(4, "big") + bytes(6140)) for i in range(99)
    ),
}
hostile = notes[case]()
verifier = NoteVerifier.from_vkey(signer.verifier_key())
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
best, said = 1e9, ""
for _ in range(runs):
    t0 = time.perf_counter()
    try:
        open_checkpoint(hostile, verifier)
        said = ""
    except ProvenanceError as e:
        said = str(e)
    best = min(best, time.perf_counter() - t0)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss
print(json.dumps({"s": best, "rss_kib": grown, "refused": bool(said), "message": len(said)}))
"""

CASES = (
    "honest",
    "50 MB unknown line",
    "50 MB key name",
    "50 MB malformed line",
    "1 MB line, 1 MiB note",
    "99 lines of 8 KiB",
)


def _run(case: str, runs: int, root: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, case, str(runs)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose code runs")
    args = ap.parse_args()
    results = {case: _run(case, args.runs, args.root) for case in CASES}
    print(f"{'case':<24} {'time':>10} {'peak RSS +':>11} {'outcome':>9} {'message':>10}")
    for case, r in results.items():
        outcome = "refused" if r["refused"] else "accepted"
        print(
            f"{case:<24} {r['s'] * 1000:>8.2f}ms {r['rss_kib'] / 1024:>8.0f}MiB"
            f" {outcome:>9} {int(r['message']):>10,}"
        )
    honest = results["honest"]["s"]
    write_results(
        "note_bounds",
        [
            Ratio(f"open_checkpoint, {case}", 1 / r["s"], "the honest note", 1 / honest, "opens/s")
            for case, r in results.items()
            if case != "honest"
        ],
        note=f"code of {args.root}",
    )


if __name__ == "__main__":
    main()
