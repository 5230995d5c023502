"""Three `prov serve` processes over one real PostgreSQL database form one log: four
devices submit through all three while one server is SIGKILLed; every acknowledged
capture is in the log once, every checkpoint seen is consistent with the last, the audit
passes, and a capture signed through one server is found through the others."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from functools import partial
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
from provenance.store.postgres import PostgresStore
from tests.conftest import (
    ADMIN_TOKEN,
    ROOT,
    SAMPLES,
    Cli,
    ServerProc,
    enroll_key,
    read_line,
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


def _until(done: Callable[[], bool], what: str) -> None:
    """Return once ``done()``; fails naming ``what`` after 60 s (a hang guard, never the
    thing a test asserts)."""
    give_up = time.monotonic() + 60
    while not done():
        assert time.monotonic() < give_up, f"no {what} in 60 s"
        time.sleep(0.05)


def _followed(metrics_url: str, size: int) -> bool:
    """Whether ``prov_log_tree_size`` at the /metrics of a server (the leaves its
    near-duplicate index holds, its own and those it followed: other servers') is
    ``size`` or more."""
    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        found = re.search(r"^prov_log_tree_size (\S+)$", r.read().decode(), re.M)
    return found is not None and float(found.group(1)) >= size


@pytest.mark.slow
def test_three_servers_one_log(
    enrolled: Cli, server: ServerProc, pg_url: str, tmp_path: Path
) -> None:
    a = server
    # with /metrics: B's prov_log_tree_size is how far its index has followed the log
    b = start_server(pg_url, "--metrics-listen", "127.0.0.1:0")
    c = start_server(pg_url)
    metrics_url = {b.address: read_line(b.proc, "metrics on ")}
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
        # both halves log claims: 10 acknowledged before the kill, 10 more after it (a
        # count, however fast the machine; 60 s each only a hang guard)
        _until(lambda: len(acked) > 10, "claims acknowledged before the kill")
        with lock:
            before_kill = len(acked)
        c.proc.send_signal(signal.SIGKILL)
        c.proc.wait()
        _until(lambda: len(acked) > before_kill + 10, "claims acknowledged after the kill")
        stop.set()
        for t in threads:
            t.join()
        # the killed server comes back; the log checks out
        c = start_server(pg_url, "--metrics-listen", "127.0.0.1:0")
        metrics_url[c.address] = read_line(c.proc, "metrics on ")
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
        with ProvenanceClient(a.address) as cl:
            signed = open_checkpoint(cl.checkpoint(), verifier).size
        for other in (b, c):
            # once its index has followed the log past the signing (its own gauge), a
            # lookup through another server finds the copy at once
            caught_up = partial(_followed, metrics_url[other.address], signed)
            _until(caught_up, f"{other.address} following the log to the signing")
            assert _verify(enrolled, other.address, copy) == "DERIVED"
            assert _verify(enrolled, other.address, photo) == "SIGNED_ORIGINAL"
    finally:
        for s in servers[1:]:
            s.stop()


def _stored_claims(url: str, key: DeviceKey, want: int) -> bool:
    """Whether the store at ``url`` counts ``want`` claims of ``key`` in the last minutes
    (the servers' quota counts once flushed)."""
    store = PostgresStore(url, max_connections=1)
    try:
        minute = int(time.time() // 60)
        used = store.quota_usage(key.key_id, range(minute - 3, minute + 1))
    finally:
        store.close()
    return sum(claims for claims, _ in used) == want


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
            # each server's flusher puts its counts in the store within QUOTA_SYNC_S, on a
            # loaded machine later: waited for (the 2.5 QUOTA_SYNC_S slept before could
            # pass first, and A then admitted a 4th claim on its own count of 2)
            _until(partial(_stored_claims, pg_url, key, 3), "3 claims counted in the store")
            # and each server's read of the stored count is older than QUOTA_SYNC_S, so
            # its next admission reads it again (a rule of time: a sleep is its measure)
            time.sleep(1.5 * QUOTA_SYNC_S)
            for c in (ca, cb):
                with pytest.raises(TransportError) as e:
                    c.submit(signed_claim(key, 4))
                assert e.value.code == "RESOURCE_EXHAUSTED"
                assert "--quota-claims-per-minute" in str(e.value)
            cb.submit(signed_claim(other, 1))
    finally:
        a.stop()
        b.stop()
