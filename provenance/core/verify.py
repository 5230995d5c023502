"""The verdict: combine bindings, signatures, key status and the log into a report.

Pure: the caller (the server) gathers the facts about a file and the candidate log
records from the store; `decide` turns them into a `VerificationReport`. The
detector's block is advisory and attached by the caller; it never changes the status.

Rules, in order (DESIGN.md, "The verdict"):

0. Exact bytes in the log decide first: a logged, validly signed claim whose hard
   binding covers the file gives ``SIGNED_ORIGINAL`` (or ``REVOKED_KEY``) whatever
   sidecar comes with it (the report notes a sidecar for another claim, or one whose
   signature does not verify under the enrolled key: it is ignored). When several
   such claims bind the bytes, the best-standing one decides (`rank_exact`: a claim its
   key's revocation does not cover before one it covers, then the lowest log index); the
   others are reported as evidence (``Evidence.other_claims``, same order, each with a
   reason, a revoked one with its revocation), and a sidecar holding one of them is
   named as such, never as another claim. At most `MAX_EXACT_CLAIMS` claims per file
   hash are examined, the first by log index (the caller's store read stops there), so
   hostile input cannot make a verification check an unbounded number of claims.
1. A sidecar claim is present:
   - its signature does not verify against the enrolled key, or its SHA-256 differs
     from the file's: ``TAMPERED`` (with the PDQ distance between the claimed and the
     actual pixels as evidence, when both exist, and the damaged byte ranges of a
     video whose sidecar lists its chunk hashes); but a sidecar that describes a
     different picture (PDQ distance over the threshold) beside a near copy of another
     signed capture is not used: the near copy's ``DERIVED`` stands, with a note;
   - its key is not enrolled with this log: it is not evidence about these bytes (its
     signature cannot be checked against an enrolled key, and anyone can make one), so
     it is not used: the verdict follows from the log (rules 3 and 4: ``DERIVED`` or
     ``UNSIGNED``), and a reason names the sidecar: signed by a key this log does not
     know when its signature verifies under the public key it carries, a bad signature
     when it does not even verify under that key, unchecked when it carries none;
   - it verifies, matches the bytes, and is logged: ``SIGNED_ORIGINAL``, or
     ``REVOKED_KEY`` when it was integrated at or after the key's revocation time;
   - it verifies and matches but is not in the log: ``REVOKED_KEY`` if the key is
     revoked, else ``UNSIGNED`` (an unlogged claim proves nothing about time).
2. No sidecar: a logged claim with the file's SHA-256 -> ``SIGNED_ORIGINAL`` (or
   ``REVOKED_KEY`` as above).
3. A logged claim whose PDQ hash is within ``PDQ_MATCH_THRESHOLD`` bits of the file's,
   or of one of its 7 rotations and mirror images (`provenance.core.dihedral`; both of quality
   >= ``PDQ_MIN_QUALITY``) -> ``DERIVED``, with the transform in the evidence. A capture
   logged at or after its key's revocation (itself ``REVOKED_KEY``) cannot vouch for a
   copy: the closest capture not so covered is used; when only such captures match,
   ``REVOKED_KEY``, with the match as evidence (a re-encode must not turn a stolen key's
   capture into a ``DERIVED`` copy).
4. Otherwise ``UNSIGNED``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from provenance.core.binding import PDQ_MATCH_THRESHOLD, PDQ_MIN_QUALITY, PerceptualHash, hamming
from provenance.core.claim_bounds import missing_fields, missing_fields_text
from provenance.core.claims import Claim, Device, Receipt, SignedClaim, TimeFlag, Verdict
from provenance.core.dihedral import (
    DIHEDRAL_TURNS,
    TRANSFORMS,
    best_dihedral_distance,
    turn_notes,
    turned_note,
)
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, verify_payload
from provenance.core.errors import BindingError, ClaimError, KeyMaterialError, SignatureError
from provenance.core.keys import check_public_key, key_id
from provenance.core.registry import check_claim_shape
from provenance.core.timetext import utc_text
from provenance.core.video_binding import check_chunk_hashes, file_ranges, locate_damage
from provenance.core.video_match import VideoMatch, match_video

#: The reason of an UNSIGNED verdict on a valid sidecar claim that is not in the log.
UNLOGGED_SIDECAR_REASON = (
    "the sidecar's signature is valid and matches the bytes, but the claim is not in"
    " the log: nothing proves when it was made (submit it with `prov device sync`)"
)
#: How the reason of an UNSIGNED verdict on a valid sidecar claim that is not in the log
#: and that the log refuses begins (`unloggable_sidecar_reason`; the refusal follows).
UNLOGGABLE_SIDECAR_PREFIX = (
    "the sidecar's signature is valid and matches the bytes, but the claim is not in"
    " the log, and the log refuses it ("
)

#: What a TAMPERED reason says of a file whose pixels are PDQ distance 0 from its sidecar's
#: claim: its bytes changed, but PDQ sees no edit ("a close copy with edits" read as an
#: edited picture to a newsroom that had only re-saved a JPEG).
_SAME_PICTURE = (
    "the same picture to PDQ, its bytes changed (re-saved or re-encoded, metadata edited,"
    " data added, or an edit too small for PDQ to see)"
)

#: `_SAME_PICTURE` for a video (more than one frame hashed on either side): its distance
#: is the closest pair of frames', which says nothing of the others.
_SAME_FRAME = (
    "at least one frame is the same picture to PDQ as one of the signed capture's, its"
    " bytes changed; its other frames may show other pixels (edited, cut or added)"
)


def _several_frames(facts: FileFacts, claim: Claim) -> bool:
    """Whether ``facts`` or ``claim`` holds more than one PDQ hash (a video's frames; an
    image has one), so that `best_pdq_distance` is the closest pair's alone."""
    return max(len(facts.soft_bindings), len(claim.soft_bindings)) > 1


