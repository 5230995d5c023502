"""`prov verify --log-key KEY` checks the server's evidence itself: the cited claim's
receipt must carry a checkpoint signed by the pinned log key and an inclusion proof of
the claim's leaf in that checkpoint's tree. Without it, a verdict and its evidence are
the server's word, and a hostile server (or someone on the plaintext channel) can invent
a claim that binds any file. A real `prov serve`, a real enrolled device, a real hostile
gRPC server on a real port that relays every other call to the real server, the real CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from clients.api import ProvenanceClient
from clients.device import DeviceHome
from provenance.log.checkpoint import Checkpoint, generate_log_key, split_note
from provenance.v1 import provenance_pb2 as pb
from tests.conftest import SAMPLES, Cli, ServerProc, closed_port, sign_sample
from tests.test_cited_binding import _forger, _genuine_answer, _verify


def _own_key_checkpoint(answer: pb.VerificationReport, tmp_path: Path) -> None:
    """The receipt's checkpoint body, same origin, tree and root, signed by the hostile
    server's own key instead of the log's."""
    receipt = answer.evidence.claim.receipt
    body, _ = split_note(receipt.checkpoint)
    origin = Checkpoint.parse_body(body).origin
    receipt.checkpoint = generate_log_key(tmp_path / "evil.pem", origin).sign_text(body)


def _wrong_proof(answer: pb.VerificationReport, tmp_path: Path) -> None:
    """The genuine signed checkpoint with one hash of the inclusion proof changed."""
    proof = answer.evidence.claim.receipt.inclusion_proof
    assert len(proof) >= 1, "a tree of one leaf has an empty proof: nothing to forge"
    proof[0] = bytes([proof[0][0] ^ 1]) + proof[0][1:]


def _invented_claim(answer: pb.VerificationReport, b: Path) -> None:
    """A claim binding B's SHA-256 (and its log entry rewritten to hold it), cited with
    the genuine checkpoint and proof of A's leaf; the report made B's."""
    digest = hashlib.sha256(b.read_bytes()).digest()
    signed = answer.evidence.claim.signed_claim
    claim = pb.Claim.FromString(signed.claim)
    claim.hard_binding.sha256 = digest
    signed.claim = claim.SerializeToString()
    receipt = answer.evidence.claim.receipt
    entry = pb.LogEntry.FromString(receipt.log_entry)
    entry.signed_claim.CopyFrom(signed)
    receipt.log_entry = entry.SerializeToString()
    answer.evidence.file_sha256 = digest


@pytest.mark.parametrize("forgery", ["own_key_checkpoint", "wrong_proof", "invented_claim"])
def test_forged_evidence_is_refused_with_the_log_key(
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    forgery: str,
) -> None:
    """(h-logkey52: before, there was no --log-key (exit 2); without it each forgery
    printed SIGNED_ORIGINAL and exited 0.)"""
    sign_sample(enrolled, tmp_path, "chelsea.png")  # a second leaf: proofs are not empty
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    b = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "grace_hopper.jpg"))
    with ProvenanceClient(server.address) as c:
        log_key = c.log_key()[0]
    key_file = tmp_path / "log.key"
    key_file.write_text(log_key + "\n")
    forged = _genuine_answer(server.address, a)
    target = a
    if forgery == "own_key_checkpoint":
        _own_key_checkpoint(forged, tmp_path)
    elif forgery == "wrong_proof":
        _wrong_proof(forged, tmp_path)
    else:
        _invented_claim(forged, b)
        target = b
    why = {
        "own_key_checkpoint": "not signed by the log key",
        "wrong_proof": "inclusion proof",
        "invented_claim": "inclusion proof",
    }[forgery]
    for address in _forger(server.address, forged.SerializeToString()):
        # the gap: without a pinned key, the forged evidence is taken as the server says
        rc, out, err = _verify(capsys, str(target), "--server", address)
        assert rc == 0 and "SIGNED_ORIGINAL" in out, (rc, out, err)
        assert "not checked against a pinned log key" in out, out
        for pin in (("--log-key", log_key), ("--log-key", str(key_file)), ("--json",), ()):
            if not pin or pin == ("--json",):
                monkeypatch.setenv("PROV_LOG_KEY", log_key)
            else:
                monkeypatch.delenv("PROV_LOG_KEY", raising=False)
            rc, out, err = _verify(capsys, str(target), "--server", address, *pin)
            assert rc == 3, (pin, rc, out, err)
            assert "status     SIGNED" not in out and '"status": "SIGNED' not in out, out
            assert "SERVER EVIDENCE REFUSED:" in err and why in err, err
            assert "Traceback" not in err, err
            if pin == ("--json",):
                doc = json.loads(out)
                assert doc["status"] is None and why in doc["error"], doc


def test_honest_evidence_passes_with_the_log_key(
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The real server's answer, checked with its real key: exit 0 and the same report,
    one line saying what was checked here; --json says it in ``evidence_checked``."""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    with ProvenanceClient(server.address) as c:
        log_key = c.log_key()[0]
    rc, plain, err = _verify(capsys, str(a), "--server", server.address)
    assert rc == 0, (plain, err)
    assert "not checked against a pinned log key (--log-key or --witness)" in plain, plain
    rc, pinned, err = _verify(capsys, str(a), "--server", server.address, "--log-key", log_key)
    assert rc == 0, (pinned, err)
    assert "verified here with --log-key" in pinned, pinned
    drop = ("not checked against", "verified here with")
    assert [line for line in plain.splitlines() if not any(d in line for d in drop)] == [
        line for line in pinned.splitlines() if not any(d in line for d in drop)
    ]
    rc, out, err = _verify(capsys, str(a), "--server", server.address, "--json")
    assert rc == 0 and json.loads(out)["evidence_checked"] is None, out
    args = ("--json", "--log-key", log_key)
    rc, out, err = _verify(capsys, str(a), "--server", server.address, *args)
    assert rc == 0 and json.loads(out)["evidence_checked"] == "log-key", out
    # another log's key: the real evidence is not of that log
    other = generate_log_key(tmp_path / "other.pem", "other.example/log").verifier_key()
    rc, out, err = _verify(capsys, str(a), "--server", server.address, "--log-key", other)
    assert rc == 3 and "SERVER EVIDENCE REFUSED:" in err, (rc, out, err)
    assert "not signed by the log key" in err, err


