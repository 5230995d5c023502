"""The log against crashes, tampering, rollback and forks, with real `prov serve`
processes and real database files."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from clients.api import ProvenanceClient
from provenance.core import merkle
from provenance.core.claims import Receipt
from provenance.core.errors import TransportError
from provenance.core.keys import DeviceKey
from provenance.log.checkpoint import NoteVerifier, open_checkpoint
from tests.conftest import ADMIN_TOKEN, Cli, ServerProc, enroll_key, signed_claim, start_server


def _submit_some(c: ProvenanceClient, key: DeviceKey, n: int, seq0: int = 1) -> list[Receipt]:
    return [c.submit(signed_claim(key, seq0 + i))[0] for i in range(n)]


@pytest.mark.slow
def test_sigkill_during_burst_loses_no_acknowledged_submission(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    srv = start_server(db, "--fast-start")
    with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
        keys = [enroll_key(c) for _ in range(4)]
        vkey, _ = c.log_key()
    verifier = NoteVerifier.from_vkey(vkey)
    acked: list[Receipt] = []
    next_seq = {k.key_id: 1 for k in keys}
    lock = threading.Lock()
    rng = random.Random(7)
    checkpoints_before_crash: list[str] = []
    for _round in range(3):
        stop = threading.Event()

        def worker(key: DeviceKey, address: str, stop: threading.Event = stop) -> None:
            with ProvenanceClient(address, timeout=5) as cl:
                while not stop.is_set():
                    with lock:
                        seq = next_seq[key.key_id]
                        next_seq[key.key_id] += 1  # never reuse: unacked claims may be logged
                    try:
                        receipt, _ = cl.submit(signed_claim(key, seq))
                    except TransportError:
                        if stop.is_set():
                            return
                        time.sleep(0.01)
                        continue
                    with lock:
                        acked.append(receipt)

        threads = [threading.Thread(target=worker, args=(k, srv.address)) for k in keys]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.4, 1.2))
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        stop.set()
        for t in threads:
            t.join()
        with lock:
            if acked:
                checkpoints_before_crash.append(max(acked, key=lambda r: r.leaf_index).checkpoint)
        srv = start_server(db)  # full integrity check at start
    try:
        assert len(acked) > 20, "the burst should have logged a fair number of claims"
        with ProvenanceClient(srv.address) as c:
            latest = open_checkpoint(c.checkpoint(), verifier)
            for r in acked:
                lh = merkle.leaf_hash(r.log_entry)
                idx, size, proof, got = c.inclusion_proof(latest.size, leaf_hash=lh)
                assert (idx, got) == (r.leaf_index, lh)
                merkle.verify_inclusion(idx, size, lh, proof, latest.root_hash)
            for note in checkpoints_before_crash:
                old = open_checkpoint(note, verifier)
                proof = c.consistency_proof(old.size, latest.size)
                merkle.verify_consistency(
                    old.size, latest.size, proof, old.root_hash, latest.root_hash
                )
        assert len({r.leaf_index for r in acked}) == len(acked)
    finally:
        srv.stop()


def _audit(cli: Cli, state: Path, *extra: str) -> tuple[int, str]:
    rc, out, err = cli("log", "audit", "--state", str(state), *extra)
    return rc, out + err


@pytest.mark.parametrize("damage", ["edit-entry", "delete-row"])
def test_tampering_is_detected_by_audit_and_at_start(
    cli: Cli, server: ServerProc, tmp_path: Path, damage: str
) -> None:
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as c:
        _submit_some(c, enroll_key(c), 5)
    state = tmp_path / "audit.json"
    assert _audit(cli, state)[0] == 0
    con = sqlite3.connect(server.db)
    if damage == "edit-entry":
        (entry,) = con.execute("SELECT entry FROM leaves WHERE idx=2").fetchone()
        con.execute("UPDATE leaves SET entry=? WHERE idx=2", (entry[:-1] + bytes([entry[-1] ^ 1]),))
    else:
        con.execute("DELETE FROM leaves WHERE idx=3")
    con.commit()
    con.close()
    rc, text = _audit(cli, state)
    assert rc == 3, text
    assert "LOG INTEGRITY FAILURE" in text
    assert ("edited" in text) if damage == "edit-entry" else ("deleted" in text)
    server.stop()
    with pytest.raises(RuntimeError) as exc:
        start_server(server.db)
    assert "modified" in str(exc.value) or "deleted" in str(exc.value)


def test_rollback_and_fork_are_detected(
    cli: Cli, server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as c:
        key = enroll_key(c)
        _submit_some(c, key, 3)
    snapshot = tmp_path / "snapshot.db"
    src = sqlite3.connect(server.db)
    dst = sqlite3.connect(snapshot)
    src.backup(dst)
    src.close()
    dst.close()
    with ProvenanceClient(server.address) as c:
        _submit_some(c, key, 3, seq0=4)
    state = tmp_path / "audit.json"
    assert _audit(cli, state)[0] == 0
    server.stop()

    logkey = Path(str(server.db) + ".logkey.pem")
    shutil.copy(logkey, str(snapshot) + ".logkey.pem")
    os.chmod(str(snapshot) + ".logkey.pem", 0o600)
    old = start_server(snapshot)  # the operator restores an older copy: a rollback
    try:
        monkeypatch.setenv("PROV_SERVER", old.address)
        rc, text = _audit(cli, state)
        assert rc == 3 and "ROLLBACK" in text, text
        with ProvenanceClient(old.address) as c:  # ...and writes a different history: a fork
            _submit_some(c, key, 4, seq0=4)
        rc, text = _audit(cli, state)
        assert rc == 3 and "FORK" in text, text
    finally:
        old.stop()