def is_unlogged_sidecar_reason(reason: str) -> bool:
    """Whether ``reason`` is one of the advice reasons of a valid sidecar claim missing from
    the log: `UNLOGGED_SIDECAR_REASON` ("submit it with `prov device sync`") or an
    `unloggable_sidecar_reason` ("the log refuses it ... sign the file again")."""
    return reason == UNLOGGED_SIDECAR_REASON or reason.startswith(UNLOGGABLE_SIDECAR_PREFIX)


@dataclass(frozen=True)
class FileFacts:
    """What was measured on the file itself: SHA-256 (32 bytes), size in bytes,
    sniffed media type, its perceptual hashes (empty when not decodable), and for a
    file carrying a C2PA manifest store the SHA-256 of its bytes with the store removed
    (``content_sha256``, what a claim binds for a capture exported with Content
    Credentials; empty otherwise). For video, the soft bindings are PDQ hashes of sampled
    frames with their times, and ``chunk_hashes`` the leaf hashes of its chunks at the
    chunk size of the claim being checked (empty when not computed); for a video carrying
    a manifest store, ``content_chunk_hashes`` are those of its bytes with the store
    removed and ``content_removed`` the runs removed, (offset in the file, length in
    bytes) in file order (both empty when not computed). For an image,
    ``dihedral_soft_bindings`` are the PDQ hashes of its 7 other rotations and mirror
    images (`provenance.core.dihedral`, empty when not computed) and ``orientation`` its EXIF
    orientation tag (1..8, 0 when none). ``content_size`` is the size in bytes of what
    ``content_sha256`` hashes (0 when not computed)."""

    sha256: bytes
    size: int
    media_type: str
    soft_bindings: tuple[PerceptualHash, ...] = ()
    notes: tuple[str, ...] = ()
    content_sha256: bytes = b""
    chunk_hashes: tuple[bytes, ...] = ()
    content_chunk_hashes: tuple[bytes, ...] = ()
    content_removed: tuple[tuple[int, int], ...] = ()
    dihedral_soft_bindings: tuple[PerceptualHash, ...] = ()
    orientation: int = 0
    content_size: int = 0

    def binds(self, claimed_sha256: bytes) -> bool:
        """Whether a claim's hard binding covers these bytes (raw, or manifest-stripped)."""
        return claimed_sha256 in (self.sha256, self.content_sha256)


@dataclass(frozen=True)
class LoggedClaim:
    """A claim as the log holds it, with the device record of its key. The caller has
    checked its receipt (checkpoint signature and inclusion proof) with the log key."""

    signed_claim: SignedClaim
    claim: Claim
    receipt: Receipt
    device: Device
    chain_linked: bool
    receipt_verified: bool = False

    @property
    def integrated_at(self) -> datetime:
        return self.receipt.integrated_at

    def evidence(self, signature_valid: bool) -> ClaimEvidence:
        """This logged claim as the evidence of a report."""
        return ClaimEvidence(
            self.signed_claim,
            self.claim,
            self.device,
            self.receipt,
            signature_valid,
            True,
            self.chain_linked,
            self.receipt_verified,
        )


@dataclass(frozen=True)
class ClaimEvidence:
    """The claim a verdict rests on, and what was checked about it."""

    signed_claim: SignedClaim
    claim: Claim
    device: Device | None
    receipt: Receipt | None
    signature_valid: bool
    in_log: bool
    chain_linked: bool
    receipt_verified: bool = False


@dataclass(frozen=True)
class Evidence:
    """Everything the verdict was based on (distances in bits of Hamming distance; for
    video the time-aligned frame match, and the damaged byte ranges, inclusive, of a
    TAMPERED file whose sidecar lists its chunk hashes; implausible capture times of the
    claim, `provenance.core.timecheck`; ``other_claims``: the other logged claims that
    bind the same exact bytes when several do, best-standing first, at most
    `MAX_OTHER_CLAIMS`; ``claim_embedded``: the sidecar claim came embedded in the file's
    C2PA manifest, no sidecar file with it, ``sidecar_present`` then true too;
    ``near_search_cut``: the search for signed near copies (PDQ) stopped at the server's
    time budget for it before its end, after ``near_search_seconds``, so the near
    candidates judged are the best it found by then, not all: `decide`'s ``near_cut_s``)."""

    file: FileFacts
    claim: ClaimEvidence | None = None
    sidecar_present: bool = False
    hash_match: bool = False
    pdq_distance: int | None = None
    pdq_threshold: int = PDQ_MATCH_THRESHOLD
    video_match: VideoMatch | None = None
    damaged_ranges: tuple[tuple[int, int], ...] = ()
    time_flags: tuple[TimeFlag, ...] = ()
    pdq_transform: str = ""
    other_claims: tuple[ClaimEvidence, ...] = ()
    claim_embedded: bool = False
    near_search_cut: bool = False
    near_search_seconds: float = 0.0


@dataclass(frozen=True)
class VerificationReport:
    """The structured verdict on one file. ``detector`` is the advisory block (a
    JSON-able dict from the detector package) or None when not run; ``c2pa`` the
    Content Credentials found in the file (a separate line of evidence) or None;
    ``pixels_checked``: set by a client that checked a near copy's verdict on the file's
    own pixels (`clients.derived.check_derived`): True when they matched the cited
    claim's, False when the file was over the client's own limits (not hashed); None
    for any other verdict, or a report no client checked (never on the wire: a server
    cannot set it)."""

    status: Verdict
    reasons: tuple[str, ...]
    evidence: Evidence
    verified_at: datetime
    detector: dict[str, Any] | None = field(default=None)
    c2pa: dict[str, Any] | None = field(default=None)
    pixels_checked: bool | None = field(default=None)


def signature_ok(signed: SignedClaim, device: Device | None) -> bool:
    """True when ``signed`` verifies strictly under ``device``'s enrolled key."""
    if device is None or signed.key_id != device.device_id:
        return False
    return _verifies_under(signed, device.public_key)


