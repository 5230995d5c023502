"""The scan's CSV and summary built row by row (`clients.scan.report.ReportWriter`)."""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from clients.report import DERIVED_BASIS, DETECTOR_ADVISORY, STATUS_BASIS, UNSIGNED_BASIS
from clients.scan.report import (
    CSV_FIELDS,
    ERROR,
    ReportWriter,
    csv_cell,
    csv_path,
    csv_row,
    html_path,
)
from clients.scan.rows import error_row


def _unsigned(path: str, score: float | None) -> dict[str, Any]:
    detector = None if score is None else {"score": score, "band": "low"}
    return {
        "path": path,
        "kind": "media",
        "size": 10,
        "media_type": "image/jpeg",
        "status": "UNSIGNED",
        "detector": detector,
    }


def test_top_unsigned_by_score_then_report_order(tmp_path: Path) -> None:
    report = tmp_path / "r.jsonl"
    writer = ReportWriter(report, top=3)
    scores = [None, 0.2, 0.9, 0.2, None, 0.9, 0.2]
    for k, score in enumerate(scores):
        writer.add(_unsigned(f"img{k}.jpg", score))
    writer.add(error_row("bad.zip!x", "path traversal", 3))
    summary = writer.finish(lambda rows: (), 1000)
    # the two 0.9 in report order, then the first of the three 0.2
    assert [r["path"] for r in summary.unsigned] == ["img2.jpg", "img5.jpg", "img1.jpg"]
    assert summary.counts == {"UNSIGNED": 7, ERROR: 1}
    assert summary.rows == 8 and summary.bytes == 70  # a refused entry hashed nothing
    assert [r["path"] for r in summary.refused] == ["bad.zip!x"]
    with csv_path(report).open(newline="") as f:
        paths = [r["path"] for r in csv.DictReader(f)]
    assert paths == [f"img{k}.jpg" for k in range(7)] + ["bad.zip!x"]
    assert "bad.zip!x" in html_path(report).read_text()
    assert not list(tmp_path.glob("*.part"))
    # which part is cryptographic, which advisory (README: every report says which is which)
    page = html_path(report).read_text()
    assert "id='status-basis'><li>UNSIGNED: cryptographic: no capture signed by" in page
    assert "rests on device signatures" not in page  # none of its statuses does


def test_the_html_summary_gives_each_status_counted_its_own_basis(tmp_path: Path) -> None:
    """Each basis is said of the statuses it is of, in the words of their reports
    (`status_basis`): "rests on device signatures" of SIGNED_ORIGINAL and TAMPERED, not
    of UNSIGNED files, which have none."""
    report = tmp_path / "r.jsonl"
    writer = ReportWriter(report)
    for status in ("SIGNED_ORIGINAL", "UNSIGNED", "DERIVED", "TAMPERED", "UNSIGNED"):
        writer.add({**_unsigned("a.jpg", None), "status": status})
    writer.finish(lambda rows: (), 1000)
    page = html_path(report).read_text()
    basis = re.search(r"id='status-basis'>(.*?)</ul>", page)
    assert basis is not None, page
    items = re.findall(r"<li>([^:]*): ", basis.group(1))
    assert items == ["SIGNED_ORIGINAL, TAMPERED", "DERIVED", "UNSIGNED"], basis.group(1)
    for names, words in (
        ("SIGNED_ORIGINAL, TAMPERED", STATUS_BASIS),
        ("DERIVED", DERIVED_BASIS),
        ("UNSIGNED", UNSIGNED_BASIS),
    ):
        assert f"<li>{names}: {html.escape(words)}.</li>" in basis.group(1), names


def test_the_html_summary_explains_its_rows_that_are_no_verdict(tmp_path: Path) -> None:
    """The counts table has rows ERROR, EMPTY and SIDECAR beside the five verdicts; an
    archivist reading the page was told nowhere what they are (nor in docs/scan.md), and
    not that 4,997 UNSIGNED files says nothing about whether they are real (found by
    scanning a 5,000-file folder as README describes)."""
    report = tmp_path / "r.jsonl"
    writer = ReportWriter(report)
    writer.add(_unsigned("a.jpg", None))
    writer.add(error_row("bad.zip!x", "path traversal", 3))
    writer.add({"path": "e.jpg", "kind": "empty", "size": 0, "status": None, "note": "empty"})
    writer.add({"path": "a.jpg.prov", "kind": "sidecar", "size": 9, "status": None})
    writer.finish(lambda rows: (), 1000)
    text = re.sub(r"<[^>]+>", " ", html_path(report).read_text())
    text = re.sub(r"\s+", " ", text)
    assert "UNSIGNED: no signed capture by a key in good standing was found for the file" in text, (
        text
    )
    assert "says nothing about whether it is real" in text, text
    assert "ERROR: refused, unreadable or not answered" in text, text
    assert "EMPTY: a file of no bytes" in text, text
    assert "SIDECAR: a provenance sidecar" in text, text