def test_revoked_key_of_a_never_logged_sidecar_is_shown_with_the_log_key(
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A sidecar claim that was never logged (signed while the server was down), its key
    revoked since: the real server answers REVOKED_KEY citing the sidecar's claim, which
    has no receipt, as it is in no log. That is not evidence to check, and no claim of
    the log is vouched for, so --log-key shows the verdict (exit 12), as it does a
    REVOKED_KEY citing no claim. (revverify52: before, exit 3, "SERVER EVIDENCE REFUSED:
    ... citing a claim without a receipt": an honest answer called forged.)"""
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    rc, out, err = enrolled("sign", str(photo), "--server", closed_port())
    assert rc == 4 and "queued" in out, (rc, out, err)
    device_id = DeviceHome(enrolled.home).state().device_id
    rc, out, err = enrolled("admin", "revoke", device_id, "--reason", "lost")
    assert rc == 0, (rc, out, err)
    with ProvenanceClient(server.address) as c:
        log_key = c.log_key()[0]
    rc, plain, err = _verify(capsys, str(photo), "--server", server.address)
    assert rc == 12 and "REVOKED_KEY" in plain, (rc, plain, err)
    for args in (("--log-key", log_key), ("--log-key", log_key, "--json")):
        rc, out, err = _verify(capsys, str(photo), "--server", server.address, *args)
        assert rc == 12, (args, rc, out, err)
        assert "SERVER EVIDENCE REFUSED" not in err, err
        if "--json" in args:
            doc = json.loads(out)
            assert doc["status"] == "REVOKED_KEY" and doc["evidence_checked"] is None, doc
        else:
            assert "REVOKED_KEY" in out and "verified here with --log-key" not in out, out


def test_a_tampered_file_with_the_log_key_is_not_said_to_lack_one(
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An edited photo beside its logged sidecar: the real server answers TAMPERED citing
    the sidecar's logged claim, receipt and all. TAMPERED is not checked with --log-key
    (it vouches for nothing), and the `checked` line says so, instead of telling the user
    who pinned a key to pin one. (revverify52: before, "the server's evidence was not
    checked against a pinned log key (--log-key or --witness)" with --log-key given.)"""
    photo, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    photo.write_bytes(photo.read_bytes() + b"\0")
    with ProvenanceClient(server.address) as c:
        log_key = c.log_key()[0]
    rc, out, err = _verify(capsys, str(photo), "--server", server.address, "--log-key", log_key)
    assert rc == 13 and "TAMPERED" in out, (rc, out, err)
    assert "(--log-key or --witness)" not in out, out
    assert "not checked with --log-key" in out, out
