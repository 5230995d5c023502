"""One report row per scanned file or archive entry, as a JSON-able dict.

Fields (docs/scan.md has the full table): ``path`` (the item's ref), ``archive`` (the
outermost archive file on disk, or null), ``kind`` ("media", "file", "sidecar" or
"refused"), ``size`` (bytes), ``media_type``, ``sha256`` (hex), ``soft_bindings``,
``status`` (the verdict name, as in ``prov verify --json``; null when not looked up),
``reasons``, ``evidence`` (as in ``prov verify --json``), ``detector`` (the advisory
block, or null), ``note`` (what limited the measurement), ``error`` (why an entry was
refused or failed; then ``status`` is null) and ``verified_at``.
"""

from __future__ import annotations

from typing import Any

from clients.report import report_to_json
from clients.scan.hashing import Measured
from provenance.core.verify import VerificationReport

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


def measured_row(
    m: Measured,
    archive: str | None,
    report: VerificationReport | None,
    detector: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The row of a measured item with the service's report (None for a sidecar) and the
    detector's advisory block (None when not asked for or not an unsigned image)."""
    row = _base(m.ref, archive, m.kind, m.size)
    row["media_type"] = m.media_type
    row["sha256"] = m.sha256.hex()
    row["soft_bindings"] = [
        {
            "algorithm": h.algorithm,
            "hash": h.hash.hex(),
            "quality": h.quality,
            "timestamp_seconds": h.timestamp_seconds,
        }
        for h in m.soft
    ]
    row["note"] = m.note
    if report is not None:
        j = report_to_json(report)
        row["status"] = j["status"]
        row["reasons"] = j["reasons"]
        row["evidence"] = j["evidence"]
        row["verified_at"] = j["verified_at"]
    row["detector"] = detector
    return row