def test_the_html_summary_explains_only_the_rows_it_has(tmp_path: Path) -> None:
    report = tmp_path / "r.jsonl"
    writer = ReportWriter(report)
    writer.add({**_unsigned("a.jpg", None), "status": "SIGNED_ORIGINAL"})
    writer.finish(lambda rows: (), 1000)
    page = html_path(report).read_text()
    for absent in ("UNSIGNED:", "ERROR:", "EMPTY:", "SIDECAR:"):
        assert absent not in page, absent


def test_an_unfinished_report_keeps_the_previous_csv(tmp_path: Path) -> None:
    report = tmp_path / "r.jsonl"
    csv_path(report).write_text("the previous table\n")
    writer = ReportWriter(report)
    writer.add(_unsigned("a.jpg", None))
    writer.discard()  # the scan stopped early
    assert csv_path(report).read_text() == "the previous table\n"
    assert not list(tmp_path.glob("*.part"))


def _jpeg(side: int) -> bytes:
    rng = np.random.default_rng(side)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_thumbnails_only_for_scored_images(tmp_path: Path) -> None:
    # without a detector score the list ranks nothing: its images are not read again
    report = tmp_path / "r.jsonl"
    writer = ReportWriter(report)
    for k, score in enumerate([None, 0.7, None, 0.1]):
        writer.add(_unsigned(f"img{k}.jpg", score))
    asked: list[str] = []

    def fetch(rows: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
        asked.extend(r["path"] for r in rows)
        return [(r["path"], _jpeg(800)) for r in rows]

    summary = writer.finish(fetch, 10**7)
    assert sorted(asked) == ["img1.jpg", "img3.jpg"]
    assert len(summary.unsigned) == 4
    page = html_path(report).read_text()
    thumbs = re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", page)
    assert len(thumbs) == 2
    for t in thumbs:  # an 800 px JPEG, decoded at 1/8 scale, drawn at most 96 px a side
        assert Image.open(io.BytesIO(base64.b64decode(t))).size == (96, 96)

    writer = ReportWriter(tmp_path / "none.jsonl")  # no scores at all: nothing fetched
    writer.add(_unsigned("a.jpg", None))
    writer.finish(lambda rows: pytest.fail("fetched without scores"), 10**7)


def _flagged(path: str, status: str, **evidence: Any) -> dict[str, Any]:
    return {
        "path": path,
        "kind": "media",
        "size": 10,
        "media_type": "image/jpeg",
        "status": status,
        "reasons": [f"why {path}"],
        "evidence": evidence,
    }


def test_flagged_files_are_named_most_serious_first_with_their_evidence(tmp_path: Path) -> None:
    report = tmp_path / "r.jsonl"
    writer = ReportWriter(report)
    claim = {"device_id": "ab" * 16, "log": {"leaf_index": 7}}
    revoked = {
        **claim,
        "device": {
            "revoked_at": "2026-12-01T10:00:00.000000Z",
            "revocation_reason": "lost <phone>",
        },
    }
    writer.add(_flagged("copy.jpg", "DERIVED", claim=claim, pdq_distance=12, pdq_threshold=31))
    writer.add(_unsigned("plain.jpg", None))
    writer.add(_flagged("old.jpg", "REVOKED_KEY", claim=revoked))
    writer.add(_flagged("edit.jpg", "TAMPERED", claim=claim))
    writer.finish(lambda rows: (), 1000)
    page = html_path(report).read_text()
    table = page[page.index("<h2>Files to look at") : page.index("<h2>Unsigned images")]
    assert re.findall(r"<tr><td>([^<]+)</td><td>([A-Z_]+)</td>", table) == [
        ("edit.jpg", "TAMPERED"),
        ("old.jpg", "REVOKED_KEY"),
        ("copy.jpg", "DERIVED"),
    ]
    assert "<td>why edit.jpg</td>" in table
    assert "revoked 2026-12-01T10:00:00Z: lost &lt;phone&gt; (claim at log leaf 7)" in table
    assert "matches the capture at log leaf 7: PDQ distance 12 bits (match threshold 31)" in table
    assert "plain.jpg" not in table
    # the CSV's reason column says the same, for spreadsheets
    with csv_path(report).open(newline="") as f:
        reasons = {r["path"]: r["reason"] for r in csv.DictReader(f)}
    assert reasons["edit.jpg"] == "why edit.jpg"
    assert reasons["old.jpg"].startswith("the key of device abababababababab… was revoked")
    assert reasons["copy.jpg"].startswith("matches the capture at log leaf 7: PDQ distance 12")

    writer = ReportWriter(tmp_path / "plain.jsonl")  # nothing flagged: no such table
    writer.add(_unsigned("a.jpg", None))
    writer.finish(lambda rows: (), 1000)
    assert "Files to look at" not in html_path(tmp_path / "plain.jsonl").read_text()


@pytest.mark.parametrize(
    "name",
    [
        "plain.jpg",
        "=HYPERLINK(x).jpg",
        "+1.jpg",
        "-2.jpg",
        "@a.jpg",
        "\tTab.jpg",
        "\rcr.jpg",
        "cat\u202egnp.exe",
        "bell\x07.jpg",
        "=\u202e.jpg",
        "",
        "caf\\xe9.jpg",
    ],
)
def test_csv_row_escapes_each_cell_as_csv_cell(name: str) -> None:
    """The CSV record calls `csv_cell` only for strings that need it: every cell is still
    what `csv_cell` makes of it (numbers and empty cells unchanged)."""
    row = {
        "path": name,
        "archive": name,
        "kind": "media",
        "size": 12,
        "media_type": "image/jpeg",
        "sha256": "ab" * 32,
        "soft_bindings": [{"hash": "cd" * 32, "quality": 90}],
        "status": "UNSIGNED",
        "reasons": [name],
        "evidence": {"pdq_distance": 0, "claim": {"device_id": name, "log": {"leaf_index": 3}}},
        "detector": {"score": 0.25, "band": name, "model_id": name, "model_version": 7},
        "note": name,
        "error": None,
        "log_key": name,
        "pixels_checked": False,
    }
    got = csv_row(row)
    assert len(got) == len(CSV_FIELDS)
    want = [
        csv_cell(v)
        for v in [
            name,
            name,
            "media",
            12,
            "image/jpeg",
            "ab" * 32,
            "cd" * 32,
            90,
            "UNSIGNED",
            0,
            name,
            "",
            3,
            0.25,
            name,
            name,
            "",
            name,
            f"{name} 7" if name else "7",
            DETECTOR_ADVISORY,
            "",  # evidence_checked: not checked (cited53)
            name,  # log_key (scankey54)
            "false",  # pixels_checked (scanpix55)
        ]
    ]
    assert got == want
    assert [type(v) for v in got] == [type(v) for v in want]


def test_a_csv_row_is_one_line_whatever_the_names_hold(tmp_path: Path) -> None:
    """A newsroom opens the CSV in a spreadsheet, or reads it with line tools: a newline
    or tab in a file name (or an error) is written as its escape (``\\x0a``, ``\\x09``),
    as docs/scan.md says of control characters, so each row is one line and a name cannot
    show a forged row inside its cell. Before, both were kept: ``"x.jpg\\nSIGNED..."``
    made a cell of two lines (the file of 3 rows had 5). A name starting with ``-`` after
    its newline is no formula either."""
    report = tmp_path / "r.jsonl"
    writer = ReportWriter(report)
    names = ["x.jpg\nother.jpg,SIGNED_ORIGINAL", "tab\there.jpg", "\n=1+1.jpg"]
    for name in names:
        writer.add({**_unsigned(name, None), "note": f"why\n{name}"})
    writer.finish(lambda rows: (), 1000)
    text = csv_path(report).read_text(encoding="utf-8")
    assert len(text.splitlines()) == 1 + len(names), text
    with csv_path(report).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [
        "x.jpg\\x0aother.jpg,SIGNED_ORIGINAL",
        "tab\\x09here.jpg",
        "\\x0a=1+1.jpg",
    ], rows
    assert rows[0]["note"] == "why\\x0ax.jpg\\x0aother.jpg,SIGNED_ORIGINAL", rows[0]
    assert "\t" not in text and all("\n" not in v for r in rows for v in r.values())


def test_a_batch_of_rows_counts_and_writes_as_row_by_row(tmp_path: Path) -> None:
    """`ReportWriter.add_rows` (a batch's rows, as the scan hands them over) writes the
    same CSV and summary as `add` row by row, and returns the bytes they hashed."""
    rows = [_unsigned(f"img{k}.jpg", 0.1 * k) for k in range(5)]
    rows += [error_row("bad.zip!x", "path traversal", 3), {**_unsigned("=x.jpg", None)}]
    one, many = tmp_path / "one" / "r.jsonl", tmp_path / "many" / "r.jsonl"
    one.parent.mkdir()
    many.parent.mkdir()
    by_row = ReportWriter(one, top=3)
    for row in rows:
        by_row.add(row)
    by_batch = ReportWriter(many, top=3)
    assert by_batch.add_rows(rows[:4]) + by_batch.add_rows(rows[4:]) == 60
    assert by_batch.add_rows([]) == 0
    assert by_batch.finish(lambda r: (), 1000) == by_row.finish(lambda r: (), 1000)
    assert csv_path(many).read_bytes() == csv_path(one).read_bytes()


@pytest.mark.parametrize("detect", [False, True])
def test_a_scan_without_unsigned_images_says_so_not_an_empty_table(
    tmp_path: Path, detect: bool
) -> None:
    """A scan whose files were all signed or derived showed "Unsigned images, by detector
    score (top 0)" over a table of headers alone (a newcomer's scan with --detect)."""
    report = tmp_path / "r.jsonl"
    writer = ReportWriter(report, detect=detect)
    writer.add(_flagged("copy.jpg", "DERIVED", pdq_distance=12, pdq_threshold=31))
    writer.finish(lambda rows: (), 1000)
    page = html_path(report).read_text()
    assert "<h2>Unsigned images</h2><p>None in this scan.</p>" in page, page
    assert "(top 0)" not in page and "(first 0)" not in page
    assert "<th>score</th>" not in page and "<th>size</th>" not in page


def test_the_ranked_list_says_why_a_higher_score_can_be_in_a_lower_band(tmp_path: Path) -> None:
    """Scanning with --detect ranked an image scored 0.927 'uncertain' above one scored
    0.923 'likely generated' with no word why (each image has its own threshold: a clean,
    low-noise picture needs a higher score); the text report and the web page say it,
    the scan's page did not."""
    report = tmp_path / "r.jsonl"
    writer = ReportWriter(report, detect=True)
    writer.add({**_unsigned("a.png", 0.927), "detector": {"score": 0.927, "band": "uncertain"}})
    writer.add(
        {**_unsigned("b.png", 0.923), "detector": {"score": 0.923, "band": "likely generated"}}
    )
    writer.finish(lambda rows: (), 1000)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html_path(report).read_text()))
    assert "clean, low-noise pictures: they need a higher score" in text, text


