"""The scan's reports beside the JSON Lines journal: a CSV table and an HTML summary.

Both are rebuilt from the JSON Lines file at the end of a scan (also of a resumed one), so
they always describe every row. The HTML page is self-contained: counts per verdict, the
unsigned images ranked by the detector's advisory score with inline JPEG thumbnails
(base64 ``data:`` URLs, at most THUMBNAIL_SIDE pixels a side), and the refused entries
with their reasons. Every string that comes from a file name or a file is HTML-escaped.
"""

from __future__ import annotations

import base64
import csv
import heapq
import html
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from provenance.core.claims import Verdict
from provenance.core.errors import MediaError
from provenance.media.image import decode_image

#: Largest side of a thumbnail, in pixels.
THUMBNAIL_SIDE = 96
#: Unsigned images shown (with thumbnails) in the HTML summary.
TOP_UNSIGNED = 100
#: Refused entries listed in the HTML summary.
TOP_REFUSED = 200
#: The count key of rows with an error (no verdict).
ERROR = "ERROR"
#: The count key of sidecars (no verdict, no error).
SIDECAR = "SIDECAR"
#: The count key of empty files (not looked up).
EMPTY = "EMPTY"

CSV_FIELDS = (
    "path",
    "archive",
    "kind",
    "size",
    "media_type",
    "sha256",
    "pdq",
    "pdq_quality",
    "status",
    "pdq_distance",
    "device_id",
    "captured_at",
    "leaf_index",
    "detector_score",
    "detector_band",
    "note",
    "error",
)


def csv_path(report: Path) -> Path:
    return report.with_suffix(".csv")


def html_path(report: Path) -> Path:
    return report.with_suffix(".html")


def read_rows(report: Path) -> Iterator[dict[str, Any]]:
    """The rows of a JSON Lines report, in file order."""
    with report.open("rb") as f:
        for line in f:
            yield json.loads(line)


def row_key(row: dict[str, Any]) -> str:
    """The summary bucket of a row: its status, ERROR, EMPTY or SIDECAR."""
    if row.get("error"):
        return ERROR
    if row.get("kind") == "empty":
        return EMPTY
    return row.get("status") or SIDECAR


def hashed_bytes(row: dict[str, Any]) -> int:
    """Bytes of a row that were read and hashed (0 for a refused entry, whatever its size)."""
    return 0 if row.get("error") else row.get("size") or 0


def _score(row: dict[str, Any]) -> float | None:
    d = row.get("detector") or {}
    s = d.get("score")
    return float(s) if isinstance(s, int | float) else None


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """The flat CSV record of a row (first perceptual hash, claim and detector fields)."""
    soft = row.get("soft_bindings") or [{}]
    ev = row.get("evidence") or {}
    claim = ev.get("claim") or {}
    det = row.get("detector") or {}
    return {
        "path": row["path"],
        "archive": row.get("archive") or "",
        "kind": row.get("kind"),
        "size": row.get("size"),
        "media_type": row.get("media_type") or "",
        "sha256": row.get("sha256") or "",
        "pdq": soft[0].get("hash", ""),
        "pdq_quality": soft[0].get("quality", ""),
        "status": row.get("status") or "",
        "pdq_distance": "" if ev.get("pdq_distance") is None else ev["pdq_distance"],
        "device_id": claim.get("device_id", ""),
        "captured_at": claim.get("captured_at", ""),
        "leaf_index": (claim.get("log") or {}).get("leaf_index", ""),
        "detector_score": det.get("score", ""),
        "detector_band": det.get("band", ""),
        "note": row.get("note") or "",
        "error": row.get("error") or "",
    }


