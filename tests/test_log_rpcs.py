"""Log RPCs and offline receipt verification against a real server."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from clients.api import ProvenanceClient
from provenance.core import merkle
from provenance.core.errors import TransportError
from provenance.log.checkpoint import NoteVerifier, generate_log_key, open_checkpoint
from tests.conftest import SAMPLES, Cli, ServerProc


@pytest.fixture
def server_db(any_db: Path | str) -> Path | str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return any_db


@pytest.fixture
def signed_three(enrolled: Cli, tmp_path: Path) -> list[Path]:
    files = [
        Path(shutil.copy(SAMPLES / n, tmp_path / n))
        for n in ("rocket.jpg", "grace_hopper.jpg", "chelsea.png")
    ]
    rc, _, err = enrolled("sign", *map(str, files))
    assert rc == 0, err
    return files


def test_proofs_by_index_and_hash(signed_three: list[Path], server: ServerProc) -> None:
    assert len(signed_three) == 3
    with ProvenanceClient(server.address) as c:
        vkey, origin = c.log_key()
        cp = open_checkpoint(c.checkpoint(), NoteVerifier.from_vkey(vkey))
        assert (cp.size, cp.origin) == (4, origin)  # the enrollment and three claims
        entries, nxt = c.entries(0, 2)
        assert (len(entries), nxt) == (2, 2)
        rest, nxt = c.entries(2, 100)
        assert (len(rest), nxt) == (2, 4)
        for i, entry in enumerate(entries + rest):
            idx, size, proof, lh = c.inclusion_proof(0, leaf_index=i)
            assert (idx, size, lh) == (i, 4, merkle.leaf_hash(entry))
            merkle.verify_inclusion(i, size, lh, proof, cp.root_hash)
            assert c.inclusion_proof(4, leaf_hash=lh)[0] == i
        proof = c.consistency_proof(1, 4)
        one = merkle.root(1, lambda keys: [merkle.leaf_hash(entries[0]) for _ in keys])
        merkle.verify_consistency(1, 4, proof, one, cp.root_hash)
        for bad in (
            lambda: c.inclusion_proof(0, leaf_index=4),
            lambda: c.consistency_proof(2, 9),
        ):
            with pytest.raises(TransportError) as exc:
                bad()
            assert exc.value.code == "OUT_OF_RANGE"
        with pytest.raises(TransportError) as exc:  # a leaf hash no entry has
            c.inclusion_proof(0, leaf_hash=b"\x00" * 32)
        assert exc.value.code == "NOT_FOUND", str(exc.value)


def test_receipt_verifies_offline_and_detects_changes(
    signed_three: list[Path], enrolled: Cli, tmp_path: Path
) -> None:
    rc, vkey, _ = enrolled("log", "key")
    vkey = vkey.strip()
    side = Path(f"{signed_three[1]}.prov")
    rc, out, err = enrolled("receipt", "verify", str(side), "--log-key", vkey)
    assert rc == 0 and "receipt OK: leaf 2 of" in out, err

    other = generate_log_key(tmp_path / "other.pem", vkey.split("+")[0]).verifier_key()
    rc, _, err = enrolled("receipt", "verify", str(side), "--log-key", other)
    assert rc == 1 and "signature" in err

    doc = json.loads(side.read_text())
    forged = dict(doc, payload=json.loads(Path(f"{signed_three[0]}.prov").read_text())["payload"])
    bad = tmp_path / "forged.prov"
    bad.write_text(json.dumps(forged))
    rc, _, err = enrolled("receipt", "verify", str(bad), "--log-key", vkey)
    # the swapped payload no longer matches the sidecar's signature (checked first)
    assert rc == 1 and "signature does not verify under its own public key" in err

    raw = bytearray(base64.b64decode(doc["receipt"]))
    raw[-40] ^= 0x01  # inside the leaf data
    bad.write_text(json.dumps(dict(doc, receipt=base64.b64encode(bytes(raw)).decode())))
    rc, _, err = enrolled("receipt", "verify", str(bad), "--log-key", vkey)
    assert rc == 1