def _verifies_under(signed: SignedClaim, public_key: bytes) -> bool:
    """True when ``signed`` is a claim envelope whose signature verifies strictly under
    ``public_key`` (raw 32 bytes; DSSE PAE over Ed25519, `envelope.verify_payload`)."""
    if signed.payload_type != PAYLOAD_TYPE_CLAIM:
        return False
    try:
        verify_payload(public_key, signed.payload_type, signed.claim_bytes, signed.signature)
    except (SignatureError, KeyMaterialError):
        return False
    return True


def best_pdq_distance(a: Sequence[PerceptualHash], b: Sequence[PerceptualHash]) -> int | None:
    """Smallest Hamming distance between usable PDQ hashes of ``a`` and ``b``.

    Hashes with quality below ``PDQ_MIN_QUALITY`` are ignored (ThreatExchange PDQ
    guidance). Returns None when either side has no usable hash.
    """
    usable_a = [h for h in a if h.algorithm == "pdq" and h.quality >= PDQ_MIN_QUALITY]
    usable_b = [h for h in b if h.algorithm == "pdq" and h.quality >= PDQ_MIN_QUALITY]
    if not usable_a or not usable_b:
        return None
    return min(hamming(x.hash, y.hash) for x in usable_a for y in usable_b)


def _revocation(device: Device, at: datetime | None = None) -> str | None:
    """``the key was revoked at TIME (REASON)`` when ``device``'s revocation covers a claim
    integrated at ``at`` (None, the default: a claim never logged, which any revocation
    covers, so the default asks whether the key is revoked at all); None when it does not."""
    if device.revoked_at is None or (at is not None and at < device.revoked_at):
        return None
    when = utc_text(device.revoked_at)
    return f"the key was revoked at {when} ({device.revocation_reason or 'no reason given'})"


def _logged_verdict(
    facts: FileFacts, lc: LoggedClaim, now: datetime, *, sidecar: bool
) -> VerificationReport:
    sig = signature_ok(lc.signed_claim, lc.device)
    ev = Evidence(
        file=facts,
        claim=lc.evidence(signature_valid=sig),
        sidecar_present=sidecar,
        hash_match=True,
    )
    where = f"log index {lc.receipt.leaf_index}"
    # a `prov sign --c2pa` export binds its claim by the bytes with the manifest removed
    matched = (
        "exact bytes"
        if lc.claim.hard_binding.sha256 == facts.sha256
        else "the file's bytes without its C2PA manifest"
    )
    if not sig:
        return VerificationReport(
            Verdict.TAMPERED,
            (f"the logged claim at {where} no longer verifies under the enrolled key",),
            ev,
            now,
        )
    if (revoked := _revocation(lc.device, lc.integrated_at)) is not None:
        return VerificationReport(
            Verdict.REVOKED_KEY,
            (f"{matched} match a claim at {where}, but {revoked}, before that claim was logged",),
            ev,
            now,
        )
    receipt = (
        "its receipt (signed checkpoint and inclusion proof) verifies with the log key"
        if lc.receipt_verified
        else "its receipt was NOT checked against the log key"
    )
    reasons = [
        f"{matched} (SHA-256) match a validly signed claim at {where},"
        f" logged {lc.integrated_at:%Y-%m-%d %H:%M:%S} UTC; {receipt}"
    ]
    if not lc.chain_linked:
        reasons.append(
            "note: this claim does not directly follow the device's previous logged claim"
            " (a gap or a break in its sequence chain)"
        )
    if (revoked := _revocation(lc.device)) is not None:
        reasons.append(f"note: {revoked}, after this claim was logged")
    if missing := missing_fields(lc.claim):
        reasons.append(missing_fields_note(lc.claim.media_type, missing))
    if (size := size_mismatch_note(facts, lc.claim)) is not None:
        reasons.append(size)
    return VerificationReport(Verdict.SIGNED_ORIGINAL, tuple(reasons), ev, now)


def size_mismatch_note(facts: FileFacts, claim: Claim) -> str | None:
    """The note of a verdict on a file whose bytes a claim binds (its SHA-256 matches) but
    whose size is not the claim's ``size_bytes``; None when they agree or either is not
    known (0: a Lookup sends no size; an entry logged before a size was required states
    none, `missing_fields_note`). The size compared is the file's, or for a claim that
    binds the file without its C2PA manifest store (`FileFacts.binds`), the size of those
    bytes (``content_size``). Such a claim misstates its file: `prov sign` measures the
    size, and the log cannot check it (a submission carries the claim, not the file), so
    the verifier is the first to see both. The hash decides the verdict all the same."""
    exact = claim.hard_binding.sha256 == facts.sha256
    actual = facts.size if exact else facts.content_size
    if not actual or not claim.size_bytes or claim.size_bytes == actual:
        return None
    what = "this file is" if exact else "this file without its C2PA manifest is"
    return (
        f"note: the claim states size_bytes {claim.size_bytes:,}, but {what} {actual:,}"
        " bytes: the signed claim misstates the size of the bytes it binds (`prov sign`"
        " measures it); its signature and its SHA-256 of the bytes decide the verdict all"
        " the same"
    )


def missing_fields_note(media_type: str, missing: list[str]) -> str:
    """The note of a verdict on a logged claim that lacks fields DESIGN.md gives a claim of
    its media type (``missing``, `claim_bounds.missing_fields`): the log refuses such a
    claim now, but this one was logged before it did, and its hard binding still decides."""
    return (
        f"note: this {media_type} claim states no {missing_fields_text(missing)}: it was"
        " logged before the log required them of new claims; its signature and its SHA-256"
        " of the bytes decide the verdict all the same"
    )


