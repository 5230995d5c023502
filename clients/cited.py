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
"""

from __future__ import annotations

from pathlib import Path

from provenance.core.claims import Verdict
from provenance.core.errors import ForeignClaimError
from provenance.core.verify import VerificationReport


def _content_sha256(path: Path) -> bytes:
    """SHA-256 of the file at ``path`` without its C2PA manifest store; b"" when it holds
    none (or cannot be read or stripped: nothing then to compare with)."""
    from provenance.c2pa.container import stored_content_sha256
    from provenance.media.image import SNIFF_BYTES, sniff_media_type

    try:
        data = path.read_bytes()
    except OSError:
        return b""
    return stored_content_sha256(data, sniff_media_type(data[:SNIFF_BYTES]))


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
    """Raise ForeignClaimError unless ``report`` (the server's answer for the bytes whose
    SHA-256, 32 bytes, is ``sent_sha256``) describes those bytes and, when its verdict
    rests on a claim's hard binding (`rests_on_hard_binding`), cites a claim binding
    them: its ``hard_binding.sha256`` is ``sent_sha256`` or the SHA-256 of the bytes
    without their C2PA manifest store (``content_sha256`` when the caller has it, b""
    for none; else computed from the file at ``path`` only when needed, a second read).
    ``server``: HOST:PORT, for the message. Costs a comparison when the claim binds the
    bytes as sent."""
    said = report.evidence.file.sha256
    if said and said != sent_sha256:
        raise ForeignClaimError(
            f"the server at {server} answered for other bytes: its report is of a file of"
            f" SHA-256 {said.hex()}, the bytes sent have {sent_sha256.hex()}; its"
            f" {report.status} verdict is not shown"
        )
    if not rests_on_hard_binding(report):
        return
    cited = report.evidence.claim
    if cited is None:
        raise ForeignClaimError(
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
    raise ForeignClaimError(
        f"the server cited a claim of other bytes: the server at {server} answered"
        f" {report.status} citing a claim (device {cited.claim.device_id.hex()[:16]},"
        f" sequence {cited.claim.sequence}) that binds SHA-256 {bound.hex()}, but the"
        f" bytes sent have {sent_sha256.hex()}{without}; its verdict is not shown"
    )
