"""`clients.cited.EvidenceChecker` (``prov scan --log-key``) keeps the checkpoint notes
it verified, so a scan's files cost an inclusion proof each, not a signature each. A
hostile server can make every note it sends another one that still verifies: the
genuine checkpoint with a signature line of its own added (c2sp.org/signed-note: lines
of other keys are passed over), as long as a reply of 8 MiB allows. Kept, 256 such notes
padded with 1 MiB each held about 0.7 GB in each scan worker (measured before the fix:
67,138,519 bytes kept for 24 of them; a note may be padded up to the 8 MiB reply); the
checker now keeps only notes of a genuine checkpoint's size (after: under 4 MiB for 24). A real `prov serve`, its
real answer and key; the padded notes are still checked (and pass). Measured in a child
process (`tests.memory`: tracemalloc counts every thread)."""

from __future__ import annotations

import base64
from pathlib import Path

from clients.api import ProvenanceClient
from provenance.log.checkpoint import MAX_SIGNATURE_BASE64
from tests.conftest import Cli, ServerProc, sign_sample
from tests.memory import traced_in_child
from tests.test_cited_binding import _genuine_answer


def _pad_line(key_id: int) -> str:
    """A signature line by an unknown key of the longest signature a note may carry."""
    raw = key_id.to_bytes(4, "big") + bytes(MAX_SIGNATURE_BASE64 // 4 * 3 - 4)
    return f"\u2014 pad.example/x {base64.b64encode(raw).decode()}\n"


#: An `EvidenceChecker` of the key argv[2] checks the answer in the file argv[1] (a
#: VerificationReport) from the server argv[3], then, traced, 24 reports of it padded
#: (each made, checked and dropped, as a scan's rows are): tells whether each verified
#: and the bytes still traced after them.
_PADDED = """
from pathlib import Path
from clients.cited import EvidenceChecker
from provenance.log.checkpoint import MAX_SIGNATURES
from provenance.v1 import provenance_pb2 as pb
from provenance.wire import convert as wire
from tests.test_evidence_checker_memory import _pad_line
answer = pb.VerificationReport.FromString(Path(sys.argv[1]).read_bytes())
checker = EvidenceChecker(sys.argv[2])
genuine = answer.evidence.claim.receipt.checkpoint
checker.check(wire.report_from_pb(answer, "test"), sys.argv[3])  # the genuine note kept
def padded():
    verified = []
    for n in range(24):
        # as much as a note may carry (`MAX_NOTE_BYTES`): 99 lines of the longest signature
        pad = "".join(_pad_line(n * 100 + i) for i in range(MAX_SIGNATURES - 1))
        answer.evidence.claim.receipt.checkpoint = genuine + pad
        report = wire.report_from_pb(answer, "test")
        verified.append(checker.check(report, sys.argv[3]) is not None)
    answer.evidence.claim.receipt.checkpoint = genuine
    return all(verified)
verified, kept, _ = traced(padded)
tell(verified, kept)
"""


def test_padded_checkpoint_notes_are_checked_but_not_kept(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    sign_sample(enrolled, tmp_path, "chelsea.png")
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    (tmp_path / "answer.pb").write_bytes(_genuine_answer(server.address, a).SerializeToString())
    with ProvenanceClient(server.address) as c:
        vkey = c.log_key()[0]
    found, _ = traced_in_child(_PADDED, ["answer.pb", vkey, server.address], tmp_path)
    verified, kept = found
    assert verified is True  # each still verifies
    # 24 notes of ~0.8 MB, held twice over as str: ~39 MB kept before the fix
    assert kept < 4 << 20, f"{kept:,} bytes kept after checking 24 padded notes"
