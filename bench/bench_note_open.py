"""A witness's cost for add-checkpoint bodies that repeat the log's signature line.

Anyone can take a public checkpoint and send it to a witness with the log's signature
line repeated up to the note limit (`MAX_SIGNATURES`, 100 lines in about 11 KB): the
witness opens the note before anything else. Each row times `Witness.add_checkpoint`
(a real witness, real keys, its state on disk; the checkpoint is the one it cosigned,
so nothing is saved) on such a body against the same checkpoint with its one line
(the honest request, the baseline): a ratio near 1 means a repeat costs nothing more.

Usage: python bench/bench_note_open.py [--calls 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from results import Ratio, write_results  # bench/results.py, next to this script

from provenance.log.checkpoint import MAX_SIGNATURES, Checkpoint, generate_log_key
from provenance.witness import Witness


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log = generate_log_key(folder / "log.pem", "bench.test/log")
        witness = Witness(
            generate_log_key(folder / "w.pem", "bench.test/w1"),
            [log.verifier_key()],
            folder / "state",
        )
        note = log.sign(Checkpoint("bench.test/log", 3, bytes(32)))
        honest = f"old 0\n\n{note}".encode()
        assert witness.add_checkpoint(honest).status == 200
        honest = f"old 3\n\n{note}".encode()
        line = note[note.rfind("\n\n") + 2 :]
        repeated = f"old 3\n\n{note}{line * (MAX_SIGNATURES - 1)}".encode()
        rates: dict[bytes, list[float]] = {honest: [], repeated: []}
        for _ in range(args.rounds):  # alternate, so drifting load hits both alike
            for body, out in rates.items():
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    assert witness.add_checkpoint(body).status == 200
                out.append(args.calls / (time.perf_counter() - t0))
    write_results(
        "note_open",
        [
            Ratio(
                f"add-checkpoint, log line x{MAX_SIGNATURES} ({len(repeated)} B)",
                statistics.median(rates[repeated]),
                "the honest body",
                statistics.median(rates[honest]),
                "calls/s",
            )
        ],
    )


if __name__ == "__main__":
    main()
