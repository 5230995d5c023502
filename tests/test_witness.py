"""C2SP tlog-witness: `prov witness serve` cosigns a real log's checkpoints and refuses
rolled-back, forked and inconsistent ones."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from provenance.core.errors import SignatureError, TransportError
from provenance.log.checkpoint import (
    Checkpoint,
    LogSigner,
    NoteVerifier,
    load_log_signer,
    open_checkpoint,
)
from provenance.log.tlogproof import encode_tlog_proof
from provenance.witness import Witness, cosigner_vkey, verify_cosignature
from tests.conftest import ADMIN_TOKEN, ServerProc, enroll_key, signed_claim, witness_serve


@pytest.fixture
def witness(tmp_path: Path, server: ServerProc) -> Iterator[tuple[str, str]]:
    """A `prov witness serve` of the `server` log: (its URL, its verifier key)."""
    with ProvenanceClient(server.address) as c:
        log_vkey, _ = c.log_key()
    with witness_serve(tmp_path, log_vkey) as served:
        yield served


def _post(url: str, body: str) -> tuple[int, str, str]:
    request = urllib.request.Request(f"{url}/add-checkpoint", body.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode(), r.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers["Content-Type"]


def _body(old: int, proof: list[bytes], note: str) -> str:
    lines = [f"old {old}", *(base64.b64encode(h).decode() for h in proof)]
    return "\n".join(lines) + "\n\n" + note


def test_witness_cosigns_a_growing_log_and_refuses_rollback_and_forks(
    tmp_path: Path,
    server: ServerProc,
    witness: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, wkey = witness
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as c:
        log_vkey, _ = c.log_key()
        verifier = NoteVerifier.from_vkey(log_vkey)
        key = enroll_key(c)
        prev = b""

        seq = 1
        receipts = []

        def submit(n: int) -> str:
            nonlocal prev, seq
            for _ in range(n):
                signed = signed_claim(key, seq, prev=prev)
                seq += 1
                receipts.append(c.submit(signed)[0])
                prev = signed.claim_hash
            return c.checkpoint()

        first = submit(3)
        status, cosig, _ = _post(url, _body(0, [], first))
        assert status == 200, cosig
        assert cosig.startswith("\u2014 witness.test/w1 ") and cosig.endswith("\n")
        cosigned = first + cosig  # the client appends the cosignature to its note
        assert verify_cosignature(cosigned, wkey).name == "witness.test/w1"
        # the log's signature still opens (the enrollment and 3 claims)
        assert open_checkpoint(cosigned, verifier).size == 4

        # a tlog-proof carrying the cosigned checkpoint: prov receipt verify --witness
        assert receipts[-1].checkpoint == first
        proof_file = tmp_path / "leaf2.tlog-proof"
        proof_file.write_text(encode_tlog_proof(replace(receipts[-1], checkpoint=cosigned)))
        verify = ["receipt", "verify", str(proof_file), "--log-key", log_vkey, "--witness", wkey]
        assert prov_main(verify) == 0
        assert "cosigned by 1 of 1 witnesses: witness.test/w1 at" in capsys.readouterr().out
        absent = cosigner_vkey("witness.test/w2", Ed25519PrivateKey.generate().public_key()
                               .public_bytes_raw())  # fmt: skip
        assert prov_main([*verify, "--witness", absent]) == 14  # the witness policy exit code
        assert "1 of the 2 witness cosignatures required" in capsys.readouterr().err
        assert prov_main([*verify, "--witness", absent, "--witness-quorum", "1"]) == 0

        second = submit(4)
        proof = c.consistency_proof(4, 8)
        status, cosig2, _ = _post(url, _body(4, proof, second))
        assert status == 200, cosig2
        verify_cosignature(second + cosig2, wkey)
        with pytest.raises(SignatureError):  # a cosignature is bound to its checkpoint
            verify_cosignature(second + cosig, wkey)

        # rollback: the old checkpoint again, from a client that says the witness knows 0
        status, text, ctype = _post(url, _body(0, [], first))
        assert (status, text, ctype) == (409, "8\n", "text/x.tlog.size")
        # old size above the checkpoint's size
        assert _post(url, _body(8, [], first))[0] == 400

        # a fork: the same log key signs another root of the same size, then a bigger one
        signer = load_log_signer(Path(f"{server.db}.logkey.pem"), verifier.name)
        cp = open_checkpoint(second, verifier)
        forked = signer.sign(Checkpoint(cp.origin, 8, bytes(32), cp.timestamp))
        assert _post(url, _body(8, [], forked))[0] == 422  # tlog-witness: same size, other root
        bigger = signer.sign(Checkpoint(cp.origin, 10, bytes(32), cp.timestamp))
        assert _post(url, _body(8, proof, bigger))[0] == 422

        # another key for the origin, an unknown origin, a malformed body
        impostor = LogSigner(Ed25519PrivateKey.generate(), cp.origin)
        assert _post(url, _body(8, [], impostor.sign(cp)))[0] == 403
        stranger = LogSigner(Ed25519PrivateKey.generate(), "other.example/log")
        other_cp = Checkpoint("other.example/log", 1, bytes(32))
        assert _post(url, _body(0, [], stranger.sign(other_cp)))[0] == 404
        for bad in ("old 01\n\n" + second, "old 7\n" + second, "old 7\nnot-base64\n\n" + second):
            assert _post(url, bad)[0] == 400

        # the log keeps growing: still cosigned from the witness's persisted size
        third = submit(2)
        status, _, _ = _post(url, _body(8, c.consistency_proof(8, 10), third))
        assert status == 200
        # the same checkpoint again (anyone can replay the public one) is cosigned, but the
        # state file is not rewritten: no fsync per replay
        (state,) = (tmp_path / "wstate").glob("*.json")
        inode = state.stat().st_ino
        status, cosig3, _ = _post(url, _body(10, [], third))
        assert status == 200 and verify_cosignature(third + cosig3, wkey)
        assert state.stat().st_ino == inode
        # this server was started without --witness: it has no cosigned checkpoint to give
        with pytest.raises(TransportError, match="requests no witness cosignatures") as e:
            c.cosigned_checkpoint()
        assert e.value.code == "FAILED_PRECONDITION"
    # state survives a restart of the witness (a new instance, of its key, on the same folder)
    own = load_log_signer(tmp_path / "witness.pem", "witness.test/w1", "witness key")
    again = Witness(own, [log_vkey], tmp_path / "wstate")
    latest = again.latest(cp.origin)
    assert latest is not None and latest.size == 10


def test_witness_refuses_sizes_too_long_for_a_uint64(tmp_path: Path) -> None:
    """An ``old`` size or a checkpoint size of more than 20 digits (a tree size is a
    uint64) is a malformed request: 400 saying so. Before, ``old`` followed by 5,000
    digits raised ValueError (Python's int conversion limit) in the witness and it
    answered 500 Internal Server Error; a 25-digit one was read as a number."""
    from provenance.log.checkpoint import generate_log_key

    signer = generate_log_key(tmp_path / "log.pem", "log.test/big")
    with witness_serve(tmp_path, signer.verifier_key()) as (url, _):
        note = signer.sign(Checkpoint("log.test/big", 3, bytes(32)))
        for old in ("9" * 5000, "1" * 21):
            status, text, _ = _post(url, f"old {old}\n\n{note}")
            assert status == 400, text
            assert "'old <size>' (decimal of at most 20 digits" in text
        body = "log.test/big\n" + "9" * 5000 + "\n" + base64.b64encode(bytes(32)).decode() + "\n"
        status, text, _ = _post(url, f"old 0\n\n{signer.sign_text(body)}")  # signed by the log
        assert status == 400 and "(at most 20 digits)" in text, text
        status, text, _ = _post(url, f"old 0\n\n{note}")  # still cosigning
        assert status == 200, text
