"""`clients.cited.EvidenceChecker` (``prov scan --log-key``) keeps the checkpoint notes
it verified, so a scan's files cost an inclusion proof each, not a signature each. A
hostile server can make every note it sends another one that still verifies: the
genuine checkpoint with a signature line of its own added (c2sp.org/signed-note: lines
of other keys are passed over), as long as a reply of 8 MiB allows. Kept, 256 such notes
padded with 1 MiB each held about 0.7 GB in each scan worker (measured before the fix:
67,138,519 bytes kept for 24 of them; a note may be padded up to the 8 MiB reply); the
checker now keeps only notes of a genuine checkpoint's size (after: under 4 MiB for 24). A real `prov serve`, its
real answer and key; the padded notes are still checked (and pass)."""

from __future__ import annotations

import base64
import tracemalloc
from pathlib import Path

from clients.api import ProvenanceClient
from clients.cited import EvidenceChecker
from provenance.log.checkpoint import MAX_SIGNATURE_BASE64, MAX_SIGNATURES
from provenance.wire import convert as wire
from tests.conftest import Cli, ServerProc, sign_sample
from tests.test_cited_binding import _genuine_answer


def _pad_line(key_id: int) -> str:
    """A signature line by an unknown key of the longest signature a note may carry."""
    raw = key_id.to_bytes(4, "big") + bytes(MAX_SIGNATURE_BASE64 // 4 * 3 - 4)
    return f"\u2014 pad.example/x {base64.b64encode(raw).decode()}\n"


def test_padded_checkpoint_notes_are_checked_but_not_kept(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    sign_sample(enrolled, tmp_path, "chelsea.png")
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    answer = _genuine_answer(server.address, a)
    with ProvenanceClient(server.address) as c:
        checker = EvidenceChecker(c.log_key()[0])
    genuine = answer.evidence.claim.receipt.checkpoint
    checker.check(wire.report_from_pb(answer, "test"), server.address)  # the genuine note kept
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(24):  # each report made, checked and dropped, as a scan's rows are
            # as much as a note may carry (`MAX_NOTE_BYTES`): 99 lines of the longest signature
            pad = "".join(_pad_line(n * 100 + i) for i in range(MAX_SIGNATURES - 1))
            answer.evidence.claim.receipt.checkpoint = genuine + pad
            report = wire.report_from_pb(answer, "test")
            assert checker.check(report, server.address) is not None  # each still verifies
        del report, pad
        answer.evidence.claim.receipt.checkpoint = genuine
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 24 notes of ~0.8 MB, held twice over as str: ~39 MB kept before the fix
    assert kept < 4 << 20, f"{kept:,} bytes kept after checking 24 padded notes"
