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

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from provenance.core.claims import Receipt, Verdict
from provenance.core.errors import (
    FileChangedError,
    LogError,
    ServerEvidenceError,
    SignatureError,
)
from provenance.core.files import file_identity, holds_sha256
from provenance.core.verify import MAX_OTHER_CLAIMS, ClaimEvidence, VerificationReport

if TYPE_CHECKING:
    from provenance.log.checkpoint import Checkpoint

#: A file's identity as `provenance.core.files.file_identity` gives it: device, inode,
#: size (bytes), modification time (ns).
Identity = tuple[int, int, int, int]


def changed_after_upload(path: Path) -> FileChangedError:
    """The error of a file that is no longer the one whose bytes were sent: written to,
    cut or replaced after the upload, before the claim a server cited could be checked
    against it."""
    return FileChangedError(
        f"{path} changed while it was being verified (written to, cut or replaced after it"
        " was sent, before the claim the server's verdict cites could be checked against"
        " it, so that verdict may be of bytes the file no longer holds): verify it again"
        " once nothing writes it"
    )


def file_content_sha256(f: IO[bytes]) -> bytes:
    """SHA-256 of the open file ``f`` (any position; its flushed bytes are read) without
    its C2PA manifest store; b"" when it holds none (or cannot be read or stripped:
    nothing then to compare with). Read by position as it is walked
    (`provenance.core.files.FileView`), its stripped bytes hashed as they come, never the
    whole file in memory. ``prov web`` passes its spool of an upload
    (`provenance.web.upload`). Raises FileChangedError when the file gets shorter while
    it is read."""
    from provenance.c2pa.container import stored_content_sha256
    from provenance.core.files import FileView
    from provenance.media.image import SNIFF_BYTES, sniff_media_type

    try:
        fd = f.fileno()
        name = getattr(f, "name", None)  # an unlinked temporary file's is its descriptor
        data = FileView(fd, os.fstat(fd).st_size, name if isinstance(name, str) else "the file")
        return stored_content_sha256(data, sniff_media_type(data[:SNIFF_BYTES]))
    except OSError:
        return b""


def read_log_key(value: str) -> str:
    """The log verifier key NAME+ID+KEY that ``--log-key VALUE`` names: ``value`` itself,
    or the stripped text of the file it names (`provenance.witness.client.read_key_text`;
    `clients.options.verifier_key` checked it is one). Raises ConfigError when the file
    cannot be read."""
    from provenance.witness.client import read_key_text

    return read_key_text(value)


def _refusal(server: str, said: Callable[[str], str]) -> ServerEvidenceError:
    """ServerEvidenceError saying ``said(who)``: ``who`` "the server at HOST:PORT" in its
    message, "the server" in its ``public`` text, so a web page relaying the refusal
    does not name its service's address (`provenance.web.errors.message` logs it)."""
    return ServerEvidenceError(said(f"the server at {server}"), public=said("the server"))


def _says(text: str) -> Callable[[str], str]:
    """The ``said`` of `_refusal` whose message is ``text`` after who said it: for a
    message made in a loop, where a lambda would read the loop's variables late (ruff
    B023)."""
    return lambda who: f"{who} {text}"


def _content_sha256(path: Path, identity: Identity | None = None) -> bytes:
    """SHA-256 of the file at ``path`` without its C2PA manifest store; b"" when it holds
    none (or cannot be read or stripped: nothing then to compare with). The file is read
    by position as it is walked (`provenance.core.files.FileView`: a 1 MiB buffer, never
    the file), its stripped bytes hashed as they come (`stored_content_sha256`), so a
    hostile answer about a 2 GB video costs a read of it, not 6 GB of copies; and a file
    cut short meanwhile is an error, not the SIGBUS that would kill `prov verify` were the
    file mapped. ``identity``: the file's as it was sent (None: not
    known); a file that is not that one before or after the read, or that cannot be
    opened, raises FileChangedError, as does one cut short while read."""
    from clients.files import open_regular
    from provenance.c2pa.container import stored_content_sha256
    from provenance.core.files import FileView
    from provenance.media.image import SNIFF_BYTES, sniff_media_type

    try:
        with open_regular(path) as f:
            fd = f.fileno()
            st = os.fstat(fd)
            if identity is not None and file_identity(st) != identity:
                raise changed_after_upload(path)
            data = FileView(fd, st.st_size, str(path))
            try:
                digest = stored_content_sha256(data, sniff_media_type(data[:SNIFF_BYTES]))
            except FileChangedError as e:
                raise changed_after_upload(path) from e
            if identity is not None and file_identity(os.fstat(fd)) != identity:
                raise changed_after_upload(path)
            return digest
    except OSError:
        if identity is not None:  # gone, or unreadable now: not the file that was sent
            raise changed_after_upload(path) from None
        return b""


