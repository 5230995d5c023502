"""`prov log audit` against a server whose consistency proof does not verify: with the
full audit (the default) the entries re-hashed decide whether the tree saved is a prefix
of the new one, so a broken or hostile server's proof is refused as such (exit 3,
`SERVER EVIDENCE REFUSED`) and not announced as a FORK of the log, which the entries
disprove; an incremental audit, which reads only the new entries, still calls it a fork
it cannot rule out. A real `prov serve` logging real claims of a real device, a real
gRPC relay on a real port in front of it answering GetConsistencyProof itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from provenance.v1 import provenance_pb2 as pb
from tests.conftest import Cli, ServerProc, relay, sign_sample

PROOF = "/provenance.v1.Log/GetConsistencyProof"


def _too_long(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
    """A consistency proof of three hashes of ones: too long for one entry added."""
    return bytes(pb.GetConsistencyProofResponse(proof=[b"\1" * 32] * 3).SerializeToString())


def test_a_wrong_consistency_proof_is_refused_not_called_a_fork(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """(h-hostsrv58: before, "LOG INTEGRITY FAILURE: FORK: the tree of size 2 seen
    before is not a prefix of the new tree of size 3: consistency proof of 3 hashes from
    size 2 to 3 is too long", though every entry re-hashed showed it is.)"""
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    state = tmp_path / "audit.json"
    rc, _, err = enrolled("log", "audit", "--state", str(state))
    assert rc == 0, err
    saved = state.read_bytes()
    sign_sample(enrolled, tmp_path, "chelsea.png")
    with relay(server.address, {PROOF: _too_long}) as address:
        rc, out, err = enrolled("log", "audit", "--state", str(state), "--server", address)
        assert rc == 3, (rc, out, err)
        assert err.startswith("SERVER EVIDENCE REFUSED: ") and "FORK" not in err, err
        assert "consistency proof of 3 hashes from size 2 to 3 is too long" in err, err
        assert "re-hashed" in err and address in err, err
        assert state.read_bytes() == saved  # nothing accepted
        rc, out, err = enrolled(
            "log", "audit", "--state", str(state), "--server", address, "--incremental"
        )
        assert rc == 3 and "FORK:" in err, (rc, out, err)
    rc, out, err = enrolled("log", "audit", "--state", str(state))  # the log itself: fine
    assert rc == 0 and "consistent with the saved checkpoint" in out, (rc, out, err)
