"""Witness cosigning (C2SP tlog-witness) against the same log without witnesses, one run.

Two `prov witness serve` processes on loopback witness a log served in this process
(`ProvenanceService` on SQLite, the `--witness URL=KEY --witness-quorum 2` policy);
an identical service without witnesses is the baseline.

1. Under load (``--submitters`` concurrent submitters, ``--seconds`` in all, two turns
   each, median): durable
   submissions/s with witnesses against without (the writer never waits for witnesses,
   so this should stay near 1), and cosigned checkpoints/s (checkpoints that reached the
   quorum of 2) against signed checkpoints/s (group-commit batches) of the same run:
   batches committed while a round is in flight coalesce into the next round.
2. Latency per submission batch (one submitter per service, ``--batches`` sequential
   batches of one, the two services taking turns):
   submit -> durable acknowledgement without witnesses (the baseline), against submit ->
   a checkpoint covering it cosigned by both witnesses; the difference is the added
   latency before a receipt can carry cosignatures. Printed in ms; rows as rates
   (batches/s = 1 / mean latency).

Each witness fsyncs its state before it answers: on one machine, their fsyncs compete
with the log's own commits for the disk (``--witness-dir /dev/shm`` takes that away).

Usage: python bench/bench_cosign.py [--submitters 16] [--seconds 5] [--batches 100]
[--witness-dir DIR]
Prints ratios and writes them to out/bench/cosign.json (bench/results.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import REGISTRY
from prov_server import START_S, prov_command, start  # bench/prov_server.py, next to this script
from results import Ratio, write_results  # bench/results.py, next to this script

from provenance.core.claims import Claim, HardBinding, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.keys import DeviceKey
from provenance.log.checkpoint import generate_log_key
from provenance.server.service import ProvenanceService, ServiceConfig
from provenance.server.writer import PendingClaim
from provenance.wire import convert as wire
from provenance.witness.client import WitnessSpec
from tests.drain import next_line

ORIGIN = "bench.local/log"
ROOT = Path(__file__).resolve().parents[1]


def _line(proc: subprocess.Popen[str], prefix: str) -> str:
    while line := next_line(proc, START_S):
        if line.startswith(prefix):
            return line.split()[-1]
    raise RuntimeError(f"the witness exited without a {prefix!r} line")


def start_witnesses(
    work: Path, log_vkey: str
) -> tuple[list[subprocess.Popen[str]], list[WitnessSpec]]:
    """Two `prov witness serve` processes of the log ``log_vkey`` keeping their keys and
    state in ``work``; (processes, policy)."""
    procs, specs = [], []
    for i in (1, 2):
        proc, vkey = start(
            prov_command("witness", "serve", "--key", str(work / f"w{i}.pem"), "--log-key")
            + [log_vkey, "--state", str(work / f"w{i}"), "--name", f"bench.local/w{i}"]
            + ["--listen", "127.0.0.1:0"],
            "witness key ",
        )
        procs.append(proc)
        specs.append(WitnessSpec(_line(proc, "witness on "), vkey))
    return procs, specs


def open_service(work: Path, tag: str, witnesses: list[WitnessSpec]) -> ProvenanceService:
    """A service on its own SQLite file and log key (``work/<tag>.*``)."""
    return ProvenanceService(
        ServiceConfig(
            db=work / f"{tag}.db",
            log_key=work / f"{tag}.key",
            origin=ORIGIN,
            witnesses=tuple(witnesses),
            witness_quorum=len(witnesses),
        )
    )


def enroll_devices(service: ProvenanceService, count: int) -> list[DeviceKey]:
    """``count`` new device keys enrolled as a device enrolls (`ProvenanceService.enroll`:
    a one-time token, a proof of possession, a logged key-history entry), so the log is
    one an honest server writes (a full `prov log audit --db` passes it)."""
    keys = []
    for _ in range(count):
        key = DeviceKey.generate()
        token, _ = service.create_enrollment_token()
        proof = sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode())
        service.enroll(token, key.public_key, proof)
        keys.append(key)
    return keys


def pending(dev: DeviceKey, seq: int) -> PendingClaim:
    """Claim ``seq`` of ``dev``, signed by it (25 us of Ed25519: each submitter signs its
    own, as a device does)."""
    claim = Claim(dev.key_id, seq, datetime.now(UTC), "image/jpeg", 1, HardBinding(os.urandom(32)))
    data = wire.encode_claim(claim)
    sig = sign_payload(dev, PAYLOAD_TYPE_CLAIM, data)
    return PendingClaim(SignedClaim(PAYLOAD_TYPE_CLAIM, data, dev.key_id, sig), claim)


def _count(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def load(service: ProvenanceService, submitters: int, seconds: float) -> tuple[float, float, float]:
    """(submissions/s, signed checkpoints/s, cosigned checkpoints/s) over ``seconds``,
    ``submitters`` new devices submitting as fast as their acknowledgements come."""
    devices = enroll_devices(service, submitters)
    stop = time.monotonic() + seconds
    done = [0] * submitters

    def run(i: int) -> None:
        seq = 0
        while time.monotonic() < stop:
            seq += 1
            service.writer.submit(pending(devices[i], seq))
            done[i] += 1

    batches0 = _count("prov_commit_batch_size_count")
    cosigned0 = _count("prov_witness_cosigned_checkpoints_total")
    threads = [threading.Thread(target=run, args=(i,)) for i in range(submitters)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    batches = _count("prov_commit_batch_size_count") - batches0
    cosigned = _count("prov_witness_cosigned_checkpoints_total") - cosigned0
    return sum(done) / elapsed, batches / elapsed, cosigned / elapsed


def latency(bare: ProvenanceService, witnessed: ProvenanceService, batches: int) -> list[float]:
    """Mean seconds per sequential batch of one, the two services taking turns (so both
    see the same machine load): [submit -> durable ack without witnesses, the same with
    witnesses, submit -> a checkpoint covering it cosigned by the quorum]."""
    (bare_dev,) = enroll_devices(bare, 1)
    (dev,) = enroll_devices(witnessed, 1)
    cosigner = witnessed.cosigner
    assert cosigner is not None
    times: list[list[float]] = [[], [], []]
    for seq in range(1, batches + 1):
        bare_claim, claim = pending(bare_dev, seq), pending(dev, seq)
        t0 = time.perf_counter()
        bare.writer.submit(bare_claim)
        times[0].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        appended = witnessed.writer.submit(claim)
        times[1].append(time.perf_counter() - t0)
        size = appended.receipt.leaf_index + 1
        if not cosigner.wait_cosigned(size, 30):
            raise RuntimeError(f"checkpoint {size} was not cosigned in 30 s")
        times[2].append(time.perf_counter() - t0)
    return [statistics.mean(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--submitters", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument(
        "--witness-dir",
        type=Path,
        help="keep the witnesses' state here (e.g. /dev/shm: witnesses on another disk, as"
        " they would be on other machines); default: beside the log, on the same disk",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cosign-") as tmp:
        work = Path(tmp)
        log_vkey = generate_log_key(work / "witnessed.key", ORIGIN).verifier_key()
        wdir = Path(tempfile.mkdtemp(prefix="bench-cosign-", dir=args.witness_dir or work))
        procs, specs = start_witnesses(wdir, log_vkey)
        try:
            bare = open_service(work, "bare", [])
            witnessed = open_service(work, "witnessed", specs)
            try:
                b_ack, w_ack, w_cos = latency(bare, witnessed, args.batches)
                runs = [  # bare, witnessed, bare, witnessed: each its median
                    load(service, args.submitters, args.seconds / 2)
                    for _ in range(2)
                    for service in (bare, witnessed)
                ]
                b_rate = statistics.median(r[0] for r in runs[0::2])
                b_batches = statistics.median(r[1] for r in runs[0::2])
                w_rate = statistics.median(r[0] for r in runs[1::2])
                w_batches = statistics.median(r[1] for r in runs[1::2])
                w_cosigned = statistics.median(r[2] for r in runs[1::2])
            finally:
                bare.close()
                witnessed.close()
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=20)
            shutil.rmtree(wdir, ignore_errors=True)
    print(f"under load, {args.submitters} submitters: {b_batches:.0f} batches/s without"
          f" witnesses, {w_batches:.0f} with; {w_cosigned:.0f} cosigned checkpoints/s")  # fmt: skip
    print(
        f"per batch of one: ack {b_ack * 1000:.2f} ms without witnesses, {w_ack * 1000:.2f} ms"
        f" with; cosigned by both {w_cos * 1000:.2f} ms after submit"
        f" (+{(w_cos - w_ack) * 1000:.2f} ms after the ack)"
    )
    rows = [
        Ratio(f"submissions, {args.submitters} submitters, 2 witnesses", w_rate,
              "no witnesses", b_rate, "claims/s"),
        Ratio("cosigned checkpoints (quorum 2, loopback)", w_cosigned,
              "signed checkpoints, same run", w_batches, "ckpt/s"),
        Ratio("batch of one: submit -> cosigned by 2", 1 / w_cos,
              "submit -> durable ack, no witnesses", 1 / b_ack, "batches/s"),
        Ratio("batch of one: submit -> durable ack, 2 witn.", 1 / w_ack,
              "submit -> durable ack, no witnesses", 1 / b_ack, "batches/s"),
    ]  # fmt: skip
    write_results(
        "cosign",
        rows,
        note=f"added latency before a receipt can carry cosignatures: {(w_cos - w_ack) * 1000:.2f}"
        f" ms per batch (ack {b_ack * 1000:.2f} ms without witnesses, {w_ack * 1000:.2f} ms with)",
    )


if __name__ == "__main__":
    main()