def decide(
    facts: FileFacts,
    now: datetime,
    *,
    sidecar: SignedClaim | None = None,
    sidecar_claim: Claim | None = None,
    sidecar_device: Device | None = None,
    sidecar_logged: LoggedClaim | None = None,
    exact: Sequence[LoggedClaim] = (),
    near: Sequence[LoggedClaim] = (),
    sidecar_chunk_hashes: Sequence[bytes] = (),
    exact_more: bool = False,
    sidecar_public_key: bytes = b"",
    near_cut_s: float | None = None,
) -> VerificationReport:
    """Return the verdict on a file.

    Args:
        facts: measurements of the file.
        now: the verification time (UTC), recorded in the report.
        sidecar / sidecar_claim: the sidecar's signed claim and its decoded claim.
        sidecar_device: the registry record of the sidecar's key id, if enrolled.
        sidecar_logged: the log's record of the sidecar's claim, if logged.
        exact: logged claims found by the file's SHA-256 (re-checked here against each
            claim's own hard binding: an index is never trusted on its own).
        near: logged claims that are perceptual-hash candidates (the caller's index
            may return a superset; distances are re-checked here).
        sidecar_chunk_hashes: for video, the sidecar's chunk leaf hashes (checked against
            the signed root before they are used to name damaged byte ranges).
        exact_more: the caller's store read of ``exact`` stopped at `MAX_EXACT_CLAIMS`
            claims of a file hash and more bind it (the report then says so: the
            verdict is among the first `MAX_EXACT_CLAIMS` by log index).
        sidecar_public_key: the raw 32-byte Ed25519 key the sidecar carries (empty when
            none came): used only to word the reason on a sidecar whose key is not
            enrolled (its signature checked under that key); it never makes it trusted.
        near_cut_s: the seconds after which the caller's search for ``near`` stopped at
            its time budget before its end (None: it ran to its end, or did not run):
            the report says so (`near_search_cut`), an UNSIGNED one does not say
            that no claim matches the pixels, and a near copy whose matching captures
            found are all covered by their key's revocation is UNSIGNED, not REVOKED_KEY
            (an unrevoked capture the search did not reach may match it:
            `_revoked_source`).

    Logged claims come with receipts the caller has verified against the log key.
    Pure and total: it raises nothing for any combination of inputs.
    Exact bytes in the log decide first: a sidecar beside them that is damaged, forged,
    unlogged or for another capture cannot make a logged original read otherwise (the
    report notes it).
    """
    if sidecar is None and not exact and not near and not exact_more and near_cut_s is None:
        return _unsigned(facts, now)  # nothing to rank or compare: most files a scan asks
    report = _decide(
        facts,
        now,
        sidecar,
        sidecar_claim,
        sidecar_device,
        sidecar_logged,
        exact,
        near,
        sidecar_chunk_hashes,
        sidecar_public_key,
        near_cut_s is not None,
    )
    if near_cut_s is not None:
        report = near_search_cut(report, near_cut_s)
    if not exact_more:
        return report
    return replace(report, reasons=(*report.reasons, EXACT_BOUND_NOTE))


def near_search_cut(report: VerificationReport, seconds: float) -> VerificationReport:
    """``report`` marked as judged on a search for signed near copies that stopped at the
    server's time budget (``seconds`` after it began, `prov serve
    --verify-search-seconds`) before its end: ``near_search_cut`` and
    ``near_search_seconds`` set, and a reason saying so in place of `NO_MATCH_REASON`
    (which would claim that no claim matches the pixels), else after the others. A
    verdict on exact bytes or on a sidecar's signature stands as it is."""
    said = (
        f"the search for signed near copies of these pixels was cut short after {seconds:.1f} s"
        " (the server's time budget for it, --verify-search-seconds), so a signed capture"
        " it did not reach may match them"
    )
    again = "asking again searches further (the server keeps what this search learnt)"
    if NO_MATCH_REASON in report.reasons:
        reasons = tuple(
            f"{NO_BYTES_MATCH_REASON}; {said}: this is not a finding that none does; {again}"
            if r == NO_MATCH_REASON
            else r
            for r in report.reasons
        )
    else:
        reasons = (*report.reasons, f"note: {said}; {again}")
    ev = replace(report.evidence, near_search_cut=True, near_search_seconds=seconds)
    return replace(report, reasons=reasons, evidence=ev)


def _decide(
    facts: FileFacts,
    now: datetime,
    sidecar: SignedClaim | None,
    sidecar_claim: Claim | None,
    sidecar_device: Device | None,
    sidecar_logged: LoggedClaim | None,
    exact: Sequence[LoggedClaim],
    near: Sequence[LoggedClaim],
    sidecar_chunk_hashes: Sequence[bytes],
    sidecar_public_key: bytes,
    cut: bool = False,
) -> VerificationReport:
    """`decide` without the note of its ``exact_more``; ``cut``: the search for ``near``
    stopped before its end (`_revoked_source`)."""
    ranked = rank_exact(facts, exact)
    if ranked:
        return _exact_verdict(facts, now, ranked, sidecar)
    if sidecar is None or sidecar_claim is None:
        return _decide_near(facts, now, near, cut)
    if sidecar_device is None:
        return _unknown_key_sidecar(
            facts, now, sidecar, sidecar_claim, sidecar_public_key, near, cut
        )
    report = _decide_with_sidecar(
        facts, now, sidecar, sidecar_claim, sidecar_device, sidecar_logged, sidecar_chunk_hashes
    )
    d = report.evidence.pdq_distance
    if report.status is Verdict.TAMPERED and _another_picture(report.evidence):
        nearby = _decide_near(facts, now, near, cut)
        if nearby.status is Verdict.DERIVED:
            note = (
                f"a sidecar came with the file but describes a different picture ({d} bits"
                " away by PDQ) and other bytes; it was not used"
            )
            return replace(
                nearby,
                reasons=(*nearby.reasons, note),
                evidence=replace(nearby.evidence, sidecar_present=True),
            )
    return report


#: The most other claims of the same bytes a report lists (the verdict ranks them all).
MAX_OTHER_CLAIMS = 16

