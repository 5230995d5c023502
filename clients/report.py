"""Rendering verification reports for people (text) and machines (JSON), and the
exit code of each verdict.

Exit codes of ``prov verify`` (documented in README.md):

====  =================  ==========================================
code  status             meaning
====  =================  ==========================================
0     SIGNED_ORIGINAL    exact bytes of a logged, validly signed capture
10    DERIVED            a perceptual match to a signed capture
11    UNSIGNED           nothing found
12    REVOKED_KEY        signed by a key revoked before logging, or a copy of such
13    TAMPERED           a claim is present but bytes/signature differ
14    (witnesses)        with --witness: the receipt's checkpoint lacks the quorum
1     (error)            the file or the server could not be checked
2     (usage)            wrong command-line arguments
====  =================  ==========================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from clients.derived import match_line
from detector.bands import score_words, threshold_words, unscored_reason
from provenance.core.claims import Claim, Device, Verdict
from provenance.core.timetext import utc_iso, utc_text
from provenance.core.verify import ClaimEvidence, VerificationReport
from provenance.terminal import shown_line
from provenance.wire.jsontext import path_to_json

EXIT_CODES: dict[Verdict, int] = {
    Verdict.SIGNED_ORIGINAL: 0,
    Verdict.DERIVED: 10,
    Verdict.UNSIGNED: 11,
    Verdict.REVOKED_KEY: 12,
    Verdict.TAMPERED: 13,
}

#: Exit code of ``prov verify`` and ``prov receipt verify``/``refresh`` when fewer
#: witnesses than the policy's quorum cosigned the receipt's checkpoint.
EXIT_WITNESS_QUORUM = 14

#: Exit code of ``prov verify`` when FILE changed while it was being verified (written
#: to, cut or replaced while it was sent, or after, before the claim the server cited
#: could be checked against it): no verdict; verify it again once nothing writes it.
EXIT_FILE_CHANGED = 15


def counted(n: int, noun: str, plural: str = "") -> str:
    """``n`` with ``noun``, in the plural unless ``n`` is 1: "1 hash", "3 hashes" (``plural``:
    the plural form; default ``noun`` + "s")."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


#: The advisory words of a detector block that carries none of its own (DESIGN.md: every
#: detector output says it is advisory).
DETECTOR_ADVISORY = (
    "advisory only: a learned estimate, never proof; it does not change the status above"
)
#: What decides the status, said in every report (text, JSON, the web page), beside the
#: detector's advisory block (DESIGN.md: the two halves are never mixed up).
STATUS_BASIS = (
    "cryptographic: the status rests on device signatures, the file's hashes and the"
    " signed log; the detector, if asked, is advisory and never changes it"
)
#: DERIVED's basis: the capture it resembles is proven, the resemblance is not (a copy
#: with a black bar painted across reads DERIVED at 10 bits from the signed photo).
DERIVED_BASIS = (
    "cryptographic for the signed capture it resembles (its device signature and the signed"
    " log), not for this file: that it was made from that capture rests on a perceptual"
    " match of the pixels (PDQ) or of video frames, which re-encoding and resizing keep but"
    " some edits keep too; the detector, if asked, is advisory and never changes it"
)


#: UNSIGNED's basis: an absence, found by the same signatures, hashes and log lookups; it
#: proves nothing about the file either way. True of every UNSIGNED: one whose sidecar
#: holds a valid signature never logged, or whose only near copies found (by a search cut
#: short) were logged after their key's revocation, as of one nothing matched.
UNSIGNED_BASIS = (
    "cryptographic: no capture signed by a registered device's key in good standing and"
    " recorded in the signed log was found for this file, so nothing is proven either way;"
    " the detector, if asked, is advisory and never changes it"
)


#: What UNSIGNED does not mean, said where it is reported (the text report, the web page,
#: the scan's HTML summary): most files are never signed, so it is no judgement of a file.
UNSIGNED_MEANS_NOTHING = "that says nothing about whether it is real: most files are never signed"


def status_basis(status: Verdict) -> str:
    """What decides ``status``, in words: `DERIVED_BASIS` for DERIVED (proven for the
    signed capture, not for the copy), `UNSIGNED_BASIS` for UNSIGNED (nothing proven),
    `STATUS_BASIS` for the others."""
    if status is Verdict.DERIVED:
        return DERIVED_BASIS
    return UNSIGNED_BASIS if status is Verdict.UNSIGNED else STATUS_BASIS