def _still_sent(path: Path, sent_sha256: bytes, identity: Identity) -> bool:
    """Whether ``path`` is still the file of ``identity`` that was sent and still holds
    bytes of SHA-256 ``sent_sha256``: a whole second read (1 MiB at a time), made only
    before a server is blamed for citing a claim of other bytes."""
    from clients.files import open_regular

    try:
        with open_regular(path) as f:
            if file_identity(os.fstat(f.fileno())) != identity:
                return False
            same = holds_sha256(f, sent_sha256)
            return same and file_identity(os.fstat(f.fileno())) == identity
    except OSError:
        return False


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
    content_sha256: bytes | Callable[[], bytes] | None = None,
    identity: Identity | None = None,
) -> None:
    """Raise ServerEvidenceError unless ``report`` (the server's answer for the bytes whose
    SHA-256, 32 bytes, is ``sent_sha256``) describes those bytes and, when its verdict
    rests on a claim's hard binding (`rests_on_hard_binding`), cites a claim binding
    them: its ``hard_binding.sha256`` is ``sent_sha256`` or the SHA-256 of the bytes
    without their C2PA manifest store (``content_sha256`` when the caller has it, b""
    for none, or a function returning it, called only when needed; else computed from
    the file at ``path`` only when needed, a second read). ``server``: HOST:PORT, for
    the message (its ``public`` text says "the server" alone). Costs a comparison when
    the claim binds the bytes as sent. Raises what ``content_sha256`` raises. Each of
    the report's other claims (``evidence.other_claims``, the "also" signed lines of
    any verdict) must bind them too (none is shown unchecked),
    and no claim may be listed twice (`_listed_once`).

    ``identity``: the file's (`provenance.core.files.file_identity`) when its bytes were
    sent. With it, a file that changed since (written to, cut, replaced, removed) raises
    FileChangedError instead, the server not blamed: seen by the second read's identity
    checks, and, before a claim is refused as of other bytes, by a whole re-read that
    must give ``sent_sha256`` again (not "the server cited a claim of other bytes",
    exit 3)."""
    said = report.evidence.file.sha256
    if said and said != sent_sha256:
        raise _refusal(
            server,
            lambda who: (
                f"{who} answered for other bytes: its report is of a file of"
                f" SHA-256 {said.hex()}, the bytes sent have {sent_sha256.hex()}; its"
                f" {report.status} verdict is not shown"
            ),
        )
    claims = list(report.evidence.other_claims)  # "also" signed: of these bytes too
    if claims:
        _listed_once(report, server)
    main = rests_on_hard_binding(report)
    if main:
        cited = report.evidence.claim
        if cited is None:
            raise _refusal(
                server,
                lambda who: (
                    f"{who} answered {report.status} citing no claim; the verdict is not shown"
                ),
            )
        claims.insert(0, cited)
    content: bytes | None = None
    for i, cited in enumerate(claims):
        bound = cited.claim.hard_binding.sha256
        if bound == sent_sha256:
            continue
        if content is None:
            if content_sha256 is None:
                content = _content_sha256(path, identity) if path is not None else b""
            elif callable(content_sha256):
                content = content_sha256()
            else:
                content = content_sha256
        if content and bound == content:
            continue
        if (
            path is not None
            and identity is not None
            and not _still_sent(path, sent_sha256, identity)
        ):
            raise changed_after_upload(path)
        also = i > 0 or not main
        raise _other_bytes(report, server, cited, sent_sha256, content, also)