#: The most logged claims of one file hash (the whole file's SHA-256, or its content's)
#: a verification examines: the first by log index, read with a LIMIT in the store's
#: query (`Store.leaves_by_file_sha256`), so neither the read nor the signature and
#: receipt checks grow with the number of claims anyone logs of the same bytes. Can the
#: bound hide a valid claim behind revoked ones? Claims are taken in log order, so the
#: earliest, the original capture's (a device logs its capture first; nobody else has
#: the bytes before then), is always examined: an attacker who logs claims of the bytes,
#: even with keys later revoked, can only add them after it. What the bound leaves out
#: is a claim logged after `MAX_EXACT_CLAIMS` others of the same bytes, i.e. of bytes
#: that were no original capture by then; the report says claims were left out, and
#: the server also examines the logged claim of a sidecar that comes with the file
#: (`ProvenanceService.verify`), so such a claim's holder still gets it ranked.
MAX_EXACT_CLAIMS = 64

#: The note of a report whose file hash has more than `MAX_EXACT_CLAIMS` logged claims.
EXACT_BOUND_NOTE = (
    f"note: more than {MAX_EXACT_CLAIMS} logged claims bind these bytes; the first"
    f" {MAX_EXACT_CLAIMS} by log index were examined"
)


def rank_exact(facts: FileFacts, exact: Sequence[LoggedClaim]) -> list[LoggedClaim]:
    """The logged claims among ``exact`` that bind ``facts``' bytes and verify under their
    enrolled key, best-standing first: those their key's revocation does not cover (the
    claim was logged before it) before those it covers, then by log index (the earliest
    logged first); each claim once (by claim hash, at its best rank). Claims that bind
    other bytes or no longer verify are left out. Deterministic whatever order ``exact``
    comes in."""
    binding = sorted(
        (
            lc
            for lc in exact
            if facts.binds(lc.claim.hard_binding.sha256)
            and signature_ok(lc.signed_claim, lc.device)
        ),
        key=lambda lc: (
            _revocation(lc.device, lc.integrated_at) is not None,
            lc.receipt.leaf_index,
        ),
    )
    seen: dict[bytes, LoggedClaim] = {}
    for lc in binding:
        seen.setdefault(lc.signed_claim.claim_hash, lc)
    return list(seen.values())


def _exact_verdict(
    facts: FileFacts, now: datetime, ranked: Sequence[LoggedClaim], sidecar: SignedClaim | None
) -> VerificationReport:
    """Rule 0: the verdict of the best-standing of ``ranked`` (`rank_exact`, not empty),
    the others reported as evidence, and what the sidecar, if any, holds."""
    best, others = ranked[0], ranked[1 : 1 + MAX_OTHER_CLAIMS]
    report = _logged_verdict(facts, best, now, sidecar=sidecar is not None)
    reasons = list(report.reasons)
    for lc in others:
        where = f"log index {lc.receipt.leaf_index} (device {lc.claim.device_id.hex()[:16]})"
        if (revoked := _revocation(lc.device, lc.integrated_at)) is not None:
            reasons.append(
                f"note: the same bytes are also in a signed claim at {where}, but"
                f" {revoked}, before that claim was logged"
            )
        else:
            reasons.append(
                f"note: the same bytes are also in a validly signed claim at {where}, logged"
                f" {lc.integrated_at:%Y-%m-%d %H:%M:%S} UTC"
            )
    if len(ranked) > 1 + MAX_OTHER_CLAIMS:
        reasons.append(
            f"note: and {len(ranked) - 1 - MAX_OTHER_CLAIMS} more claims of the same bytes"
            " (not listed)"
        )
    if sidecar is not None:
        held = [lc for lc in ranked if lc.signed_claim.claim_hash == sidecar.claim_hash]
        if not held:
            reasons.append(
                "a sidecar came with the file but describes another claim; it was not used"
            )
        elif sidecar != held[0].signed_claim and not signature_ok(sidecar, held[0].device):
            reasons.append(
                "note: a sidecar came with the file, but its signature does not verify under"
                " the enrolled device key, so it was ignored: the logged claim of these exact"
                " bytes decides"
            )
        elif held[0] is not best:
            reasons.append(
                f"the sidecar holds the claim at log index {held[0].receipt.leaf_index}, which"
                " also binds these bytes; the verdict rests on the best-standing claim of them,"
                f" at log index {best.receipt.leaf_index}"
            )
    evidence = replace(
        report.evidence, other_claims=tuple(lc.evidence(signature_valid=True) for lc in others)
    )
    return replace(report, reasons=tuple(reasons), evidence=evidence)


def _another_picture(ev: Evidence) -> bool:
    """Whether a sidecar describes neither these bytes nor these pixels (both sides had
    usable perceptual hashes, further apart than the match threshold)."""
    return not ev.hash_match and ev.pdq_distance is not None and ev.pdq_distance > ev.pdq_threshold


def _decide_near(
    facts: FileFacts, now: datetime, near: Sequence[LoggedClaim], cut: bool = False
) -> VerificationReport:
    """Rules 3 and 4: the closest signed capture within the threshold, else UNSIGNED.
    ``cut``: the search that found ``near`` stopped before its end, so a copy whose only
    matching captures found are covered by their key's revocation is not REVOKED_KEY
    (`_revoked_source`)."""
    if facts.media_type.startswith("video/"):
        return _decide_video_near(facts, now, near, cut)
    # the closest match per kind: [not covered by its key's revocation, covered]
    best: list[tuple[int, str, LoggedClaim] | None] = [None, None]
    for lc in near:
        found = best_dihedral_distance(
            facts.soft_bindings, facts.dihedral_soft_bindings, lc.claim.soft_bindings
        )
        if found is None or found[0] > PDQ_MATCH_THRESHOLD:
            continue
        if not signature_ok(lc.signed_claim, lc.device):
            continue
        kind = int(_revocation(lc.device, lc.integrated_at) is not None)
        held = best[kind]
        if held is None or found[0] < held[0]:
            best[kind] = (*found, lc)
    chosen = best[0] or best[1]
    if chosen is None:
        return _unsigned(facts, now)
    d, turn, lc = chosen
    ev = Evidence(
        file=facts,
        claim=lc.evidence(signature_valid=True),
        pdq_distance=d,
        pdq_transform=turn,
    )
    near_by = (
        f"no exact match; the pixels are within {d} bits (PDQ, threshold"
        f" {PDQ_MATCH_THRESHOLD}) of a signed capture at log index {lc.receipt.leaf_index}"
    )
    turns = turn_notes(turn, facts.orientation, lc.claim.orientation)
    # covered by its key's revocation only when no other capture matched (best[0] is None)
    if (revoked := _revocation(lc.device, lc.integrated_at)) is not None:
        return _revoked_source(near_by, turns, revoked, ev, now, cut)
    reasons = [f"{near_by}: a re-encoded, resized or edited copy of it", *turns]
    if (revoked := _revocation(lc.device)) is not None:
        reasons.append(f"note: for that capture, {revoked}")
    return VerificationReport(Verdict.DERIVED, tuple(reasons), ev, now)