def iso_utc(dt: Any) -> str | None:
    """A UTC `datetime` as ISO 8601 with microseconds and ``Z``
    (``2026-12-02T08:16:00.000000Z``, RFC 3339); None stays None."""
    return None if dt is None else utc_iso(dt)


def claim_to_json(c: Claim) -> dict[str, Any]:
    """The fields a device signed in a claim, JSON-able (hashes in hex, times ISO 8601 UTC);
    the claim part of `report_to_json`'s evidence, and of a log entry in the web explorer."""
    return {
        "device_id": c.device_id.hex(),
        "sequence": c.sequence,
        "captured_at": iso_utc(c.captured_at),
        "media_type": c.media_type,
        "size": c.size_bytes,
        "width": c.width,
        "height": c.height,
        "duration_seconds": c.duration_seconds or None,
        # a video's frames sampled in the claim, and their rate (below 1 Hz for a long one)
        "frames": len(c.soft_bindings) if c.frame_sample_rate else None,
        "frame_sample_rate": c.frame_sample_rate or None,
        "sha256": c.hard_binding.sha256.hex(),
        "metadata": dict(c.metadata),
    }


def device_to_json(d: Device) -> dict[str, Any]:
    """An enrolled device's registry record, JSON-able: label, enrollment time, and its
    revocation time and reason (None while it is not revoked)."""
    return {
        "label": d.label,
        "enrolled_at": iso_utc(d.enrolled_at),
        "revoked_at": iso_utc(d.revoked_at),
        "revocation_reason": d.revocation_reason or None,
    }


def claim_evidence_to_json(c: ClaimEvidence) -> dict[str, Any]:
    """A report's ``evidence.claim`` (or one of its ``evidence.other_claims``) as JSON:
    the signed fields, what was checked, its log position and receipt, its device."""
    claim: dict[str, Any] = {
        **claim_to_json(c.claim),
        "claim_sha256": c.signed_claim.claim_hash.hex(),
        "signature_valid": c.signature_valid,
        "in_log": c.in_log,
        "receipt_verified": c.receipt_verified,
        "chain_linked": c.chain_linked,
    }
    if c.receipt is not None:
        claim["log"] = {
            "leaf_index": c.receipt.leaf_index,
            "integrated_at": iso_utc(c.receipt.integrated_at),
            "checkpoint": c.receipt.checkpoint,
            "inclusion_proof": [p.hex() for p in c.receipt.inclusion_proof],
        }
    if c.device is not None:
        claim["device"] = device_to_json(c.device)
    return claim


def report_to_json(r: VerificationReport, path: str | None = None) -> dict[str, Any]:
    """A JSON-able dict with a top-level ``status`` (one of the five verdict names) and
    ``status_basis`` (`status_basis`: what decides it, and that the detector does not);
    ``path`` (and, for a name that is not UTF-8, ``path_bytes_b64``: `path_to_json`)
    when ``path`` is given. Pass it through `unicode_only` before writing it when a
    reason may name a file that is not UTF-8."""
    ev = r.evidence
    out: dict[str, Any] = {"status": r.status.value, "status_basis": status_basis(r.status)}
    if path is not None:
        out |= path_to_json(path)
    out["reasons"] = list(r.reasons)
    out["file"] = {
        "sha256": ev.file.sha256.hex(),
        "content_sha256": ev.file.content_sha256.hex() or None,
        "size": ev.file.size,
        "media_type": ev.file.media_type,
        "soft_bindings": [
            {"algorithm": h.algorithm, "hash": h.hash.hex(), "quality": h.quality}
            for h in ev.file.soft_bindings
        ],
    }
    evidence: dict[str, Any] = {
        "sidecar_present": ev.sidecar_present,
        "claim_embedded": ev.claim_embedded,
        "hash_match": ev.hash_match,
        "pdq_distance": ev.pdq_distance,
        "pdq_threshold": ev.pdq_threshold,
        "video_match": asdict(ev.video_match) if ev.video_match else None,
        "damaged_ranges": [{"first_byte": a, "last_byte": b} for a, b in ev.damaged_ranges],
        "pdq_transform": ev.pdq_transform or None,
        "time_flags": [{"code": f.code, "detail": f.detail} for f in ev.time_flags],
        "near_search_cut": ev.near_search_cut,
        "near_search_seconds": ev.near_search_seconds if ev.near_search_cut else None,
        "claim": None,
    }
    if ev.claim is not None:
        evidence["claim"] = claim_evidence_to_json(ev.claim)
    evidence["other_claims"] = [claim_evidence_to_json(c) for c in ev.other_claims]
    out["evidence"] = evidence
    if r.c2pa is not None:
        out["c2pa"] = r.c2pa
    if r.detector is not None:
        out["detector"] = {
            **r.detector,
            "advisory": r.detector.get("advisory") or DETECTOR_ADVISORY,
        }
    out["verified_at"] = iso_utc(r.verified_at)
    return out