def check_lookup_verdict(status: Verdict, cites: bool, others: int, server: str) -> None:
    """Raise ServerEvidenceError unless a Lookup answer (a verdict from hashes alone, as
    `prov scan` and `prov web`'s ``POST /api/v1/lookup`` ask it) is one an honest service
    gives a lookup: ``status`` its verdict, ``cites`` whether it cites a claim
    (``evidence.claim``), ``others`` how many claims it lists as also signed
    (``evidence.other_claims``), ``server`` HOST:PORT for the message (its ``public``
    text says "the server" alone). A lookup sends no bytes and no sidecar, so the service
    decides it from the log's claims alone (`provenance.core.verify.decide` with exact and
    near candidates only; `ProvenanceService.verify_many`), and (what is checked here:
    ``status`` against ``cites`` and ``others``, nothing else of the answer):

    * never answers TAMPERED: that verdict rests on a sidecar's or an embedded claim
      (none comes with a lookup) or on a logged claim of the exact bytes that no longer
      verifies, which `rank_exact` leaves out before any verdict is made;
    * answers UNSIGNED citing no claim and listing none: the verifier makes a lookup's
      UNSIGNED with the evidence of the file alone, both when nothing matched
      (`provenance.core.verify._unsigned`) and when a search cut at its time budget
      found only near copies that their key's revocation covers
      (`provenance.core.verify._revoked_source` with ``cut``);
    * answers REVOKED_KEY citing the claim it rests on (of the exact bytes or a near
      copy's).

    So a relay answering a lookup TAMPERED or UNSIGNED beside some genuine claim, shown as
    if it were this file's (`check_cited` alone checks only a verdict resting on a
    claim's hard binding), is refused; the rest (the claim binds the query's
    bytes, `check_cited`; a near copy's its PDQ hashes, `clients.derived.check_soft_cited`)
    is checked there. Not for `prov verify`'s VerifyFile answers: with a sidecar, an
    honest TAMPERED cites the sidecar's claim of other bytes."""
    if status is Verdict.TAMPERED:
        said = (
            "answered TAMPERED to a lookup, which an honest service never does (a lookup"
            " sends hashes alone, no sidecar or embedded claim for them to contradict); the"
            " verdict is not shown"
        )
    elif status is Verdict.UNSIGNED and (cites or others):
        what = (
            "citing a claim"
            if cites
            else f"listing {others} claim{'s' * (others > 1)} as also signed"
        )
        said = (
            f"answered UNSIGNED {what}, which an honest service's UNSIGNED answer to a lookup"
            " never does (it cites none); the verdict is not shown"
        )
    elif status is Verdict.REVOKED_KEY and not cites:
        said = (
            "answered REVOKED_KEY citing no claim, which an honest service's answer to a"
            " lookup never does (it cites the revoked key's claim it rests on); the verdict"
            " is not shown"
        )
    else:
        return
    raise _refusal(server, _says(said))


def receipt_named(ev: ClaimEvidence, receipt: Receipt) -> str:
    """The claim of ``ev`` and its ``receipt``'s leaf as messages name them: "device
    HEX16, sequence N, leaf L" (`EvidenceChecker`, `clients.cosigned.check_witnesses`)."""
    return (
        f"device {ev.claim.device_id.hex()[:16]}, sequence {ev.claim.sequence},"
        f" leaf {receipt.leaf_index}"
    )


def _listed_once(report: VerificationReport, server: str) -> None:
    """Raise ServerEvidenceError when ``report`` lists one claim more than once, among its
    other claims or as its cited claim too: an honest server lists each claim of the
    bytes once (`provenance.core.verify.rank_exact`, one per claim hash), so a repeat
    only makes one signer look like several."""
    ev = report.evidence
    seen: set[bytes] = set()
    for c in (*((ev.claim,) if ev.claim is not None else ()), *ev.other_claims):
        digest = c.signed_claim.claim_hash
        if digest in seen:
            said = (
                f"answered {report.status} listing a claim (device"
                f" {c.claim.device_id.hex()[:16]}, sequence {c.claim.sequence}) more than"
                " once among the claims of these bytes; the verdict is not shown"
            )
            raise _refusal(server, _says(said))
        seen.add(digest)


def _other_bytes(
    report: VerificationReport,
    server: str,
    cited: ClaimEvidence,
    sent_sha256: bytes,
    content: bytes,
    also: bool,
) -> ServerEvidenceError:
    """`check_cited`'s refusal of ``report`` citing ``cited``, a claim of other bytes than
    those sent (``content``: their SHA-256 without Content Credentials, b"" for none);
    ``also``: listed among the other claims of these bytes (the "also" lines)."""
    without = f" ({content.hex()} without its Content Credentials)" if content else ""
    how = "listing as also signed" if also else "citing"
    bound = cited.claim.hard_binding.sha256
    return _refusal(
        server,
        lambda who: (
            f"the server cited a claim of other bytes: {who} answered"
            f" {report.status} {how} a claim (device {cited.claim.device_id.hex()[:16]},"
            f" sequence {cited.claim.sequence}) that binds SHA-256 {bound.hex()}, but the"
            f" bytes sent have {sent_sha256.hex()}{without}; its verdict is not shown"
        ),
    )


