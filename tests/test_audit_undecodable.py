"""`prov log audit` of a log whose entries do not decode: a hostile server (or a log that
signs whatever it is sent) can serve millions, and the audit names each in a sentence.
It lists the first `MAX_PROBLEMS` and counts the rest ("... and N more"), as the claim,
tree, leaf and index checks do. Before (h-keymem60), one sentence per entry was kept and
printed: unbounded memory and output. A real `prov serve`, a real gRPC relay on a real
port in front of it answering GetLogKey, GetCheckpoint and GetEntries as a hostile log
of its own key would."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provenance.core import merkle
from provenance.core.problems import MAX_PROBLEMS
from provenance.log.checkpoint import Checkpoint, LogSigner
from provenance.v1 import provenance_pb2 as pb
from tests.conftest import GET_ENTRIES, Cli, ServerProc, relay

#: Entries that are no claim and no key event: enough to pass the bound three times over.
GARBAGE = [b"\xff not protobuf %d" % i for i in range(3 * MAX_PROBLEMS)]


def _hostile_log() -> dict[str, Callable[[bytes, Any, Callable[[bytes], bytes]], bytes]]:
    """The relay's answers: a log key of its own, a checkpoint it signs over `GARBAGE`,
    and `GARBAGE` in pages of at most the entries asked for."""
    signer = LogSigner(Ed25519PrivateKey.generate(), "hostile.example/log")
    tree = merkle.CompactRange()
    for entry in GARBAGE:
        tree.append(merkle.leaf_hash(entry))
    now = datetime.now(UTC).replace(microsecond=0)
    note = signer.sign(Checkpoint(signer.name, len(GARBAGE), tree.root(), now))

    def log_key(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        answer = pb.GetLogKeyResponse(verifier_key=signer.verifier_key(), origin=signer.name)
        return bytes(answer.SerializeToString())

    def checkpoint(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        return bytes(pb.GetCheckpointResponse(checkpoint=note).SerializeToString())

    def entries(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        asked = pb.GetEntriesRequest.FromString(request)
        page = GARBAGE[asked.start : asked.start + max(1, min(asked.limit, 7))]
        answer = pb.GetEntriesResponse(
            entries=page, start=asked.start, next=asked.start + len(page)
        )
        return bytes(answer.SerializeToString())

    return {
        "/provenance.v1.Log/GetLogKey": log_key,
        "/provenance.v1.Log/GetCheckpoint": checkpoint,
        GET_ENTRIES: entries,
    }


def test_an_audit_of_many_undecodable_entries_lists_the_first_and_counts_the_rest(
    cli: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """(Before: all 60 sentences listed, no count: one kept in memory per entry.)"""
    state = tmp_path / "audit.json"
    with relay(server.address, _hostile_log()) as address:
        rc, out, err = cli("log", "audit", "--state", str(state), "--server", address)
    assert rc == 3, (rc, out, err)
    assert f"log OK: has {len(GARBAGE)} entries" in out, (out, err)
    lines = [" ".join(line.split()) for line in err.split("\n  ")]
    assert "KEY HISTORY: the registry differs from" in lines[0], err
    named = [line for line in lines if "is not a valid claim or key event" in line]
    assert len(named) == MAX_PROBLEMS, err
    assert named[0].startswith("log entry 0 is not"), err
    assert named[-1].startswith(f"log entry {MAX_PROBLEMS - 1} is not"), err
    assert f"... and {len(GARBAGE) - MAX_PROBLEMS} more" in err, err
