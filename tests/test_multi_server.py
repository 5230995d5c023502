"""Three `prov serve` processes over one real PostgreSQL database form one log: four
devices submit through all three while one server is SIGKILLed; every acknowledged
capture is in the log once, every checkpoint seen is consistent with the last, the audit
passes, and a capture signed through one server is found through the others."""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from clients.api import ProvenanceClient
from provenance.core import merkle
from provenance.core.claims import Receipt
from provenance.core.errors import TransportError
from provenance.core.keys import DeviceKey
from provenance.log.checkpoint import NoteVerifier, open_checkpoint
from provenance.server.limits import QUOTA_SYNC_S
from tests.conftest import (
    ADMIN_TOKEN,
    ROOT,
    SAMPLES,
    Cli,
    ServerProc,
    enroll_key,
    signed_claim,
    start_server,
)


@pytest.fixture
def server_db(pg_url: str) -> str:
    """The `server` fixture (server A) runs on PostgreSQL here."""
    return pg_url


def _verify(cli: Cli, server: str, path: Path) -> str:
    rc, out, err = cli("verify", str(path), "--json", "--no-detect", "--server", server)
    assert out, err
    return str(json.loads(out)["status"])


@pytest.mark.slow
def test_three_servers_one_log(
    enrolled: Cli, server: ServerProc, pg_url: str, tmp_path: Path
) -> None:
    a = server
    b, c = start_server(pg_url), start_server(pg_url)
    servers = [a, b, c]
    try:
        with ProvenanceClient(a.address, admin_token=ADMIN_TOKEN) as cl:
            keys = [enroll_key(cl) for _ in range(4)]
            vkey, _ = cl.log_key()
        verifier = NoteVerifier.from_vkey(vkey)
        acked: list[Receipt] = []
        lock = threading.Lock()
        stop = threading.Event()

        def device(key: DeviceKey, first: int) -> None:
            seq = itertools.count(1)
            clients = [ProvenanceClient(s.address, timeout=5) for s in servers]
            try:
                for turn in itertools.count(first):
                    if stop.is_set():
                        return
                    try:  # a new sequence every try: an unacknowledged claim may be logged
                        receipt, _ = clients[turn % 3].submit(signed_claim(key, next(seq)))
                    except TransportError:
                        continue
                    with lock:
                        acked.append(receipt)
            finally:
                for cl in clients:
                    cl.close()

        threads = [threading.Thread(target=device, args=(k, i)) for i, k in enumerate(keys)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        with lock:
            before_kill = len(acked)
        c.proc.send_signal(signal.SIGKILL)
        c.proc.wait()
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join()
        assert before_kill > 10 and len(acked) > before_kill, "both halves should log claims"
        c = start_server(pg_url)  # the killed server comes back; the log checks out
        servers[2] = c

        with ProvenanceClient(b.address) as cl:
            latest = open_checkpoint(cl.checkpoint(), verifier)
            entries: list[bytes] = []
            while len(entries) < latest.size:
                got, _ = cl.entries(len(entries), 1000)
                entries += got
            for r in acked:
                lh = merkle.leaf_hash(r.log_entry)
                idx, size, proof, got_lh = cl.inclusion_proof(latest.size, leaf_hash=lh)
                assert (idx, got_lh) == (r.leaf_index, lh)
                merkle.verify_inclusion(idx, size, lh, proof, latest.root_hash)
            for note in {r.checkpoint for r in acked}:
                old = open_checkpoint(note, verifier)
                proof = cl.consistency_proof(old.size, latest.size)
                merkle.verify_consistency(
                    old.size, latest.size, proof, old.root_hash, latest.root_hash
                )
        assert len({r.leaf_index for r in acked}) == len(acked)  # each in the log once
        assert all(entries.count(r.log_entry) == 1 for r in acked)

        audit = subprocess.run(
            [sys.executable, "-m", "clients.cli", "log", "audit", "--server", c.address,
             "--state", str(tmp_path / "audit.json")],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert audit.returncode == 0, audit.stdout + audit.stderr

        photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
        rc, out, err = enrolled("sign", str(photo))  # through server A
        assert rc == 0, err
        copy = tmp_path / "rocket_small.jpg"
        img = Image.open(photo).convert("RGB")
        img.resize((img.width * 6 // 10, img.height * 6 // 10)).save(copy, quality=70)
        signed_at = time.monotonic()
        for other in (b, c):
            while True:  # a lookup that starts within 1 s of the signing finds the copy
                asked_at = time.monotonic()
                if _verify(enrolled, other.address, copy) == "DERIVED":
                    break
                assert asked_at - signed_at < 1.0, f"{other.address} did not see it in 1 s"
                time.sleep(0.05)
            assert _verify(enrolled, other.address, photo) == "SIGNED_ORIGINAL"
    finally:
        for s in servers[1:]:
            s.stop()


def test_device_quota_is_shared_by_the_servers_of_a_log(pg_url: str) -> None:
    """Two servers over one PostgreSQL, each with --quota-claims-per-minute 3: a device
    that sent 2 claims through A and 1 through B is refused by both (once the counts are
    synced through the store, QUOTA_SYNC_S), while another device is not."""
    a = start_server(pg_url, "--quota-claims-per-minute", "3")
    b = start_server(pg_url, "--quota-claims-per-minute", "3")
    try:
        with (
            ProvenanceClient(a.address, admin_token=ADMIN_TOKEN) as ca,
            ProvenanceClient(b.address) as cb,
        ):
            key, other = enroll_key(ca), enroll_key(ca)
            for seq in (1, 2):
                ca.submit(signed_claim(key, seq))
            cb.submit(signed_claim(key, 3))
            time.sleep(2.5 * QUOTA_SYNC_S)
            for c in (ca, cb):
                with pytest.raises(TransportError) as e:
                    c.submit(signed_claim(key, 4))
                assert e.value.code == "RESOURCE_EXHAUSTED"
                assert "--quota-claims-per-minute" in str(e.value)
            cb.submit(signed_claim(other, 1))
    finally:
        a.stop()
        b.stop()