#: Verdicts that rest on a logged claim: their evidence is checked by `check_evidence`.
CITES_LOGGED_CLAIM = (Verdict.SIGNED_ORIGINAL, Verdict.DERIVED, Verdict.REVOKED_KEY)


def logged_receipt(report: VerificationReport, server: str, pinned: str) -> ClaimEvidence | None:
    """The evidence of the claim ``report`` cites when it carries a receipt to check
    against what the user pinned (``pinned``: "--log-key" or "--witness", for the
    message), else None: no claim, or one without a receipt (a sidecar's claim never
    logged). The receipt decides, not the server's ``in_log`` flag, which checks nothing
    (a hostile server's ``in_log`` false would skip `prov verify --witness`'s
    policy). Raises ServerEvidenceError (exit 3) for a SIGNED_ORIGINAL or
    DERIVED verdict citing no claim or a claim without a receipt: such a verdict rests
    on a logged claim, and there is nothing to check. ``server``: HOST:PORT."""
    cited = report.evidence.claim
    if cited is not None and cited.receipt is not None:
        return cited
    status = report.status
    if status not in (Verdict.SIGNED_ORIGINAL, Verdict.DERIVED):
        return None  # REVOKED_KEY of a sidecar's claim never logged, UNSIGNED, TAMPERED
    what = "no claim" if cited is None else "a claim without a receipt"
    raise _refusal(
        server,
        lambda who: (
            f"{who} answered {status} citing {what}: nothing to check against"
            f" {pinned}; the verdict is not shown"
        ),
    )


def check_evidence(report: VerificationReport, vkey: str, server: str) -> int | None:
    """Check the receipt of the claim ``report`` cites against the pinned log key
    ``vkey`` (NAME+ID+KEY, as `prov log key` prints it) with `verify_receipt`: its
    checkpoint must carry a signature of that key (c2sp.org/signed-note, the log's
    origin), its log entry must hold the cited claim, and the RFC 9162 inclusion proof
    must prove that leaf in the checkpoint's tree. Returns the checkpoint's tree size, or
    None when the verdict cites no logged claim (UNSIGNED, TAMPERED; REVOKED_KEY without
    a claim, or citing a sidecar's claim that was never logged, so has no receipt).
    ``server``: HOST:PORT, for the message. Raises ServerEvidenceError (exit 3) naming
    what failed; a SIGNED_ORIGINAL or DERIVED verdict with no claim or no receipt is
    refused too, as it cannot be checked. `EvidenceChecker` does the same for many
    reports, each checkpoint's signature checked once."""
    return EvidenceChecker(vkey).check(report, server)


