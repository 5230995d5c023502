"""The scan's reports beside the JSON Lines journal: a CSV table and an HTML summary.

Both describe every row of the JSON Lines file: `ReportWriter` takes each row as the
scan records it (a resumed scan's earlier rows first, as the journal reads them). The
HTML page is self-contained: counts per verdict, the files that need a look (TAMPERED,
then REVOKED_KEY, then DERIVED, each with its key evidence: the reason, the revocation,
the matched log entry and distance; and, for a near copy, whether its match was checked
on its own pixels here: ``pixels_checked``), the unsigned images ranked by the detector's
advisory score, those with a score with inline JPEG thumbnails (base64
``data:`` URLs, at most THUMBNAIL_SIDE pixels a side), and the refused entries with their
reasons. When no detector ran (a scan without ``--detect``, and no row of the report
scored) the page says so and leaves out the score and band columns. Every string that
comes from a file name or a file is HTML-escaped, its control and bidirectional control
characters (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C) shown as escapes
(``\\u202e``), in the CSV too, where tab and newline are escaped as well (``\\x0a``: a
row is one line); the JSON Lines journal keeps every name exact.
"""

from __future__ import annotations

import base64
import csv
import errno
import heapq
import html
import io
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from PIL import Image

from clients.report import DETECTOR_ADVISORY, STATUS_BASIS, UNSIGNED_MEANS_NOTHING, status_basis
from clients.scan.hashing import NO_NEAR_SEARCH
from provenance.cli.atomicfile import remove_leftovers, temp_names_of, write_atomically
from provenance.core.claims import Verdict
from provenance.core.errors import MediaError
from provenance.core.files import file_kind, naming
from provenance.media.image import decode_image
from provenance.terminal import shown, shown_line

#: Largest side of a thumbnail, in pixels.
THUMBNAIL_SIDE = 96
#: Unsigned images shown (with thumbnails) in the HTML summary.
TOP_UNSIGNED = 100
#: Refused entries listed in the HTML summary.
TOP_REFUSED = 200
#: Files of each flagged verdict (TAMPERED, REVOKED_KEY, DERIVED) listed in the HTML summary.
TOP_FLAGGED = 200
#: The verdicts the HTML summary names file by file, most serious first.
FLAGGED = (Verdict.TAMPERED.value, Verdict.REVOKED_KEY.value, Verdict.DERIVED.value)
#: The name of the UNSIGNED verdict (an enum member's ``.value`` costs a descriptor call).
_UNSIGNED = Verdict.UNSIGNED.value
#: The count key of rows with an error (no verdict).
ERROR = "ERROR"
#: The count key of rows whose server answer was refused as evidence (no verdict; `prov
#: verify` exits 3 for such a file, and so does the scan).
EVIDENCE_REFUSED = "SERVER EVIDENCE REFUSED"
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
    "reason",  # added after the others, so scripts reading by position still find them
    # The detector's model and advisory text (DESIGN.md: every detector output carries
    # both), added last for the same reason; empty where no detector scored the row.
    "detector_model",
    "detector_advisory",
    # as `prov verify --json`'s: "log-key" (proven with --log-key), "refused" (the
    # server's evidence did not hold: see error), empty (not checked); added last
    "evidence_checked",
    # the --log-key (NAME+ID+KEY) that proved the row, or refused it; empty: none.
    # Added after evidence_checked, so the columns before stay where they were
    "log_key",
    # a near copy's (DERIVED, near REVOKED_KEY) match checked on its own pixels here:
    # "true", "false" (over this client's limits: the service's word), empty for other
    # verdicts and older rows. Added last, the columns before where they were
    "pixels_checked",
)


def csv_path(report: Path) -> Path:
    return report.with_suffix(".csv")


def html_path(report: Path) -> Path:
    return report.with_suffix(".html")


#: How each HTML page of a scan begins (`render_html`), and the start of its title
#: (`Report.finish`): `written_by_scan` knows an earlier scan's page by them.
HTML_HEAD = "<!doctype html><html><head><meta charset='utf-8'>"
SCAN_TITLE = "Scan report: "