def test_the_report_writer_writes_through_no_link_that_appeared_after_the_check(
    tmp_path: Path,
) -> None:
    """`prov scan` refuses a symbolic link at OUT.csv.part or OUT.html before it starts
    (`clients.scan.cli`), but one may be made there while it runs (a shared folder): the
    writer never writes through it into the file it leads to. The .part is opened with
    O_NOFOLLOW (refused, naming it, the file it leads to untouched); the page is written
    beside it and renamed over its name, replacing a link there as the CSV replaces one
    at OUT.csv. Before, the .part was opened and the page written through such a link:
    the file it led to (another folder's) was truncated and then held the CSV or the
    page. Real files and links."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    kept = elsewhere / "kept.txt"
    kept.write_text("someone else's file\n")
    report = tmp_path / "r.jsonl"
    part = tmp_path / "r.csv.part"
    part.symlink_to(kept)
    with pytest.raises(OSError) as info:
        ReportWriter(report)
    assert info.value.filename == str(part), info.value
    assert "symbolic link" in str(info.value) and "move it away" in str(info.value)
    assert kept.read_text() == "someone else's file\n" and part.is_symlink()
    part.unlink()
    writer = ReportWriter(report)  # the check passed: nothing there
    writer.add(_unsigned("a.jpg", None))
    html_path(report).symlink_to(kept)  # made while the scan runs
    writer.finish(lambda rows: (), 1000)
    assert kept.read_text() == "someone else's file\n"
    assert not html_path(report).is_symlink()
    assert html_path(report).read_text().startswith("<!doctype html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "r.csv", "r.html"], list(
        tmp_path.iterdir()
    )
