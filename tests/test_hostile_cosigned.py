"""A hostile log server against `prov receipt refresh` and `prov verify --witness`,
which fetch the server's newest witness-cosigned checkpoint and a proof of the receipt's
leaf in it: a checkpoint the log's key did not sign, or an inclusion proof that does not
lead to its root, is refused server evidence (`SERVER EVIDENCE REFUSED: ...` naming the
server, exit 3, as `prov verify --log-key` refuses it), the sidecar left as it was.
A real `prov serve` whose log a real `prov witness serve` cosigns, logging real claims
of a real device; a real gRPC relay on a real port in front of it edits its answers."""

# ruff: noqa: F811
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clients.api import ProvenanceClient
from provenance.log.checkpoint import NoteVerifier, generate_log_key, open_checkpoint
from provenance.v1 import provenance_pb2 as pb
from tests.conftest import Cli, ServerProc, relay, sign_sample, wait_cosigned
from tests.test_cited_binding import _cosigner_key, _genuine_answer, server, witness  # noqa: F401

LOG = "/provenance.v1.Log/"
#: An answer of the relay: (request bytes, the call's context, forward) -> answer bytes.
Answer = Callable[[bytes, Any, Callable[[bytes], bytes]], bytes]


def _other_key_checkpoint(tmp_path: Path, vkey: str) -> Answer:
    """GetCheckpoint answered with the genuine cosigned checkpoint signed again by
    another key of the log's own name (a server that lost or swapped its key)."""
    other = generate_log_key(tmp_path / "other.pem", vkey.split("+")[0])

    def answer(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        r = pb.GetCheckpointResponse.FromString(forward(request))
        r.checkpoint = other.sign(open_checkpoint(r.checkpoint, NoteVerifier.from_vkey(vkey)))
        return bytes(r.SerializeToString())

    return answer


def _wrong_proof(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
    """GetInclusionProof answered with the genuine proof, its first hash changed."""
    r = pb.GetInclusionProofResponse.FromString(forward(request))
    r.proof[0] = bytes(32)
    return bytes(r.SerializeToString())


@pytest.mark.parametrize("fault", ["checkpoint_of_another_key", "wrong_inclusion_proof"])
def test_a_cosigned_checkpoint_or_proof_that_does_not_verify_is_refused_evidence(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, fault: str
) -> None:
    """(h-hostsrv58: before, exit 1 with the bare reason, such as "error: note has no
    signature by media-provenance.local/log+ID", naming neither the server nor what it
    sent.)"""
    photo, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    sign_sample(enrolled, tmp_path, "chelsea.png")  # a later leaf: the receipt's tree grows
    wait_cosigned(server.address, 3)
    with ProvenanceClient(server.address) as c:
        vkey = c.log_key()[0]
    answers: dict[str, Answer] = (
        {f"{LOG}GetCheckpoint": _other_key_checkpoint(tmp_path, vkey)}
        if fault == "checkpoint_of_another_key"
        else {f"{LOG}GetInclusionProof": _wrong_proof}
    )
    sidecar = Path(f"{photo}.prov")
    kept = sidecar.read_bytes()
    with relay(server.address, answers) as address:
        rc, out, err = enrolled("receipt", "refresh", str(sidecar), "--server", address)
        assert rc == 3, (rc, out, err)
        assert err.startswith("SERVER EVIDENCE REFUSED: ") and address in err, err
        assert f"does not verify with the log key {vkey.split('+')[0]}" in err, err
        assert sidecar.read_bytes() == kept
    genuine = _genuine_answer(server.address, photo).SerializeToString()
    uploads = {"/provenance.v1.Verification/VerifyFile": genuine}
    with relay(server.address, answers, uploads) as address:
        rc, out, err = enrolled(
            "verify", "--no-detect", "--no-sidecar", str(photo), "--server", address,
            "--witness", witness[1],
        )  # fmt: skip
        assert rc == 3, (rc, out, err)
        assert err.startswith("SERVER EVIDENCE REFUSED: ") and address in err, err
        assert "SIGNED_ORIGINAL" not in out, out


def test_json_does_not_say_the_witnesses_checked_evidence_when_the_policy_failed(
    enrolled: Cli, tmp_path: Path
) -> None:
    """`prov verify --json --witness KEY` against a server that has no witnesses: exit
    14, and ``evidence_checked`` null, as nothing was proven in a cosigned checkpoint
    (h-hostsrv58: before, "witness", the policy's error beside it)."""
    photo, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    stranger = _cosigner_key("witness.example")
    rc, out, err = enrolled("verify", "--no-detect", "--json", str(photo), "--witness", stranger)
    doc = json.loads(out)
    assert rc == 14 and doc["witnesses"]["error"], (rc, out, err)
    assert doc["witnesses"]["met"] is False, doc
    assert doc["evidence_checked"] is None, doc


def _too_long(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
    """GetConsistencyProof answered with three hashes of ones: too long for one entry."""
    return bytes(pb.GetConsistencyProofResponse(proof=[b"\1" * 32] * 3).SerializeToString())


def test_refresh_names_the_server_whose_consistency_proof_fails(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """A consistency proof from the receipt's checkpoint to the cosigned one that does not
    verify: exit 3 (the two checkpoints are not proven of one log), the server that sent
    it named and a wrong proof said possible, the sidecar unchanged. (h-hostsrv58: before,
    "the receipt's checkpoint (2 entries) and the cosigned one (3) are not of one
    append-only log: ...", neither the server nor a wrong proof named.)"""
    photo, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    sign_sample(enrolled, tmp_path, "chelsea.png")
    wait_cosigned(server.address, 3)
    sidecar = Path(f"{photo}.prov")
    kept = sidecar.read_bytes()
    with relay(server.address, {f"{LOG}GetConsistencyProof": _too_long}) as address:
        rc, out, err = enrolled("receipt", "refresh", str(sidecar), "--server", address)
    assert rc == 3 and err.startswith("LOG INTEGRITY FAILURE: "), (rc, out, err)
    assert f"the server at {address} sent" in err and "or a wrong proof" in err, err
    assert sidecar.read_bytes() == kept