def written_by_scan(path: Path) -> bool:
    """Whether ``path`` (a report's ``OUT.csv`` or ``OUT.html``, which a scan replaces when
    it completes, or ``OUT.csv.part``, which it truncates as it starts) holds nothing a
    scan would lose: absent, empty, or a file an earlier scan wrote there, a CSV (or the
    ``.part`` a killed scan left) whose header is `CSV_FIELDS` (or its first columns, through
    ``status``: older scans wrote fewer) or an HTML page beginning as `render_html`'s with
    a `SCAN_TITLE`. False for any other file, a folder, a FIFO or a device (not opened).
    Reads at most 4 KiB. Raises OSError (its ``strerror``: "Permission denied") for a
    file that exists but cannot be read: whose it is cannot be told (before, it was said
    to be no scan's)."""
    try:
        if not path.is_file():
            return not path.exists()
        if path.stat().st_size == 0:
            return True
        with path.open("rb") as f:
            head = f.read(4096).decode("utf-8", errors="replace")
    except FileNotFoundError:  # removed meanwhile: nothing to lose
        return True
    if path.suffix == ".html":
        return head.startswith(f"{HTML_HEAD}<title>{SCAN_TITLE}")
    header = next(csv.reader(io.StringIO(head.partition("\n")[0].rstrip("\r"))), [])
    least = CSV_FIELDS.index("status") + 1
    return len(header) >= least and tuple(header) == CSV_FIELDS[: len(header)]


def report_files(report: Path) -> tuple[Path, ...]:
    """Every file a scan into ``report`` writes: the JSON Lines report, the CSV (and the
    ``.part`` it is written to first) and the HTML page."""
    return (report, csv_path(report), csv_path(report).with_suffix(".csv.part"), html_path(report))


def row_key(row: dict[str, Any]) -> str:
    """The summary bucket of a row: its status, ERROR, EVIDENCE_REFUSED, EMPTY or SIDECAR."""
    if row.get("error"):
        return EVIDENCE_REFUSED if row.get("evidence_checked") == "refused" else ERROR
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


