"""One client flooding the log's reads must not crowd honest callers out: GetEntries
pages of 1,000 entries, inclusion and consistency proofs, checkpoints and the log key,
each from one process on 127.0.0.1, --inflight calls at once, for --seconds.

A real `prov serve` on loopback ([::]; device quotas off) run from --root (a checkout:
this one by default, or an older one to compare), its log seeded with --entries claims.
An honest caller on ::1 (another client address) submits a new claim and reads the
checkpoint, one after the other, first alone, then during each flood. Prints per phase:
the flood's answers by outcome and answered calls a second, the server's CPU seconds
per answered flood call, and the honest submissions' and checkpoints' count, p50 and
p99 (ms). --extra passes flags to the server (``--extra=--log-reads-per-minute=0``).

Measured 4 December (2 shared cores, --inflight 64, --seconds 20, --entries 1500; the
checkout before the log's reads were metered and this one alternated, two runs each):
alone, honest submission p50 2.4-2.8 ms, checkpoint 0.8-1.0 ms. Unmetered, the flood got
293-307 pages of 1,000 entries a second (771-921 proofs, 1,421-1,430 checkpoints,
1,274-1,370 log keys), and honest submission p50 went to 34-35 ms under the pages (p99
157-169), 12-15 ms under proofs or checkpoints, 11-12 ms under log keys; honest
checkpoints to 13-15 ms under the pages, 4-5 ms under proofs, 40-41 ms under a
checkpoint flood. Metered (--log-reads-per-minute 6,000, the default): the pages a burst
of 1,200 then 20 a second (80 a second over the phase), the other reads about 110 a
second; honest submission p50 2.6-3.7 ms (p99 13-44, the highest under the pages' burst),
checkpoints 1.0-1.3 ms under every flood. The honest caller itself reads about 170
checkpoints a second, past the default's 100: by the last phase its own burst is spent
and its reads are paced too.

Usage: nice -n 5 python bench/bench_log_reads.py [--inflight 64] [--seconds 6]
       [--root DIR] [--extra=--flag=value ...]
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_enroll_replays import flood, ms  # noqa: E402  (bench/, next to this script)
from prov_server import prov_command, stopping  # noqa: E402  (bench/, next to this script)
from prov_server import start as start_child  # noqa: E402

from clients.api import ProvenanceClient  # noqa: E402
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL, sign_payload  # noqa: E402
from provenance.core.keys import DeviceKey  # noqa: E402
from provenance.v1 import provenance_pb2 as pb  # noqa: E402
from tests.conftest import ADMIN_TOKEN, signed_claim  # noqa: E402

LOG = "/provenance.v1.Log/"


def honest(
    address: str, key: DeviceKey, seconds: float, seq: int
) -> tuple[list[float], list[float], int]:
    """A submission then a checkpoint read, one after another, for ``seconds``:
    (submission latencies, checkpoint latencies, last sequence number)."""
    submits: list[float] = []
    reads: list[float] = []
    stop = time.monotonic() + seconds
    with ProvenanceClient(address) as client:
        while time.monotonic() < stop:
            seq += 1
            t = time.perf_counter()
            client.submit(signed_claim(key, seq))
            submits.append(time.perf_counter() - t)
            t = time.perf_counter()
            client.checkpoint()
            reads.append(time.perf_counter() - t)
    return submits, reads, seq


def start(root: Path, db: Path, extra: list[str]) -> tuple[subprocess.Popen[str], str]:
    """`prov serve` of the checkout ``root`` on [::] (quotas off): (process, port)."""
    command = prov_command("serve", "--db", str(db), "--no-detector", "--listen", "[::]:0")
    proc, address = start_child(
        [*command, "--quota-claims-per-minute", "0", *extra],
        cwd=root,
        env={"PROV_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    return proc, address.rpartition(":")[2]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--inflight", type=int, default=64, help="flood calls at once")
    ap.add_argument("--seconds", type=float, default=6.0, help="seconds per phase")
    ap.add_argument("--entries", type=int, default=1500, help="claims in the log")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose server runs")
    ap.add_argument("--extra", action="append", default=[], help="a server flag (repeat)")
    ap.add_argument("--phases", default="", help="comma-separated phase names (default all)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-log-reads-"))
    proc, port = start(args.root, work / "a.db", args.extra)
    ours, theirs = f"[::1]:{port}", f"127.0.0.1:{port}"
    server = psutil.Process(proc.pid)
    with stopping(proc):
        key = DeviceKey.generate()
        with ProvenanceClient(ours, ADMIN_TOKEN) as client:
            token, _ = client.create_enrollment_token()
            client.enroll(
                token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode())
            )
        seq = 0
        with ProvenanceClient(ours) as client:
            for seq in range(1, args.entries + 1):
                client.submit(signed_claim(key, seq))
        phases: list[tuple[str, str, Any]] = [
            ("alone", "", None),
            ("GetEntries 1000", "GetEntries", pb.GetEntriesRequest(start=0, limit=1000)),
            (
                "GetInclusionProof",
                "GetInclusionProof",
                pb.GetInclusionProofRequest(leaf_index=7, tree_size=0),
            ),
            (
                "GetConsistencyProof",
                "GetConsistencyProof",
                pb.GetConsistencyProofRequest(first_size=5, second_size=0),
            ),
            ("GetCheckpoint", "GetCheckpoint", pb.GetCheckpointRequest()),
            ("GetLogKey", "GetLogKey", pb.GetLogKeyRequest()),
        ]
        chosen = set(args.phases.split(",")) if args.phases else None
        spawn = multiprocessing.get_context("spawn")
        for name, method, request in phases:
            if chosen is not None and name.split()[0] not in chosen:
                continue
            q = spawn.Queue()
            flooder = None
            if method:
                flooder = spawn.Process(
                    target=flood,
                    args=(
                        theirs,
                        LOG + method,
                        request.SerializeToString(),
                        args.inflight,
                        args.seconds + 1,
                        q,
                    ),
                )
                flooder.start()
                time.sleep(1)  # the flood under way
            cpu = server.cpu_times()
            submits, reads, seq = honest(ours, key, args.seconds, seq)
            after = server.cpu_times()
            got: dict[str, int] = q.get() if flooder else {}
            if flooder:
                flooder.join()
            busy = after.user + after.system - cpu.user - cpu.system
            answered = got.get("ok", 0)
            per_call = busy / answered * 1000 if answered else float("nan")
            print(
                f"{name:19s} flood {got} ({answered / (args.seconds + 1):.0f} answered/s,"
                f" server CPU {busy / args.seconds:.2f} cores, {per_call:.2f} ms/answer);"
                f" honest: {len(submits)} submissions p50 {ms(submits, 0.5):.1f} p99"
                f" {ms(submits, 0.99):.1f} ms, {len(reads)} checkpoints p50"
                f" {ms(reads, 0.5):.1f} p99 {ms(reads, 0.99):.1f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
