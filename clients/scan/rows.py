"""One report row per scanned file or archive entry, as a JSON-able dict.

Fields (docs/scan.md has the full table): ``path`` (the item's ref), ``archive`` (the
outermost archive file on disk, or null), ``kind`` ("media", "file", "sidecar" or
"refused"), ``size`` (bytes), ``media_type``, ``sha256`` (hex), ``soft_bindings``,
``status`` (the verdict name, as in ``prov verify --json``; null when not looked up),
``reasons``, ``evidence`` (as in ``prov verify --json``), ``evidence_checked`` (as in
``prov verify --json``: "log-key" when ``--log-key`` proved the cited claim's receipt,
"refused" when the server's evidence did not hold, the ``error`` saying why; else null),
``log_key`` (the verifier key given as ``--log-key`` that proved the receipt, or refused
it: ``NAME+ID+KEY`` as `prov log key` prints it; else null), ``pixels_checked`` (a near
copy's verdict, DERIVED or REVOKED_KEY of a near match: true when its match was checked
on the file's own pixels here, false when the file is over this client's own limits so
the match is the service's word, as in ``prov verify --json``; null for any other verdict
and in rows written without it), ``detector`` (the advisory
block, or null), ``note`` (what limited the measurement), ``error`` (why an entry was
refused or failed; then ``status`` is null) and ``verified_at``.
"""

from __future__ import annotations

from typing import Any

from clients.report import iso_utc, report_to_json
from clients.scan.hashing import Measured
from provenance.core.claims import Verdict
from provenance.core.verify import (
    NO_BYTES_MATCH_REASON,
    NO_MATCH_REASON,
    NO_PERCEPTUAL_HASH,
    VerificationReport,
)
from provenance.v1 import provenance_pb2 as pb
from provenance.wire import convert as wire

#: Row fields that change from one run to the next over the same input.
VOLATILE_FIELDS = ("verified_at",)


def _base(ref: str, archive: str | None, kind: str, size: int | None) -> dict[str, Any]:
    return {
        "path": ref,
        "archive": archive,
        "kind": kind,
        "size": size,
        "media_type": None,
        "sha256": None,
        "soft_bindings": [],
        "status": None,
        "reasons": [],
        "evidence": None,
        "evidence_checked": None,
        "log_key": None,
        "pixels_checked": None,
        "detector": None,
        "note": None,
        "error": None,
        "verified_at": None,
    }


def error_row(
    ref: str, error: str, size: int | None = None, archive: str | None = None
) -> dict[str, Any]:
    """The row of an entry refused (hostile, over a limit) or failed (unreadable)."""
    row = _base(ref, archive, "refused", size)
    row["error"] = error
    return row


#: Verdict names by wire value (``pb.Verdict.Name`` costs about 0.5 us a call), not
#: VERDICT_UNSPECIFIED (no verdict).
_VERDICT_NAMES: dict[int, str] = {
    v: k for k, v in pb.Verdict.items() if v != pb.VERDICT_UNSPECIFIED
}

#: The last Lookup time converted (a Lookup's parts share one): (seconds, nanos, ISO text).
_last_time: tuple[int, int, str | None] = (0, -1, None)


def _verified_at(t: Any) -> str | None:
    """``report_to_json``'s ``verified_at`` of a wire Timestamp."""
    global _last_time
    seconds, nanos, iso = _last_time  # one read: safe if threads share the module
    if (t.seconds, t.nanos) != (seconds, nanos):
        iso = iso_utc(wire.ts_from_pb(t, "verified_at"))
        _last_time = (t.seconds, t.nanos, iso)
    return iso


#: The ``reasons`` and ``evidence`` of the plain reports seen last (`_plain_parts`), by
#: their fields: most of a scan's files get the same UNSIGNED answer.
_PLAIN: dict[tuple[Any, ...], tuple[list[str], dict[str, Any]]] = {}
#: How many kinds of plain answer `_PLAIN` holds at most (then it starts again).
_PLAIN_KINDS = 64


def _plain_parts(m: pb.VerificationReport) -> tuple[list[str], dict[str, Any]]:
    """``reasons`` and ``evidence`` of a report without claim, video match, detector or
    C2PA block, read field by field. Reports with the same fields (and no damaged ranges
    or time flags) share one list and one dict: a worker's batch then builds them once,
    and pickles them once for the driver (pickle keeps shared objects shared), which
    unpickles them once; rows are never changed in place once made."""
    e = m.evidence
    key = None
    if not e.damaged_ranges and not e.time_flags:
        key = (
            tuple(m.reasons),
            e.sidecar_present,
            e.claim_embedded,
            e.hash_match,
            e.pdq_distance,
            e.pdq_threshold,
            e.pdq_transform,
            e.near_search_cut,
            e.near_search_seconds,
        )
        found = _PLAIN.get(key)
        if found is not None:
            return found
    parts = (
        list(m.reasons),
        {
            "sidecar_present": e.sidecar_present,
            "claim_embedded": e.claim_embedded,
            "hash_match": e.hash_match,
            "pdq_distance": None if e.pdq_distance < 0 else e.pdq_distance,
            "pdq_threshold": e.pdq_threshold,
            "video_match": None,
            "damaged_ranges": [
                {"first_byte": r.first_byte, "last_byte": r.last_byte} for r in e.damaged_ranges
            ],
            "pdq_transform": e.pdq_transform or None,
            "time_flags": [{"code": f.code, "detail": f.detail} for f in e.time_flags],
            "near_search_cut": e.near_search_cut,
            "near_search_seconds": e.near_search_seconds if e.near_search_cut else None,
            "claim": None,
            "other_claims": [],
        },
    )
    if key is not None:
        if len(_PLAIN) >= _PLAIN_KINDS:
            _PLAIN.clear()
        _PLAIN[key] = parts
    return parts