#: First characters that make a spreadsheet read a cell as a formula (OWASP "CSV Injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` as a CSV cell that a spreadsheet shows as text, on one line: in a string,
    control characters, tab and newline included, and bidirectional controls are written
    as their escapes (`shown_line`: ``\\x0a``, ``\\u202e``, which would otherwise break
    the row over lines or reorder the cell), and one starting with one of
    FORMULA_START (a file named ``=HYPERLINK(...).jpg``, given as ``prov scan *``) gets a
    leading ``'``; anything else is unchanged (the JSON Lines report keeps the exact
    value)."""
    if not isinstance(value, str):
        return value
    value = shown_line(value)  # (a variation selector it escapes is printable)
    return "'" + value if value.startswith(FORMULA_START) else value


def csv_row(row: dict[str, Any]) -> list[Any]:
    """The flat CSV record of a row (first perceptual hash, claim and detector fields), its
    values in the order of CSV_FIELDS, each a `csv_cell` (called only for a string that
    needs a change: a call per cell was about half of a row's CSV cost; an empty string,
    about half of a usual row's cells, is passed over before its two checks)."""
    return [
        csv_cell(v)
        if isinstance(v, str) and v and (not v.isprintable() or v.startswith(FORMULA_START))
        else v
        for v in _csv_values(row)
    ]


def _csv_values(row: dict[str, Any]) -> list[Any]:
    soft = row.get("soft_bindings") or [{}]
    ev = row.get("evidence") or {}
    claim = ev.get("claim") or {}
    det = row.get("detector") or {}
    pdq_distance = ev.get("pdq_distance")
    return [
        row["path"],
        row.get("archive") or "",
        row.get("kind"),
        row.get("size"),
        row.get("media_type") or "",
        row.get("sha256") or "",
        soft[0].get("hash", ""),
        soft[0].get("quality", ""),
        row.get("status") or "",
        "" if pdq_distance is None else pdq_distance,
        claim.get("device_id", ""),
        claim.get("captured_at", ""),
        (claim.get("log") or {}).get("leaf_index", ""),
        det.get("score", ""),
        det.get("band", ""),
        row.get("note") or "",
        row.get("error") or "",
        row_reason(row),
        _model(det) if "score" in det else "",
        (det.get("advisory") or DETECTOR_ADVISORY) if "score" in det else "",
        row.get("evidence_checked") or "",
        row.get("log_key") or "",
        _PIXELS_CELL.get(row.get("pixels_checked"), ""),
    ]


#: The CSV's ``pixels_checked`` cell of a row's value (JSON's words; None: empty).
_PIXELS_CELL: dict[object, str] = {True: "true", False: "false"}


def _model(detector: dict[str, Any]) -> str:
    """The model id and version of a detector block, as `prov verify` prints them."""
    parts = (detector.get("model_id"), detector.get("model_version"))
    return " ".join(str(p) for p in parts if p not in (None, ""))


@dataclass(frozen=True)
class Summary:
    """Counts over a report: rows per key of `row_key`, total rows and hashed bytes; the top
    unsigned images (by detector score, then report order) and the first refused rows;
    ``flagged``: the first TOP_FLAGGED rows of each verdict in FLAGGED, by verdict;
    ``detected``: whether a detector ran (the scan asked for one, or a row of the report
    carries a detector block: a resumed report's earlier rows); ``sha256_only``: how many
    UNSIGNED rows were looked up by SHA-256 alone (kind "file": no pixels hashed);
    ``pixels_unchecked``: how many rows are near copies whose match was not checked here
    (``pixels_checked`` false: over this client's own limits, the service's word);
    ``over_limits``: how many of the ``sha256_only`` rows are images over this scan's own
    limits (their note says `clients.scan.hashing.NO_NEAR_SEARCH`): no near copy searched
    for."""

    counts: dict[str, int]
    rows: int
    bytes: int
    unsigned: list[dict[str, Any]]
    refused: list[dict[str, Any]]
    detected: bool = False
    flagged: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sha256_only: int = 0
    pixels_unchecked: int = 0
    over_limits: int = 0


def _rank(row: dict[str, Any]) -> float:
    s = _score(row)
    return -1.0 if s is None else s


class ReportWriter:
    """The CSV table and the summary of a report, built from its rows as they come (in
    report order: a resumed report's rows first), so the end of a scan does not read the
    JSON Lines file again; `finish` then writes the HTML page.

    The CSV goes to ``OUT.csv.part`` and replaces ``OUT.csv`` in `finish`: a scan that
    stops early leaves the previous CSV as it was (`discard` drops the ``.part``; after a
    kill it stays until the next run of the scan replaces it). Memory is bounded by
    ``top`` and TOP_REFUSED. Unsigned images are those decoded (kind "media"); without a
    score they rank last; equal scores keep the report's order. ``detect``: the scan runs
    the detector (`Summary.detected`). Raises OSError when a file cannot be written.
    """

    def __init__(self, report: Path, top: int = TOP_UNSIGNED, detect: bool = False) -> None:
        self.report = report
        self._top = top
        self._detected = detect
        self._part = report_files(report)[2]
        with naming(self._part):
            self._file = _open_part(self._part)
            self._csv = csv.writer(self._file)
            self._csv.writerow(CSV_FIELDS)
        self._counts: Counter[str] = Counter()
        self._bytes = 0
        self._seen = 0
        self._sha256_only = 0  # UNSIGNED rows looked up by SHA-256 alone (kind "file")
        self._pixels_unchecked = 0  # near copies whose match was not checked here
        self._over_limits = 0  # SHA-256 only: images over this scan's limits
        self._unsigned: list[tuple[float, int, dict[str, Any]]] = []  # a min-heap
        self._refused: list[dict[str, Any]] = []
        self._flagged: dict[str, list[dict[str, Any]]] = {k: [] for k in FLAGGED}

    def add(self, row: dict[str, Any]) -> None:
        """Count one row and append it to the CSV."""
        self.add_rows((row,))

    def add_rows(self, rows: Sequence[dict[str, Any]]) -> int:
        """Count rows and append them to the CSV (one write call for them all, as a
        batch's rows come); returns the bytes they hashed (`hashed_bytes`)."""
        with naming(self._part):
            self._csv.writerows([csv_row(row) for row in rows])
        hashed = 0
        for row in rows:
            hashed += self._count(row)
        self._bytes += hashed
        return hashed

    def _count(self, row: dict[str, Any]) -> int:
        """Count one row in the summary; returns the bytes it hashed."""
        key = row_key(row)
        self._counts[key] += 1
        unsigned = key == _UNSIGNED
        if unsigned and row.get("kind") == "file":
            self._sha256_only += 1
            if NO_NEAR_SEARCH in (row.get("note") or ""):
                self._over_limits += 1
        self._seen += 1
        if row.get("pixels_checked") is False:
            self._pixels_unchecked += 1
        self._detected = self._detected or bool(row.get("detector"))
        if key in (ERROR, EVIDENCE_REFUSED) and len(self._refused) < TOP_REFUSED:
            self._refused.append(row)
        flagged = self._flagged.get(key)
        if flagged is not None and len(flagged) < TOP_FLAGGED:
            flagged.append(row)
        if (
            unsigned
            and row.get("kind") == "media"
            and (row.get("media_type") or "").startswith("image/")
        ):
            entry = (_rank(row), -self._seen, row)  # earlier rows win ties
            if len(self._unsigned) < self._top:
                heapq.heappush(self._unsigned, entry)
            elif entry[:2] > self._unsigned[0][:2]:
                heapq.heapreplace(self._unsigned, entry)
        return hashed_bytes(row)

    def summary(self) -> Summary:
        """The summary of the rows added so far."""
        ranked = [row for *_, row in sorted(self._unsigned, key=lambda e: e[:2], reverse=True)]
        counts = dict(self._counts)
        return Summary(
            counts,
            sum(counts.values()),
            self._bytes,
            ranked,
            list(self._refused),
            self._detected,
            {k: list(v) for k, v in self._flagged.items() if v},
            self._sha256_only,
            self._pixels_unchecked,
            self._over_limits,
        )

    def finish(
        self,
        fetch: Callable[[list[dict[str, Any]]], Iterable[tuple[str, bytes]]],
        max_pixels: int,
    ) -> Summary:
        """Put the CSV in place and write the HTML page beside the report, first removing
        the page's temporary files that a scan killed while writing it left
        (`remove_leftovers`: of a process no longer running).

        fetch: (path, bytes) of the files of the given rows, one at a time (to draw
        thumbnails of the top unsigned images that have a detector score: without scores
        the list ranks nothing, and its images are not read again); each image's thumbnail
        is drawn and its bytes dropped before the next is asked for, so memory holds one
        image at a time, not all of them. max_pixels: the largest image decoded for a
        thumbnail. Returns the summary of the whole report.
        """
        with naming(self._part):
            self._file.close()
            self._part.replace(csv_path(self.report))
        summary = self.summary()
        scored = [row for row in summary.unsigned if _score(row) is not None]
        thumbs: dict[str, str] = {}
        for ref, blob in fetch(scored) if scored else ():
            if t := thumbnail(blob, max_pixels):
                thumbs[ref] = t
            del blob  # before the next image is read
        page = render_html(summary, thumbs, f"{SCAN_TITLE}{self.report.name}")
        html = html_path(self.report)
        # what a scan killed while writing the page left beside it (of a process gone)
        remove_leftovers(html.parent, temp_names_of(html))
        # beside it, then renamed over its name: never written through a link made there
        # while the scan ran (refused before it started), as the CSV is not
        write_atomically(
            html,
            page.encode("utf-8", errors="backslashreplace"),
            mode=None,  # a page replaced keeps its permissions, a new one 0666 less the umask
            sync_folder=False,  # the report's rows are durable; the page is drawn from them
        )
        return summary

    def discard(self) -> None:
        """Drop the unfinished CSV (a scan that stopped early). Its close flushes what a
        failed write left buffered and fails again on a full disk: that OSError names the
        CSV, and the file is removed all the same."""
        if not self._file.closed:
            try:
                with naming(self._part):
                    self._file.close()
            finally:
                self._part.unlink(missing_ok=True)


def _open_part(part: Path) -> IO[str]:
    """``part`` (a report's ``OUT.csv.part``) created or truncated for writing the CSV,
    opened only as the regular file at that name: never through a symbolic link (made
    there after `prov scan` checked the name: O_NOFOLLOW), nor a FIFO (O_NONBLOCK: no
    wait for a reader) or device. Raises OSError, "a symbolic link there..." or "...
    not a regular file" for those (its ``filename`` set by the caller's `naming`)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(part, flags, 0o666)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise OSError(
            e.errno, "a symbolic link there, not followed: move it away, and scan again"
        ) from e
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(
                errno.EINVAL, f"{file_kind(mode)} there, not written: move it away, and scan again"
            )
        os.ftruncate(fd, 0)
        os.set_blocking(fd, True)
        return open(fd, "w", encoding="utf-8", errors="backslashreplace", newline="")
    except BaseException:
        os.close(fd)
        raise


def thumbnail(data: bytes, max_pixels: int) -> str | None:
    """A base64 JPEG of at most THUMBNAIL_SIDE pixels a side, or None if undecodable. A
    JPEG is decoded at the smallest DCT scale that keeps its shorter side at least
    THUMBNAIL_SIDE pixels."""
    try:
        rgb = decode_image(data, max_pixels, pdq_min_side=THUMBNAIL_SIDE).rgb
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
td.unchecked{color:#a40}
"""


def _e(value: object) -> str:
    """``value`` as HTML text: control characters and bidirectional controls written as
    their escapes (`provenance.terminal.shown`: a name "photo\\u202egpj.exe" would read
    "photoexe.jpg"), then HTML-escaped."""
    return html.escape(shown(str(value)), quote=True)


#: The HTML page's header line when no detector ran.
NO_DETECTOR = (
    "No detector ran in this scan (scan with --detect for the advisory detector's score"
    " of each unsigned image): unsigned images are listed in report order."
)


def flagged_evidence(row: dict[str, Any]) -> str:
    """The key evidence of a flagged row, in one line: for DERIVED the matched capture's log
    leaf and the distance (PDQ bits, or the video's frame coverage), for REVOKED_KEY the
    revocation (time and reason), for TAMPERED the reasons; the row's reasons otherwise."""
    ev = row.get("evidence") or {}
    claim = ev.get("claim") or {}
    leaf = (claim.get("log") or {}).get("leaf_index")
    at = "an unlogged claim" if leaf is None else f"log leaf {leaf}"
    status = row.get("status")
    reasons = "; ".join(str(r) for r in row.get("reasons") or [])
    if status == Verdict.DERIVED.value:
        video = ev.get("video_match")
        if video:
            share = video.get("coverage")
            cover = "" if share is None else f"{share:.0%} of the frames covered, "
            return (
                f"matches the capture at {at}: {cover}median distance"
                f" {video.get('median_distance')} bits (match threshold {video.get('threshold')})"
            )
        if ev.get("pdq_distance") is not None:
            return (
                f"matches the capture at {at}: PDQ distance {ev['pdq_distance']} bits"
                f" (match threshold {ev.get('pdq_threshold')})"
            )
    if status == Verdict.REVOKED_KEY.value:
        device = claim.get("device") or {}
        if device.get("revoked_at"):
            return (
                f"the key of device {str(claim.get('device_id', '?'))[:16]}… was revoked"
                f" {device['revoked_at'][:19]}Z: {device.get('revocation_reason') or 'no reason given'}"
                f" (claim at {at})"
            )
    return reasons or "(no reason recorded)"


def row_reason(row: dict[str, Any]) -> str:
    """Why a row has its verdict, in one line, as the HTML page says it: a refused or
    failed row's error; a flagged row's key evidence (`flagged_evidence`); any other
    row's reasons from the server, joined with "; " (why UNSIGNED, why SIGNED_ORIGINAL);
    "" for a row without reasons (a sidecar, an empty file)."""
    if row.get("error"):
        return str(row["error"])
    if row.get("status") in FLAGGED:
        return flagged_evidence(row)
    return "; ".join(str(r) for r in row.get("reasons") or [])


#: The flagged table's "match checked" cell of a row's ``pixels_checked`` (the web page's
#: words; None: another verdict, or a row of a scan without the column).
_PIXELS_HTML: dict[object, str] = {
    True: "<td>checked here too</td>",
    False: "<td class='unchecked'>not checked here</td>",
}

#: What the flagged table's "match checked" column says (a note under its heading).
MATCH_CHECKED_NOTE = (
    "Match checked: for a near copy (DERIVED, or REVOKED_KEY of a near match), whether"
    " this scan hashed the file's own pixels and they match the claim's (checked here"
    " too), or the file is over this client's own image limits, so its match is the"
    " service's word (not checked here); empty for other verdicts and for rows of scans"
    " made before the column was added."
)


def _flagged_html(summary: Summary) -> list[str]:
    """The table of the flagged files, most serious verdict first, each with its match
    checked here or not (`_PIXELS_HTML`; nothing when none)."""
    shown = [row for key in FLAGGED for row in summary.flagged.get(key, [])]
    if not shown:
        return []
    total = sum(summary.counts.get(k, 0) for k in FLAGGED)
    more = f" (first {len(shown)} of {total})" if len(shown) < total else ""
    out = [
        f"<h2>Files to look at: tampered, revoked or derived{more}</h2>"
        f"<p class='note' id='match-checked'>{_e(MATCH_CHECKED_NOTE)}</p>"
        "<table><tr><th>path</th><th>status</th><th>evidence</th><th>match checked</th></tr>"
    ]
    for row in shown:
        out.append(
            f"<tr><td>{_e(row['path'])}</td><td>{_e(row.get('status'))}</td>"
            f"<td>{_e(row_reason(row))}</td>"
            f"{_PIXELS_HTML.get(row.get('pixels_checked'), '<td></td>')}</tr>"
        )
    out.append("</table>")
    return out


def _unsigned_html(summary: Summary, thumbs: dict[str, str]) -> list[str]:
    """The unsigned images' table (ranked by detector score when one ran), or a line
    saying there were none: not a table of headers alone."""
    if not summary.unsigned:
        return ["<h2>Unsigned images</h2><p>None in this scan.</p>"]
    out: list[str] = []
    if summary.detected:
        out.append(
            f"<h2>Unsigned images, by detector score (top {len(summary.unsigned)})</h2>"
            "<p class='note'>The detector's score is advisory: a learned estimate that an"
            " image was generated, never proof either way. A band's thresholds can depend on"
            " the image (the default model asks more of clean, low-noise pictures: they need"
            " a higher score to be called likely generated), so a higher score can sit in a"
            " lower band.</p>"
            "<table><tr><th></th><th>path</th><th>score</th><th>band</th><th>size</th></tr>"
        )
    else:
        out.append(
            f"<h2>Unsigned images (first {len(summary.unsigned)})</h2>"
            "<table><tr><th>path</th><th>size</th></tr>"
        )
    for row in summary.unsigned:
        path, size = f"<td>{_e(row['path'])}</td>", f"<td class='n'>{_e(row.get('size'))}</td>"
        if not summary.detected:
            out.append(f"<tr>{path}{size}</tr>")
            continue
        det = row.get("detector") or {}
        thumb = thumbs.get(row["path"])
        img = f"<img alt='' src='data:image/jpeg;base64,{thumb}'>" if thumb else ""
        score = _score(row)
        band = det.get("band") or det.get("note") or ""
        out.append(
            f"<tr><td>{img}</td>{path}"
            f"<td class='n'>{'' if score is None else f'{score:.3f}'}</td>"
            f"<td>{_e(band)}</td>{size}</tr>"
        )
    out.append("</table>")
    return out


#: What the counts' rows that are no verdict hold, and what UNSIGNED does not mean.
_LEGEND = {
    _UNSIGNED: "no signed capture by a key in good standing was found for the file (a row"
    f" whose server cut its search short says so in its reasons); {UNSIGNED_MEANS_NOTHING}",
    ERROR: "refused, unreadable or not answered by the server: no verdict (reasons listed below)",
    EVIDENCE_REFUSED: "the server's answer did not hold as checked here (a claim of other"
    " bytes cited, or, with --log-key, a receipt that does not verify with that key): no"
    " verdict (reasons listed below); the scan exits 3, as `prov verify` does for such a file",
    EMPTY: "a file of no bytes: nothing to look up",
    SIDECAR: "a provenance sidecar (FILE.prov), not looked up itself (beside a folder file,"
    " it is checked with that file)",
}


def legend(
    counts: Mapping[str, int],
    where: str = "listed below",
    pixels_unchecked: int = 0,
    over_limits: int = 0,
) -> list[str]:
    """A line "KEY: meaning" for each row of ``counts`` that needs a word (`_LEGEND`): the
    rows that are no verdict, and UNSIGNED; ``where`` says where the refused rows are.
    Then, when ``pixels_unchecked`` near copies' matches were not checked here
    (`Summary.pixels_unchecked`), a line saying so; and when ``over_limits`` UNSIGNED
    images were over this scan's own limits (`Summary.over_limits`), a line saying that
    no near copy was searched for them."""
    lines = [
        f"{key}: {_LEGEND[key].replace('listed below', where)}"
        for key in _LEGEND
        if counts.get(key)
    ]
    if pixels_unchecked:
        one = pixels_unchecked == 1
        lines.append(
            f"not checked here: {pixels_unchecked:,} DERIVED or REVOKED_KEY"
            f" {'file is' if one else 'files are'} over this client's own image limits, so"
            f" {'its' if one else 'their'} pixels were not hashed here and"
            f" {'its' if one else 'their'} match to the signed capture is the service's word"
            " (pixels_checked false in the report)"
        )
    if over_limits:
        one = over_limits == 1
        lines.append(
            f"UNSIGNED by SHA-256 only: {over_limits:,} {'image is' if one else 'images are'}"
            " over this client's own image limits, so no near copy of a signed capture was"
            " searched for (its note says which limit); `prov verify FILE` sends a file to"
            " the service, which may have been started with higher limits and find it"
            " DERIVED"
        )
    return lines


def _legend_html(summary: Summary) -> list[str]:
    """A line under the counts for each of their rows that needs a word (`legend`)."""
    lines = legend(
        summary.counts,
        pixels_unchecked=summary.pixels_unchecked,
        over_limits=summary.over_limits,
    )
    if not lines:
        return []
    items = "".join(f"<li>{_e(line)}</li>" for line in lines)
    return [f"<ul class='note' id='legend'>{items}</ul>"]


def _basis_html(counts: Mapping[str, int]) -> str:
    """What decides the statuses ``counts`` holds, as each report says it
    (`clients.report.status_basis`): a line a basis, naming its statuses (UNSIGNED's is
    no signature's; DERIVED's, the signed capture's alone); `STATUS_BASIS` when no
    verdict is counted."""
    bases: dict[str, list[str]] = {}
    for verdict in Verdict:
        if counts.get(verdict.value):
            bases.setdefault(status_basis(verdict), []).append(verdict.value)
    if not bases:
        return f"<p class='note' id='status-basis'>Statuses: {_e(STATUS_BASIS)}.</p>"
    items = "".join(f"<li>{_e(', '.join(v))}: {_e(basis)}.</li>" for basis, v in bases.items())
    return f"<ul class='note' id='status-basis'>{items}</ul>"


def render_html(summary: Summary, thumbs: dict[str, str], title: str) -> str:
    """The HTML page (see the module docstring); thumbs maps a path to a base64 JPEG."""
    order = [v.value for v in Verdict] + [ERROR, EVIDENCE_REFUSED, EMPTY, SIDECAR]
    out = [
        HTML_HEAD,
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>{summary.rows} files, {summary.bytes:,} bytes.</p>",
        _basis_html(summary.counts),
    ]
    if not summary.detected:
        out.append(f"<p class='note'>{NO_DETECTOR}</p>")
    out.append("<h2>Counts</h2><table><tr><th>status</th><th>files</th></tr>")
    for key in order:
        if summary.counts.get(key):
            out.append(f"<tr><td>{_e(key)}</td><td class='n'>{summary.counts[key]}</td></tr>")
    out.append("</table>")
    out.extend(_legend_html(summary))
    if summary.sha256_only:
        out.append(
            f"<p class='note'>{summary.sha256_only} of the UNSIGNED files"
            f" {'was' if summary.sha256_only == 1 else 'were'} looked up by"
            " SHA-256 only (not media, truncated or corrupt, or over a size limit): the"
            " CSV's note column says why for each.</p>"
        )
    out.extend(_flagged_html(summary))
    out.extend(_unsigned_html(summary, thumbs))
    if summary.refused:
        out.append(
            f"<h2>Refused or failed entries (first {len(summary.refused)})</h2>"
            "<table><tr><th>path</th><th>reason</th></tr>"
        )
        for row in summary.refused:
            out.append(f"<tr><td>{_e(row['path'])}</td><td>{_e(row_reason(row))}</td></tr>")
        out.append("</table>")
    out.append("</body></html>\n")
    return "".join(out)