def _revoked_source(
    near_by: str,
    notes: Sequence[str],
    revoked: str,
    ev: Evidence,
    now: datetime,
    cut: bool = False,
) -> VerificationReport:
    """REVOKED_KEY for a copy whose only matching captures were logged at or after their
    key's revocation: ``near_by`` says what matched, ``revoked`` is the revocation
    (`_revocation`), ``notes`` follow the reason. When the search that found them was
    ``cut`` (stopped at its time budget before its end), they need not be the only ones:
    a capture it did not reach, logged before any revocation of its key, may match too
    (DERIVED), so REVOKED_KEY, a finding against the file, is not given: UNSIGNED, citing
    no claim, its reason naming the revoked capture found (`REVOKED_ONLY_FOUND_CUT`)."""
    if cut:
        reasons = (
            f"{near_by}, but {revoked}, before that capture was logged; {REVOKED_ONLY_FOUND_CUT}",
            *notes,
        )
        return VerificationReport(Verdict.UNSIGNED, reasons, Evidence(file=ev.file), now)
    reasons = (
        f"{near_by}, but {revoked}, before that capture was logged: a copy of it proves nothing",
        *notes,
    )
    return VerificationReport(Verdict.REVOKED_KEY, reasons, ev, now)


#: What an UNSIGNED verdict says after the near copies found by a cut search, all of them
#: captures their key's revocation covers (`_revoked_source`).
REVOKED_ONLY_FOUND_CUT = (
    "the search for signed near copies stopped before its end (see the note on it), so a"
    " capture it did not reach, signed by a key in good standing, may match these pixels"
    " too: this is not a finding that the file is a copy of a revoked key's capture"
    " (REVOKED_KEY), nor that no signed capture matches it"
)
#: UNSIGNED's reason when the file's pixels (or frames) were hashed and searched too.
NO_MATCH_REASON = "no signed claim in the log matches these bytes or these pixels"
#: UNSIGNED's first reason when no pixels were hashed (not media, or not decodable): only
#: the bytes were looked up; `NO_PERCEPTUAL_HASH` follows it.
NO_BYTES_MATCH_REASON = "no signed claim in the log matches these bytes"
NO_PERCEPTUAL_HASH = "no perceptual hash could be computed, so near copies were not searched"


def too_flat(media_type: str) -> str:
    """Why a file's pixels cannot tell copies apart, every perceptual hash of it being
    below ``PDQ_MIN_QUALITY`` (a blank, black or tiny picture): "the image is too flat
    ..." or, for a video, "every sampled frame is too flat ..."; said by the verifier
    (`flat_pixels_reason`) and by `prov sign`."""
    what = "every sampled frame is" if media_type.startswith("video/") else "the image is"
    return (
        f"{what} too flat to tell copies apart (PDQ quality below {PDQ_MIN_QUALITY} of 100: "
        "blank, black or too small)"
    )


def flat_pixels_reason(media_type: str) -> str:
    """UNSIGNED's second reason when the file has perceptual hashes but none of them is of
    usable quality (`too_flat`), so its pixels could not be compared with any claim's."""
    return (
        f"{too_flat(media_type)}, so near copies were not searched; only an exact copy "
        "of a signed file can be recognised"
    )


def usable_for_near_copies(hashes: Sequence[PerceptualHash]) -> bool:
    """Whether any of ``hashes`` is a PDQ hash a near copy could be matched with."""
    return any(h.algorithm == "pdq" and h.quality >= PDQ_MIN_QUALITY for h in hashes)


def _unsigned(facts: FileFacts, now: datetime) -> VerificationReport:
    """UNSIGNED, its reasons naming only what was searched: the bytes, and the pixels
    when the file has perceptual hashes of usable quality (``facts.soft_bindings``);
    hashes all too flat to match say so (`flat_pixels_reason`)."""
    if not facts.soft_bindings:
        reasons: tuple[str, ...] = (NO_BYTES_MATCH_REASON, NO_PERCEPTUAL_HASH)
    elif not usable_for_near_copies(facts.soft_bindings):
        reasons = (NO_BYTES_MATCH_REASON, flat_pixels_reason(facts.media_type))
    else:
        reasons = (NO_MATCH_REASON,)
    return VerificationReport(Verdict.UNSIGNED, reasons, Evidence(file=facts), now)