class EvidenceChecker:
    """`check_evidence` with one pinned log key ``vkey`` for many reports (`prov scan
    --log-key`): the key is parsed once, and each checkpoint note's signature verified
    once (up to `CHECKPOINTS_KEPT` notes of at most `KEPT_NOTE_CHARS` are kept, then it
    starts again), so the files of a scan whose receipts share the server's checkpoint
    cost an inclusion proof each, not an Ed25519 verification. A longer note is verified
    each time, never kept: a hostile server can pad the genuine checkpoint with signature
    lines of its own (they are passed over) up to its 8 MiB reply, a new note each time,
    and 256 of them kept would hold gigabytes in each scan worker. Raises
    LogError or KeyMaterialError for a malformed ``vkey``. ``pinned``: the option the
    key is checked for, as messages name it ("--log-key"; "--witness" when
    `clients.cosigned.check_witnesses` proves the receipts with the server's own key
    before checking its policy on them)."""

    #: Most opened checkpoint notes kept.
    CHECKPOINTS_KEPT = 256
    #: Longest note kept (characters): a checkpoint signed by the log and by the most
    #: cosigners a note may name (`MAX_SIGNATURES`, 100) with key names of up to 60
    #: characters is under 16,000 (a line: 96 characters and the name). A longer genuine
    #: note is only verified for each file, as `check_evidence` does.
    KEPT_NOTE_CHARS = 16 * 1024

    def __init__(self, vkey: str, pinned: str = "--log-key") -> None:
        from provenance.log.checkpoint import NoteVerifier

        self.pinned = pinned
        self.verifier = NoteVerifier.from_vkey(vkey)
        self.wanted = f"{self.verifier.name}+{self.verifier.key_id.hex()}"
        self._opened: dict[str, Checkpoint] = {}

    def check(self, report: VerificationReport, server: str) -> int | None:
        """`check_evidence` of ``report`` with this key; returns and raises as it does.
        The receipt of each of its other claims (the "also" signed lines) is proven too
        (none is shown unproven), and one listed without a receipt is refused (not
        shown, "not in the log"). `prov verify --witness`
        runs it too, with the server's own key when none is pinned, before checking its
        policy on the same receipts (`clients.cosigned.check_witnesses`). An answer
        listing more than `MAX_OTHER_CLAIMS` of them, as an honest server never does, is
        refused before any is proven: under --witness each is a round of calls to the
        server (a hostile server listing thousands would hold the client for as many
        rounds). The cited claim's receipt is proven first, so that a wrong pinned key is
        named on the claim the verdict rests on, not on an "also" one."""
        listed = len(report.evidence.other_claims)
        if listed > MAX_OTHER_CLAIMS:
            said = (
                f"answered {report.status} listing {listed:,} claims as also signed; an"
                f" honest server lists at most {MAX_OTHER_CLAIMS} (and counts the rest in"
                " a note): none was checked; the verdict is not shown"
            )
            raise _refusal(server, _says(said))
        size = None  # the cited claim's first: with a wrong key, its receipt is the one named
        if report.status in CITES_LOGGED_CLAIM:
            cited = logged_receipt(report, server, self.pinned)
            if cited is not None and cited.receipt is not None:
                size = self._prove(
                    cited, cited.receipt, report.status, server, "the claim it cites"
                )
        which = "another claim it lists as also signed"
        for other in report.evidence.other_claims:
            if other.receipt is None:  # an honest server lists logged claims, with receipts
                said = (
                    f"answered {report.status}, but {which} (device"
                    f" {other.claim.device_id.hex()[:16]}, sequence {other.claim.sequence})"
                    f" has no receipt: nothing to check against {self.pinned}; the verdict is"
                    " not shown"
                )
                raise _refusal(server, _says(said))
            self._prove(other, other.receipt, report.status, server, which)
        return size

    def _prove(
        self, cited: ClaimEvidence, receipt: Receipt, status: Verdict, server: str, which: str
    ) -> int:
        """The tree size of the checkpoint ``cited``'s ``receipt`` is proven in with this
        key; ServerEvidenceError naming ``which`` claim of a ``status`` answer when it is
        not."""
        from provenance.log.checkpoint import note_signers, open_checkpoint
        from provenance.log.receipt import prove_receipt
        from provenance.terminal import clipped_line

        where = f"the receipt of {which} ({receipt_named(cited, receipt)})"
        note = receipt.checkpoint
        try:
            checkpoint = self._opened.get(note)
            if checkpoint is None:
                signers = note_signers(note)
                if self.wanted not in signers:
                    by = ", ".join(clipped_line(s, 80) for s in signers) or "no key"
                    raise _refusal(
                        server,
                        lambda who: (
                            f"{who} answered {status}, but {where} has a checkpoint not"
                            f" signed by the log key {self.wanted} ({self.pinned}): it is"
                            f" signed by {by}; the verdict is not shown"
                        ),
                    )
                checkpoint = open_checkpoint(note, self.verifier)
                if len(note) <= self.KEPT_NOTE_CHARS:
                    if len(self._opened) >= self.CHECKPOINTS_KEPT:
                        self._opened.clear()
                    self._opened[note] = checkpoint
            prove_receipt(receipt, cited.signed_claim, checkpoint)
        except (SignatureError, LogError) as e:  # ProofError is a LogError
            if isinstance(e, ServerEvidenceError):
                raise
            why = str(e)
            raise _refusal(
                server,
                lambda who: (
                    f"{who} answered {status}, but {where} does not verify with the log"
                    f" key {self.wanted} ({self.pinned}): {why}; the verdict is not shown"
                ),
            ) from e
        return checkpoint.size