def write_csv(rows: Iterable[dict[str, Any]], path: Path) -> None:
    """Write the CSV table (UTF-8; undecodable name bytes as backslash escapes)."""
    with path.open("w", encoding="utf-8", errors="backslashreplace", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for row in rows:
            w.writerow(csv_row(row))


@dataclass(frozen=True)
class Summary:
    """Counts over a report: rows per key of `row_key`, total rows and hashed bytes; the top
    unsigned images (by detector score, then path) and the first refused rows."""

    counts: dict[str, int]
    rows: int
    bytes: int
    unsigned: list[dict[str, Any]]
    refused: list[dict[str, Any]]


def summarize(rows: Iterable[dict[str, Any]], top: int = TOP_UNSIGNED) -> Summary:
    """One pass over the rows; memory is bounded by ``top`` and TOP_REFUSED. Unsigned
    images are those decoded (kind "media"); without a score they rank last; equal scores
    keep the report's order."""
    counts: Counter[str] = Counter()
    size = 0
    refused: list[dict[str, Any]] = []

    def unsigned_images() -> Iterator[dict[str, Any]]:
        nonlocal size
        for row in rows:
            key = row_key(row)
            counts[key] += 1
            size += hashed_bytes(row)
            if key == ERROR and len(refused) < TOP_REFUSED:
                refused.append(row)
            if (
                key == Verdict.UNSIGNED.value
                and row.get("kind") == "media"
                and (row.get("media_type") or "").startswith("image/")
            ):
                yield row

    def rank(row: dict[str, Any]) -> float:
        s = _score(row)
        return -1.0 if s is None else s

    ranked = heapq.nlargest(top, unsigned_images(), key=rank)
    return Summary(dict(counts), sum(counts.values()), size, ranked, refused)


def thumbnail(data: bytes, max_pixels: int) -> str | None:
    """A base64 JPEG of at most THUMBNAIL_SIDE pixels a side, or None if undecodable."""
    try:
        rgb = decode_image(data, max_pixels).rgb
    except MediaError:
        return None
    im = Image.fromarray(rgb)
    im.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=75)
    return base64.b64encode(buf.getvalue()).decode("ascii")


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}td.n{text-align:right}img{display:block}.note{color:#666;font-size:90%}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def render_html(summary: Summary, thumbs: dict[str, str], title: str) -> str:
    """The HTML page (see the module docstring); thumbs maps a path to a base64 JPEG."""
    order = [v.value for v in Verdict] + [ERROR, EMPTY, SIDECAR]
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>{summary.rows} files, {summary.bytes:,} bytes.</p>",
        "<h2>Counts</h2><table><tr><th>status</th><th>files</th></tr>",
    ]
    for key in order:
        if summary.counts.get(key):
            out.append(f"<tr><td>{_e(key)}</td><td class='n'>{summary.counts[key]}</td></tr>")
    out.append("</table>")
    out.append(
        f"<h2>Unsigned images, by detector score (top {len(summary.unsigned)})</h2>"
        "<p class='note'>The detector's score is advisory: a learned estimate that an image"
        " was generated, never proof either way.</p>"
        "<table><tr><th></th><th>path</th><th>score</th><th>band</th><th>size</th></tr>"
    )
    for row in summary.unsigned:
        det = row.get("detector") or {}
        thumb = thumbs.get(row["path"])
        img = f"<img alt='' src='data:image/jpeg;base64,{thumb}'>" if thumb else ""
        score = _score(row)
        band = det.get("band") or det.get("note") or ""
        out.append(
            f"<tr><td>{img}</td><td>{_e(row['path'])}</td>"
            f"<td class='n'>{'' if score is None else f'{score:.3f}'}</td>"
            f"<td>{_e(band)}</td><td class='n'>{_e(row.get('size'))}</td></tr>"
        )
    out.append("</table>")
    if summary.refused:
        out.append(
            f"<h2>Refused or failed entries (first {len(summary.refused)})</h2>"
            "<table><tr><th>path</th><th>reason</th></tr>"
        )
        for row in summary.refused:
            out.append(f"<tr><td>{_e(row['path'])}</td><td>{_e(row['error'])}</td></tr>")
        out.append("</table>")
    out.append("</body></html>\n")
    return "".join(out)


def write_reports(
    report: Path, fetch: Callable[[list[dict[str, Any]]], dict[str, bytes]], max_pixels: int
) -> Summary:
    """Rebuild the CSV and HTML files beside the JSON Lines ``report``.

    fetch: the bytes of the files of the given rows, by path (to draw thumbnails of the
    top unsigned images); max_pixels: the largest image decoded for a thumbnail.
    Returns the summary of the whole report.
    """
    write_csv(read_rows(report), csv_path(report))
    summary = summarize(read_rows(report))
    data = fetch(summary.unsigned)
    thumbs = {ref: t for ref, blob in data.items() if (t := thumbnail(blob, max_pixels))}
    page = render_html(summary, thumbs, f"Scan report: {report.name}")
    html_path(report).write_text(page, encoding="utf-8", errors="backslashreplace")
    return summary