_STATUS_LINE = {
    Verdict.SIGNED_ORIGINAL: "the exact bytes of a signed, logged capture",
    Verdict.DERIVED: "a copy derived from a signed capture (not the original bytes)",
    Verdict.TAMPERED: "a signed claim is present, but the file or signature does not match it",
    Verdict.REVOKED_KEY: "signed by a device key that was revoked (or a copy of such a capture)",
    Verdict.UNSIGNED: f"no signed capture found for this file; {UNSIGNED_MEANS_NOTHING}",
}


#: UNSIGNED's status line when the search for near copies was cut short (it may have
#: found a revoked key's capture, named in the reasons; one it did not reach may match).
UNSIGNED_CUT_LINE = (
    "no signed capture in good standing found, but the search for near copies was cut"
    f" short (see why); {UNSIGNED_MEANS_NOTHING}"
)


def _status_line(r: VerificationReport) -> str:
    """What the text report's status line says of ``r``'s verdict."""
    if r.status is Verdict.UNSIGNED and r.evidence.near_search_cut:
        return UNSIGNED_CUT_LINE
    return _STATUS_LINE[r.status]


def _c2pa_line(c: dict[str, Any]) -> str:
    """One line on the Content Credentials, a separate line of evidence."""
    if c.get("error"):
        return f"could not be read: {c['error']}"  # its kind is in the JSON (error_kind)
    if not c.get("present"):
        return "no Content Credentials in the file"
    codes = ", ".join(c.get("validation_codes") or []) or "no failure codes"
    who = c.get("signer") or "unknown signer"
    anchor = (
        "chains to a configured trust anchor"
        if c.get("trusted_anchor")
        else "signer not on a configured trust list"
    )
    return (
        f"{c.get('validation_state')}: signed by {who} with {c.get('claim_generator') or 'an unnamed tool'}"
        f" ({anchor}; {codes})"
    )


def _signing_time_line(c: dict[str, Any]) -> str:
    """Which time the C2PA signer's certificate was judged at, and what that gave."""
    st = c.get("signing_time")
    if not st:
        return str(c.get("signing_time_error"))
    then = "valid" if st["certificate_valid"] else "NOT valid (expired or not yet valid)"
    line = (
        f"{st['description']} ({st['time'][:19]}Z): the signer's certificate was {then} then"
        f" (valid {st['certificate_not_before'][:10]} to {st['certificate_not_after'][:10]})"
    )
    return "; ".join([line, *st.get("problems", ())])