def report_json(m: pb.VerificationReport) -> dict[str, Any]:
    """The fields of `clients.report.report_to_json` that a row keeps (``status``,
    ``reasons``, ``evidence``, ``verified_at``), equal to theirs, from the wire report as
    the Lookup returned it. A report without claim, video match, detector or C2PA block (a
    scan's usual UNSIGNED file) is read field by field (`_plain_parts`: its reasons and
    evidence shared with the rows of equal reports), about a fifth of the cost of building
    the domain report first; any other goes through `wire.report_from_pb`. Raises
    ClaimError or ValueError on a malformed report, TransportError on one without a
    verdict this client knows (`wire.verdict_from_pb`)."""
    e = m.evidence
    if (
        e.HasField("claim")
        or e.HasField("video_match")
        or m.HasField("detector")
        or m.HasField("c2pa")
    ):
        full = report_to_json(wire.report_from_pb(m))
        return {k: full[k] for k in ("status", "reasons", "evidence", "verified_at")}
    reasons, evidence = _plain_parts(m)
    return {
        "status": _VERDICT_NAMES.get(m.status) or wire.verdict_from_pb(m.status).value,
        "reasons": reasons,
        "evidence": evidence,
        "verified_at": _verified_at(m.verified_at),
    }


#: How a row's note ends when only the SHA-256 was looked up (`clients.scan.hashing`).
_SHA256_ONLY = ("; looked up by SHA-256 only", ": looked up by SHA-256 only")


def sha256_only_reasons(reasons: list[str], note: str | None) -> list[str]:
    """The ``reasons`` of an UNSIGNED row looked up by SHA-256 alone (kind "file": not
    media, truncated or corrupt, over a limit, a video in an archive), their first saying
    so and why (``note``, the row's note), in place of the service's "no signed claim ...
    matches these bytes" (or "... these bytes or these pixels", an older server's) and "no
    perceptual hash could be computed": no pixels were hashed. Other reasons are kept, in
    order; ``reasons`` is not changed."""
    why = note or ""
    for end in _SHA256_ONLY:
        why = why.removesuffix(end)
    first = "no signed claim in the log matches these bytes; only their SHA-256 was looked up"
    said = (NO_MATCH_REASON, NO_BYTES_MATCH_REASON, NO_PERCEPTUAL_HASH)
    rest = [r for r in reasons if r not in said]
    return [f"{first} ({why})" if why else first, *rest]


def measured_row(
    m: Measured,
    archive: str | None,
    report: VerificationReport | pb.VerificationReport | None,
    detector: dict[str, Any] | None = None,
    evidence_checked: str | None = None,
    log_key: str | None = None,
    pixels_checked: bool | None = None,
) -> dict[str, Any]:
    """The row of a measured item with the service's report (a domain report, or the wire
    report of a Lookup; None for a sidecar), the detector's advisory block (None when
    not asked for or not an unsigned image), ``evidence_checked`` ("log-key" when the
    cited claim's receipt was proven with --log-key; the module docstring) and
    ``log_key`` (the verifier key NAME+ID+KEY that proved it, or None) and
    ``pixels_checked`` (a near copy's match checked on the file's own pixels here, or not
    as it is over this client's limits; None for other verdicts: the module docstring)."""
    j: dict[str, Any] | None = None
    if report is not None:
        j = (
            report_to_json(report)
            if isinstance(report, VerificationReport)
            else report_json(report)
        )
    reasons: list[str] = [] if j is None else j["reasons"]
    if j is not None and m.kind == "file" and j["status"] == Verdict.UNSIGNED.value:
        reasons = sha256_only_reasons(reasons, m.note)
    # one dict literal, keys in `_base`'s order (the report's JSON key order)
    return {
        "path": m.ref,
        "archive": archive,
        "kind": m.kind,
        "size": m.size,
        "media_type": m.media_type,
        "sha256": m.sha256.hex(),
        "soft_bindings": [
            {
                "algorithm": h.algorithm,
                "hash": h.hash.hex(),
                "quality": h.quality,
                "timestamp_seconds": h.timestamp_seconds,
            }
            for h in m.soft
        ],
        "status": None if j is None else j["status"],
        "reasons": reasons,
        "evidence": None if j is None else j["evidence"],
        "evidence_checked": evidence_checked,
        "log_key": log_key,
        "pixels_checked": pixels_checked,
        "detector": detector,
        "note": m.note,
        "error": None,
        "verified_at": None if j is None else j["verified_at"],
    }
