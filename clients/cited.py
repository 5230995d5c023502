"""The claim a server's verdict rests on must bind the bytes the client sent.

A server answers VerifyFile with a verdict and its evidence (the claim, its receipt,
inclusion proof and checkpoint). All of that can be genuine and still be of another
file: a hostile or broken server, or someone on the plaintext channel, could answer
SIGNED_ORIGINAL for photo B citing the logged, witness-cosigned claim of photo A, and
every signature and proof would check. `check_cited` closes that: a verdict that rests
on a claim's hard binding (SIGNED_ORIGINAL; REVOKED_KEY of an exact match) must cite a
claim whose hard binding is the SHA-256 of the bytes sent, or of those bytes without
their C2PA manifest store (docs/c2pa.md, "What our SHA-256 hard binding covers"); and a
report must describe the bytes sent (its file SHA-256). A near copy (DERIVED, or
REVOKED_KEY of a near match) rests on a perceptual hash, which the bytes alone cannot
prove; docs/verify.md says what is and is not checked.

`check_evidence` (``prov verify --log-key``) checks the rest of the evidence itself,
with the log key the user pinned: that the cited claim's receipt carries a checkpoint
signed by that key and an inclusion proof of the claim's leaf in its tree. Without it,
a server could invent a claim of any bytes, with a receipt of its own making.
"""

from __future__ import annotations

import mmap
from pathlib import Path

from provenance.core.claims import Verdict
from provenance.core.errors import LogError, ServerEvidenceError, SignatureError
from provenance.core.verify import VerificationReport


def _content_sha256(path: Path) -> bytes:
    """SHA-256 of the file at ``path`` without its C2PA manifest store; b"" when it holds
    none (or cannot be read or stripped: nothing then to compare with). The file is
    mapped, not read into memory: its stripped bytes are hashed as they are walked
    (`stored_content_sha256`), so a hostile answer about a 2 GB video costs a read of it,
    not 6 GB of copies."""
    from provenance.c2pa.container import stored_content_sha256
    from provenance.media.image import SNIFF_BYTES, sniff_media_type

    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return stored_content_sha256(data, sniff_media_type(data[:SNIFF_BYTES]))
    except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
        return b""


def rests_on_hard_binding(report: VerificationReport) -> bool:
    """Whether ``report``'s verdict says the file is the exact bytes of its claim."""
    return report.status is Verdict.SIGNED_ORIGINAL or (
        report.status is Verdict.REVOKED_KEY and report.evidence.hash_match
    )


def check_cited(
    report: VerificationReport,
    sent_sha256: bytes,
    path: Path | None,
    server: str,
    content_sha256: bytes | None = None,
) -> None:
    """Raise ServerEvidenceError unless ``report`` (the server's answer for the bytes whose
    SHA-256, 32 bytes, is ``sent_sha256``) describes those bytes and, when its verdict
    rests on a claim's hard binding (`rests_on_hard_binding`), cites a claim binding
    them: its ``hard_binding.sha256`` is ``sent_sha256`` or the SHA-256 of the bytes
    without their C2PA manifest store (``content_sha256`` when the caller has it, b""
    for none; else computed from the file at ``path`` only when needed, a second read).
    ``server``: HOST:PORT, for the message. Costs a comparison when the claim binds the
    bytes as sent."""
    said = report.evidence.file.sha256
    if said and said != sent_sha256:
        raise ServerEvidenceError(
            f"the server at {server} answered for other bytes: its report is of a file of"
            f" SHA-256 {said.hex()}, the bytes sent have {sent_sha256.hex()}; its"
            f" {report.status} verdict is not shown"
        )
    if not rests_on_hard_binding(report):
        return
    cited = report.evidence.claim
    if cited is None:
        raise ServerEvidenceError(
            f"the server at {server} answered {report.status} citing no claim; the verdict"
            " is not shown"
        )
    bound = cited.claim.hard_binding.sha256
    if bound == sent_sha256:
        return
    if content_sha256 is None:
        content_sha256 = _content_sha256(path) if path is not None else b""
    if content_sha256 and bound == content_sha256:
        return
    without = f" ({content_sha256.hex()} without its Content Credentials)" if content_sha256 else ""
    raise ServerEvidenceError(
        f"the server cited a claim of other bytes: the server at {server} answered"
        f" {report.status} citing a claim (device {cited.claim.device_id.hex()[:16]},"
        f" sequence {cited.claim.sequence}) that binds SHA-256 {bound.hex()}, but the"
        f" bytes sent have {sent_sha256.hex()}{without}; its verdict is not shown"
    )


#: Verdicts that rest on a logged claim: their evidence is checked by `check_evidence`.
CITES_LOGGED_CLAIM = (Verdict.SIGNED_ORIGINAL, Verdict.DERIVED, Verdict.REVOKED_KEY)


def check_evidence(report: VerificationReport, vkey: str, server: str) -> int | None:
    """Check the receipt of the claim ``report`` cites against the pinned log key
    ``vkey`` (NAME+ID+KEY, as `prov log key` prints it) with `verify_receipt`: its
    checkpoint must carry a signature of that key (c2sp.org/signed-note, the log's
    origin), its log entry must hold the cited claim, and the RFC 9162 inclusion proof
    must prove that leaf in the checkpoint's tree. Returns the checkpoint's tree size, or
    None when the verdict cites no logged claim (UNSIGNED, TAMPERED; REVOKED_KEY without
    a claim, or citing a sidecar's claim that was never logged, so has no receipt). ``server``: HOST:PORT, for the message. Raises ServerEvidenceError (exit 3)
    naming what failed; a SIGNED_ORIGINAL or DERIVED verdict with no claim or no receipt
    is refused too, as it cannot be checked."""
    from provenance.log.checkpoint import NoteVerifier, note_signers
    from provenance.log.receipt import verify_receipt

    if report.status not in CITES_LOGGED_CLAIM:
        return None
    cited = report.evidence.claim
    if report.status is Verdict.REVOKED_KEY and (cited is None or cited.receipt is None):
        return None  # a sidecar's claim never logged (no receipt), or no claim: no log's word
    said = f"the server at {server} answered {report.status}"
    if cited is None or cited.receipt is None:
        what = "no claim" if cited is None else "a claim without a receipt"
        raise ServerEvidenceError(
            f"{said} citing {what}: nothing to check against --log-key; the verdict is not shown"
        )
    verifier = NoteVerifier.from_vkey(vkey)
    wanted = f"{verifier.name}+{verifier.key_id.hex()}"
    where = f"the receipt of the claim it cites (leaf {cited.receipt.leaf_index})"
    signers = note_signers(cited.receipt.checkpoint)
    if wanted not in signers:
        raise ServerEvidenceError(
            f"{said}, but {where} has a checkpoint not signed by the log key {wanted}"
            f" (--log-key): it is signed by {', '.join(signers) or 'no key'}; the verdict is"
            " not shown"
        )
    try:
        return verify_receipt(cited.receipt, cited.signed_claim, verifier).size
    except (SignatureError, LogError) as e:  # ProofError is a LogError
        raise ServerEvidenceError(
            f"{said}, but {where} does not verify with the log key {wanted} (--log-key): {e};"
            " the verdict is not shown"
        ) from e