def report_to_text(
    r: VerificationReport,
    path: str,
    checked_here: str = "",
    also_cosigned: Sequence[bool | None] = (),
) -> str:
    """A readable multi-line report: verdict, reasons, evidence, then the advisory block;
    one line per field, each with its newlines, tabs and other control characters written
    as escapes (`provenance.terminal.shown_line`), so that text which is not ours (the file
    name, a device label, a C2PA manifest's fields) cannot print a line of its own, such
    as a forged status line above the real one. ``checked_here``, when given, becomes a
    ``checked`` line after the ``log`` line: what the client itself checked of the
    receipt (`prov verify`: with --log-key, or that nothing was). A near copy's verdict
    checked by a client (`VerificationReport.pixels_checked`) gets a ``match`` line saying
    whether its pixels were checked here (`clients.derived.match_line`). ``also_cosigned``
    (`prov verify --witness`: `clients.cosigned.WitnessCheck.also_cosigned`, one per
    "also" claim): an "also" line whose entry is False, its receipt not yet cosigned by
    the witnesses, is followed by a ``cosigned`` line saying so (not only the witnesses
    line at the end naming it, by leaf)."""
    ev = r.evidence
    lines = [
        f"{path}",
        f"  status     {r.status.value}: {_status_line(r)}",
        f"  basis      {status_basis(r.status)}",
    ]
    for reason in r.reasons:
        lines.append(f"  why        {reason}")
    lines.append(
        f"  file       {ev.file.media_type or '?'}, {ev.file.size:,} bytes,"
        f" sha256 {ev.file.sha256.hex()[:16]}…"
    )
    if ev.claim is not None:
        c = ev.claim
        lines.append(
            f"  device     {c.claim.device_id.hex()[:16]}…"
            + (f" ({c.device.label})" if c.device and c.device.label else "")
            + f", capture #{c.claim.sequence}, captured {c.claim.captured_at:%Y-%m-%d %H:%M:%S} UTC (device clock)"
        )
        checked = (
            "valid"
            if c.signature_valid
            else "INVALID"
            if c.device is not None
            else "not checked: the key is not enrolled with this log"
        )
        lines.append(
            f"  signature  {checked}"
            f"{', chain linked to the previous capture' if c.chain_linked else ''}"
        )
        if c.receipt is not None:
            lines.append(
                f"  log        leaf {c.receipt.leaf_index}, logged"
                f" {c.receipt.integrated_at:%Y-%m-%d %H:%M:%S} UTC (server clock); receipt"
                f" {'verified' if c.receipt_verified else 'NOT verified'} (signed checkpoint"
                f" + inclusion proof of {counted(len(c.receipt.inclusion_proof), 'hash', 'hashes')})"
            )
        else:
            lines.append("  log        not in the log")
        if checked_here:
            lines.append(f"  checked    {checked_here}")
        if c.device is not None and c.device.revoked_at is not None:
            lines.append(
                f"  revoked    {utc_text(c.device.revoked_at)}: {c.device.revocation_reason}"
            )
    for i, o in enumerate(ev.other_claims):
        revoked = (
            f", key revoked {utc_text(o.device.revoked_at)}: {o.device.revocation_reason}"
            if o.device is not None and o.device.revoked_at is not None
            else ""
        )
        leaf = f"leaf {o.receipt.leaf_index}" if o.receipt is not None else "not in the log"
        lines.append(
            f"  also       {leaf}: device {o.claim.device_id.hex()[:16]}…"
            + (f" ({o.device.label})" if o.device and o.device.label else "")
            + f", capture #{o.claim.sequence}{revoked}"
        )
        if i < len(also_cosigned) and also_cosigned[i] is False:
            lines.append(
                f"  cosigned   {leaf} (above): not yet cosigned by the witnesses; its receipt"
                " is proven with the log key only"
            )
    if ev.pdq_distance is not None:
        turned = (
            f", file {ev.pdq_transform.replace('_', ' ')} relative to the capture"
            if ev.pdq_transform not in ("", "identity")
            else ""
        )
        lines.append(
            f"  pixels     PDQ distance {ev.pdq_distance} (match threshold {ev.pdq_threshold}){turned}"
        )
    if match := match_line(r):  # a near copy's: checked on its own pixels here, or not
        lines.append(f"  match      {match}")
    if ev.time_flags:
        codes = ", ".join(f.code for f in ev.time_flags)
        lines.append(f"  time       FLAGGED: {codes} (see the notes above)")
    if r.c2pa is not None:
        lines.append(f"  C2PA       {_c2pa_line(r.c2pa)}")
        if r.c2pa.get("signing_time") or r.c2pa.get("signing_time_error"):
            lines.append(f"  C2PA time  {_signing_time_line(r.c2pa)}")
    if r.detector is not None:
        d = r.detector
        if d.get("available", True):
            frames = f" over {len(d['timeline'])} frames" if d.get("timeline") else ""
            lines.append(
                f"  detector   {d['band']}: {score_words(d)}, model {d['model_id']}"
                f" {d['model_version']}, {len(d.get('crops', []))} crops{frames}"
            )
            lines.append(f"             {threshold_words(d)}")
        else:
            lines.append(f"  detector   not scored: {unscored_reason(d)}")
        lines.append(f"             {DETECTOR_ADVISORY}")
    return "\n".join(shown_line(line) for line in lines)