def _decide_video_near(
    facts: FileFacts, now: datetime, near: Sequence[LoggedClaim], cut: bool = False
) -> VerificationReport:
    """DERIVED when the sampled frames align in time with a signed video's (vPDQ-style,
    `provenance.core.video_match.match_video`), with the matched stretch of the original.
    A signed video whose frames do not match as they are is tried through each of the 7
    rotations and mirror images of the frames (``facts.dihedral_soft_bindings``,
    `video_runs`): a copy whose display matrix was dropped or whose pixels were turned.
    ``cut`` as `_decide_near` takes it."""
    # the best match per kind: [not covered by its key's revocation, covered]
    best: list[tuple[VideoMatch, str, LoggedClaim] | None] = [None, None]
    runs = video_runs(facts.dihedral_soft_bindings)
    for lc in near:
        if not lc.claim.media_type.startswith("video/"):
            continue
        if not signature_ok(lc.signed_claim, lc.device):
            continue
        m, turn = match_video(facts.soft_bindings, lc.claim.soft_bindings), TRANSFORMS[0]
        for k, run in enumerate(runs if not m.matched else ()):
            turned = match_video(run, lc.claim.soft_bindings)
            if turned.matched and (not m.matched or turned.coverage > m.coverage):
                m, turn = turned, TRANSFORMS[1 + k]
        kind = int(_revocation(lc.device, lc.integrated_at) is not None)
        held = best[kind]
        if m.matched and (held is None or m.coverage > held[0].coverage):
            best[kind] = (m, turn, lc)
    chosen = best[0] or best[1]
    if chosen is None:
        return _unsigned(facts, now)
    m, turn, lc = chosen
    ev = Evidence(
        file=facts,
        claim=lc.evidence(signature_valid=True),
        pdq_distance=None if m.median_distance is None else int(round(m.median_distance)),
        video_match=m,
        pdq_transform=turn if turn != TRANSFORMS[0] else "",
    )
    rate = lc.claim.frame_sample_rate
    # a long video's claim samples more sparsely than 1 Hz (clients.device): say so
    sampled = f"frames, sampled one every {1 / rate:.3g} s," if 0 < rate < 1 else "sampled frames"
    near_by = (
        f"no exact match; the frames match seconds {m.original_start_s:.1f}-{m.original_end_s:.1f}"
        f" of the signed video at log index {lc.receipt.leaf_index} ({m.coverage:.0%} of its"
        f" {sampled} in that stretch, {m.matched_share_query:.0%} of this file's)"
    )
    turns = [turned_note(turn)] if turn != TRANSFORMS[0] else []
    # covered by its key's revocation only when no other video matched (best[0] is None)
    if (revoked := _revocation(lc.device, lc.integrated_at)) is not None:
        return _revoked_source(near_by, turns, revoked, ev, now, cut)
    reasons = [f"{near_by}: a transcoded, resized or trimmed copy of it", *turns]
    if (revoked := _revocation(lc.device)) is not None:
        reasons.append(f"note: for that capture, {revoked}")
    return VerificationReport(Verdict.DERIVED, tuple(reasons), ev, now)


def video_runs(turned: Sequence[PerceptualHash]) -> list[Sequence[PerceptualHash]]:
    """A video's ``FileFacts.dihedral_soft_bindings`` cut into its 7 runs, one per turn
    after the identity in `provenance.core.dihedral.TRANSFORMS` order, each the sampled
    frames turned so (`provenance.media.video.decode.video_turns`); [] when there are none or
    they do not divide into 7 runs."""
    n, rest = divmod(len(turned), DIHEDRAL_TURNS)
    if not n or rest:
        return []
    return [turned[k * n : (k + 1) * n] for k in range(DIHEDRAL_TURNS)]


def _damage(
    facts: FileFacts, claim: Claim, expected_chunks: Sequence[bytes]
) -> tuple[tuple[tuple[int, int], ...], str | None]:
    """Damaged byte ranges of a video whose sidecar listed its chunk hashes.

    A claim binds the file as it is or with its C2PA manifest store removed
    (`FileFacts.binds`), and an edited file matches neither: for a file carrying a store,
    both are compared, and the one that names fewer bytes is reported (an export of ours,
    where the store inserted before the media data shifts every chunk of the file as it
    is, names the chunks around the edit, at their offsets in the file)."""
    hb = claim.hard_binding
    if not hb.chunk_size or not expected_chunks or not facts.chunk_hashes:
        return (), None
    try:
        check_chunk_hashes(expected_chunks, hb, claim.size_bytes)
    except BindingError:
        return (
            (),
            "the sidecar's chunk list does not match the signed chunk root, so it was not used",
        )
    try:
        ranges = tuple(
            locate_damage(
                expected_chunks, facts.chunk_hashes, hb.chunk_size, claim.size_bytes, facts.size
            )
        )
        if facts.content_chunk_hashes:
            stripped = facts.size - sum(length for _, length in facts.content_removed)
            found = locate_damage(
                expected_chunks,
                facts.content_chunk_hashes,
                hb.chunk_size,
                claim.size_bytes,
                stripped,
            )
            if _bytes_in(found) < _bytes_in(ranges):
                ranges = tuple(file_ranges(found, facts.content_removed))
    except BindingError as e:
        return (), f"the damaged byte ranges could not be located: {e}"
    if not ranges:
        return (), None
    shown = ", ".join(f"{a:,}-{b:,}" for a, b in ranges[:5])
    more = f" and {len(ranges) - 5} more" if len(ranges) > 5 else ""
    return (
        ranges,
        f"bytes {shown}{more} differ from the signed file ({hb.chunk_size:,}-byte chunks)",
    )


def _bytes_in(ranges: Sequence[tuple[int, int]]) -> int:
    """How many bytes inclusive (first, last) ranges name."""
    return sum(last - first + 1 for first, last in ranges)


def _own_key_check(signed: SignedClaim, claim: Claim, public_key: bytes) -> str:
    """What the public key a sidecar carries says of its signature: "" when it verifies
    under that key (the key's id, SHA-256 of the raw key, is the signature's key id and
    the claim's device id), else what is wrong. Source: DSSE PAE over Ed25519
    (`provenance.core.envelope.verify_payload`)."""
    try:
        check_public_key(public_key)
    except KeyMaterialError as e:
        return f"the public key it carries is unusable ({e})"
    if key_id(public_key) != signed.key_id or claim.device_id != signed.key_id:
        return "the public key it carries is not the key that signature names"
    if signed.payload_type != PAYLOAD_TYPE_CLAIM:
        return f"its payload type is {signed.payload_type!r}, not a claim's"
    if not _verifies_under(signed, public_key):
        return "its signature does not verify even under the public key it carries"
    return ""


def _unknown_key_sidecar(
    facts: FileFacts,
    now: datetime,
    sidecar: SignedClaim,
    claim: Claim,
    public_key: bytes,
    near: Sequence[LoggedClaim],
    cut: bool = False,
) -> VerificationReport:
    """Rule 1 for a sidecar whose key this log has not enrolled: not evidence about these
    bytes (nothing here vouches for the key), so the verdict is the log's (rules 3 and 4)
    and a reason says what the sidecar is. Never TAMPERED: a bad signature under an
    unknown key says nothing about the file beside it. ``cut`` as `_decide_near` takes it."""
    hash_match = facts.binds(claim.hard_binding.sha256)
    kid = f"key id {sidecar.key_id.hex()[:16]}…"
    what = "this file's bytes" if hash_match else "other bytes"
    if not public_key:
        note = (
            f"a sidecar came with the file, signed by a key this log does not know ({kid}) and"
            " carrying no public key, so its signature could not be checked; it proves"
            f" nothing about these bytes and was not used (it describes {what})"
        )
    elif problem := _own_key_check(sidecar, claim, public_key):
        note = (
            f"a sidecar came with the file with a bad signature: {problem} ({kid}, a key"
            f" this log does not know); it was not used (it describes {what})"
        )
    else:
        note = (
            f"a sidecar came with the file, signed by a key this log does not know ({kid}):"
            " its signature verifies under the public key it carries, but that key is not"
            " enrolled here, so it proves nothing about these bytes and was not used"
            f" (it describes {what})"
        )
    report = _decide_near(facts, now, near, cut)
    ev = replace(report.evidence, sidecar_present=True)
    if ev.claim is None:  # nothing logged matches: show what the sidecar claims, unchecked
        ev = replace(
            ev,
            claim=ClaimEvidence(sidecar, claim, None, None, False, False, False),
            hash_match=hash_match,
            pdq_distance=best_pdq_distance(facts.soft_bindings, claim.soft_bindings),
        )
    return replace(report, reasons=(*report.reasons, note), evidence=ev)


def _decide_with_sidecar(
    facts: FileFacts,
    now: datetime,
    sidecar: SignedClaim,
    claim: Claim,
    device: Device,
    logged: LoggedClaim | None,
    expected_chunks: Sequence[bytes] = (),
) -> VerificationReport:
    """Rule 1 for a sidecar whose key is enrolled (`_unknown_key_sidecar` for others)."""
    sig = signature_ok(sidecar, device)
    hash_match = facts.binds(claim.hard_binding.sha256)
    distance = best_pdq_distance(facts.soft_bindings, claim.soft_bindings)
    # a chunk list is checked against the claim's chunk root: with no valid signature
    # nothing vouches for that root, so the ranges would be the sidecar writer's to choose
    use_chunks = sig and not hash_match
    damaged, damage_note = _damage(facts, claim, expected_chunks) if use_chunks else ((), None)
    ev = Evidence(
        file=facts,
        claim=ClaimEvidence(
            sidecar,
            claim,
            device,
            logged.receipt if logged else None,
            sig,
            logged is not None,
            logged.chain_linked if logged else False,
            logged.receipt_verified if logged else False,
        ),
        sidecar_present=True,
        hash_match=hash_match,
        pdq_distance=distance,
        damaged_ranges=damaged,
    )
    located = (damage_note,) if damage_note else ()
    if not sig:
        reasons = ["the sidecar's signature does not verify under the enrolled device key"]
        if not hash_match:
            reasons.append("and the file's bytes differ from the ones the sidecar describes")
            reasons.extend(located)
        return VerificationReport(Verdict.TAMPERED, tuple(reasons), ev, now)
    if not hash_match:
        reasons = [
            "the file's bytes differ from the bytes the signed sidecar claim covers (SHA-256)"
        ]
        if distance is not None:
            reasons.append(
                f"the pixels are {distance} bits (PDQ) from the signed capture's: "
                + (
                    (_SAME_FRAME if _several_frames(facts, claim) else _SAME_PICTURE)
                    if distance == 0
                    else "a close copy with edits"
                    if distance <= PDQ_MATCH_THRESHOLD
                    else "a different picture"
                )
            )
        reasons.extend(located)
        return VerificationReport(Verdict.TAMPERED, tuple(reasons), ev, now)
    if logged is not None:
        return _logged_verdict(facts, logged, now, sidecar=True)
    if (revoked := _revocation(device)) is not None:
        return VerificationReport(
            Verdict.REVOKED_KEY,
            (f"the sidecar is signed, but {revoked} and the claim was never logged",),
            ev,
            now,
        )
    try:  # a claim the log refuses (one made by an older `prov sign`) cannot be submitted
        check_claim_shape(sidecar, claim)
    except ClaimError as e:
        return VerificationReport(Verdict.UNSIGNED, (unloggable_sidecar_reason(e),), ev, now)
    return VerificationReport(Verdict.UNSIGNED, (UNLOGGED_SIDECAR_REASON,), ev, now)


def unloggable_sidecar_reason(refusal: ClaimError) -> str:
    """The reason of an UNSIGNED verdict on a valid sidecar claim that is not in the log
    and that the log refuses (``refusal``, `registry.check_claim_shape`): submitting it
    again cannot help, signing the file again can."""
    return (
        f"{UNLOGGABLE_SIDECAR_PREFIX}{refusal}): `prov device sync` cannot log it;"
        " sign the file again with a current `prov sign`"
    )


def with_c2pa(report: VerificationReport, c2pa: dict[str, Any] | None) -> VerificationReport:
    """Attach the Content Credentials block; it never changes the status, but an
    ``UNSIGNED`` file that carries valid credentials says so in its reasons."""
    if c2pa is None:
        return report
    reasons = report.reasons
    state = c2pa.get("validation_state")
    if report.status is Verdict.UNSIGNED and c2pa.get("present") and state in ("Valid", "Trusted"):
        who = c2pa.get("signer") or "an unnamed signer"
        reasons = (
            *reasons,
            f"the file carries Content Credentials (C2PA) that validate as {state}, signed by"
            f" {who}: a separate line of evidence, not a record in this log",
        )
    return replace(report, reasons=reasons, c2pa=c2pa)
