"""Resuming a scan from a report whose rows were damaged or edited: the line is named and
the scan stops with a ConfigError (exit 1, "error: ..."), never a traceback. The real
journal and report writer, as `clients.scan.pipeline.run_scan` joins them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clients.scan.report import ReportWriter
from clients.scan.resume import Journal, encode_lines
from provenance.core.errors import ConfigError
from tests.conftest import ROOT, closed_port

GOOD = {"path": "a.jpg", "kind": "empty", "size": 0, "status": None, "error": None}

#: A damaged line -> words of its error. Before, the first four ended in an
#: AttributeError or TypeError traceback (a path that is no text, fields of other
#: shapes handed to the CSV), and the NUL line was read as UTF-32 ("'utf-32-be' codec can't decode").
DAMAGED = {
    "a number as path": (json.dumps({**GOOD, "path": 5}), "path"),
    "soft bindings a number": (json.dumps({**GOOD, "soft_bindings": 5}), "line 2"),
    "evidence text": (json.dumps({**GOOD, "evidence": "e"}), "line 2"),
    "detector a list": (json.dumps({**GOOD, "detector": [1]}), "line 2"),
    "a list": ("[1, 2]", "line 2"),
    "NUL bytes": ("\0\0\0\0\0\0", "Expecting value"),
}


def _resume(report: Path, lines: list[str]) -> Journal:
    """The journal of ``report``, written as ``lines``, resumed (closed) as the scan does
    it: each row handed to a `ReportWriter` (its CSV then discarded). Raises ConfigError."""
    report.write_text("".join(line + "\n" for line in lines))
    writer = ReportWriter(report)
    try:
        journal = Journal(report, resume=True, on_row=writer.add)
        journal.close()
    finally:
        writer.discard()
    return journal


def _refused_second_line(report: Path, first: str, second: str) -> str:
    """The message of the ConfigError resuming from a report of lines ``first`` and
    ``second``, which names line 2."""
    with pytest.raises(ConfigError, match="line 2 is not a scan report row") as info:
        _resume(report, [first, second])
    return str(info.value)


@pytest.mark.parametrize("damage", DAMAGED)
def test_a_damaged_row_is_named_not_a_traceback(tmp_path: Path, damage: str) -> None:
    line, words = DAMAGED[damage]
    said = _refused_second_line(tmp_path / "scan.jsonl", json.dumps(GOOD), line)
    assert words in said, said


def test_rows_as_the_scan_writes_them_still_resume(tmp_path: Path) -> None:
    row = {**GOOD, "soft_bindings": [{"hash": "ab", "quality": 90}], "evidence": {}}
    lines = [json.dumps(GOOD), json.dumps({**row, "path": "b.jpg"})]
    journal = _resume(tmp_path / "scan.jsonl", lines)
    assert "a.jpg" in journal.done and "b.jpg" in journal.done


#: A size that is no byte count -> words of its error. Before, each was accepted: the
#: summary then said "inf MB" or "nan MB", or a negative total (-1), or a number of
#: 4,000 digits of bytes; 10,000 digits were refused by the JSON reader already.
BAD_SIZES = {
    "1e999": ("1e999", "infinite"),
    "1e400": ("1e400", "infinite"),
    "-1e999": ("-1e999", "minus infinity"),
    "NaN": ("NaN", "is NaN"),
    "minus one": ("-1", "-1"),
    "a fraction": ("2.5", "2.5"),
    "4,000 digits": ("9" * 4000, "4,000 digits"),
    "2^63": (str(2**63), "9223372036854775808"),
    "10,000 digits": ("9" * 10_000, "10,000 digits"),
    "text": ('"12"', '"12"'),
    "true": ("true", "is true"),
}


@pytest.mark.parametrize("bad", BAD_SIZES)
def test_a_size_that_is_no_byte_count_is_named(tmp_path: Path, bad: str) -> None:
    text, words = BAD_SIZES[bad]
    report = tmp_path / "scan.jsonl"
    good = json.dumps({**GOOD, "path": "b.jpg", "size": 2**63 - 1})
    row = json.dumps({**GOOD, "size": 0}).replace('"size": 0', f'"size": {text}')
    said = _refused_second_line(report, good, row)
    assert str(report) in said and words in said, said
    assert len(said) < 300 + len(str(report)), said  # a long number is not quoted whole


def test_sizes_of_a_refused_row_and_of_the_largest_file_resume(tmp_path: Path) -> None:
    """null (a refused entry whose size is not known), 0 and 2^63-1 bytes (off_t's
    largest) are sizes."""
    rows = [{**GOOD, "path": f"{i}.jpg", "size": s} for i, s in enumerate([None, 0, 2**63 - 1])]
    journal = _resume(tmp_path / "scan.jsonl", [json.dumps(r) for r in rows])
    assert len(journal.done) == 3


def _with(row: dict[str, Any], where: str, text: str) -> str:
    """``row`` as a JSON line whose field ``where`` (dotted, as in the errors:
    ``evidence.claim.log.leaf_index``, ``soft_bindings[0].quality``) holds the JSON text
    ``text``, put in as text (``NaN``, ``1e999``, 4,000 digits)."""
    marker = "@@FIELD@@"
    out = json.loads(json.dumps(row))
    at: Any = out
    *parents, last = where.split(".")
    for name in parents:
        at = at[name[:-3]][0] if name.endswith("[0]") else at[name]
    at[last] = marker
    return json.dumps(out).replace(json.dumps(marker), text)


#: A scored unsigned image as the scan writes it (the fields the reports read).
SCORED = {
    "path": "a.jpg",
    "archive": None,
    "kind": "media",
    "size": 10,
    "media_type": "image/jpeg",
    "sha256": "00" * 32,
    "soft_bindings": [{"algorithm": "pdq", "hash": "11" * 32, "quality": 90}],
    "status": "UNSIGNED",
    "reasons": ["no signed claim in the log matches these bytes or these pixels"],
    "evidence": {
        "pdq_distance": None,
        "pdq_threshold": 31,
        "video_match": None,
        "claim": None,
    },
    "detector": {"score": 0.5, "band": "uncertain"},
    "note": None,
    "error": None,
    "verified_at": "2026-12-05T08:00:00.000000Z",
}
#: A DERIVED video with its claim, as the scan writes it.
DERIVED_VIDEO = {
    **SCORED,
    "path": "clip.mp4",
    "media_type": "video/mp4",
    "status": "DERIVED",
    "detector": None,
    "evidence": {
        "pdq_distance": 12,
        "pdq_threshold": 31,
        "video_match": {"coverage": 0.75, "median_distance": 9.5, "threshold": 31},
        "claim": {
            "device_id": "ab" * 16,
            "captured_at": "2026-12-01T10:00:00.000000Z",
            "log": {"leaf_index": 7},
            "device": {"revoked_at": None, "revocation_reason": None},
        },
    },
}

#: A field of a resumed row that no scan writes -> (the row, the field, its JSON text,
#: words of the error). Before, each was taken: a detector score of NaN, infinity, 7.5,
#: -3 (below the unscored rows' -1), true (1.0) or text ranked the unsigned images
#: wrongly in the HTML page ("nan", "inf", "7.500"), 4,000 digits ended in an
#: OverflowError traceback; a coverage that is text, a revocation time that is a number
#: ended the scan, after all its work, in a ValueError or TypeError traceback drawing the
#: page; the other values went to the CSV and the page as they were, or ended in a
#: Python message ("'str' object has no attribute 'get'").
BAD_FIELDS = {
    "score NaN": (SCORED, "detector.score", "NaN", "detector.score is NaN"),
    "score infinite": (SCORED, "detector.score", "Infinity", "detector.score is infinite"),
    "score 1e999": (SCORED, "detector.score", "1e999", "detector.score is infinite"),
    "score -inf": (SCORED, "detector.score", "-Infinity", "is minus infinity"),
    "score 7.5": (SCORED, "detector.score", "7.5", "detector.score is 7.5"),
    "score -3": (SCORED, "detector.score", "-3", "detector.score is -3"),
    "score 1.0000001": (SCORED, "detector.score", "1.0000001", "is 1.0000001"),
    "score true": (SCORED, "detector.score", "true", "detector.score is true"),
    "score text": (SCORED, "detector.score", '"0.9"', 'detector.score is "0.9"'),
    "score 4,000 digits": (SCORED, "detector.score", "9" * 4000, "4,000 digits"),
    "band a number": (SCORED, "detector.band", "5", "detector.band is 5"),
    "detector a list": (SCORED, "detector", "[0.5]", "detector is a list"),
    "quality 101": (SCORED, "soft_bindings[0].quality", "101", "soft_bindings[0].quality"),
    "quality NaN": (SCORED, "soft_bindings[0].quality", "NaN", "quality is NaN"),
    "hash a number": (SCORED, "soft_bindings[0].hash", "7", "soft_bindings[0].hash is 7"),
    "soft binding text": (SCORED, "soft_bindings", '["x"]', 'soft_bindings[0] is "x"'),
    "pdq distance NaN": (SCORED, "evidence.pdq_distance", "NaN", "pdq_distance is NaN"),
    "pdq distance -1": (SCORED, "evidence.pdq_distance", "-1", "pdq_distance is -1"),
    "pdq distance 257": (SCORED, "evidence.pdq_distance", "257", "pdq_distance is 257"),
    "pdq distance 2.5": (SCORED, "evidence.pdq_distance", "2.5", "pdq_distance is 2.5"),
    "pdq threshold 1e999": (SCORED, "evidence.pdq_threshold", "1e999", "threshold is infinite"),
    "claim text": (SCORED, "evidence.claim", '"x"', 'evidence.claim is "x"'),
    "leaf -1": (DERIVED_VIDEO, "evidence.claim.log.leaf_index", "-1", "leaf_index is -1"),
    "leaf 1.5": (DERIVED_VIDEO, "evidence.claim.log.leaf_index", "1.5", "leaf_index is 1.5"),
    "leaf NaN": (DERIVED_VIDEO, "evidence.claim.log.leaf_index", "NaN", "leaf_index is NaN"),
    "coverage 7.5": (DERIVED_VIDEO, "evidence.video_match.coverage", "7.5", "coverage is 7.5"),
    "coverage NaN": (DERIVED_VIDEO, "evidence.video_match.coverage", "NaN", "coverage is NaN"),
    "coverage text": (DERIVED_VIDEO, "evidence.video_match.coverage", '"x"', 'coverage is "x"'),
    "median NaN": (DERIVED_VIDEO, "evidence.video_match.median_distance", "NaN", "median"),
    "video threshold -3": (DERIVED_VIDEO, "evidence.video_match.threshold", "-3", "is -3"),
    "revoked at 5": (DERIVED_VIDEO, "evidence.claim.device.revoked_at", "5", "revoked_at is 5"),
    "device id 5": (DERIVED_VIDEO, "evidence.claim.device_id", "5", "device_id is 5"),
    "status unknown": (SCORED, "status", '"FINE"', 'status is "FINE"'),
    "status a number": (SCORED, "status", "11", "status is 11"),
    "kind unknown": (SCORED, "kind", '"photo"', 'kind is "photo"'),
    "reasons text": (SCORED, "reasons", '"why"', 'reasons is "why"'),
    "a reason a number": (SCORED, "reasons", "[1]", "reasons[0] is 1"),
    "error a number": (SCORED, "error", "5", "error is 5"),
    "note an object": (SCORED, "note", "{}", "note is an object"),
    "archive a number": (SCORED, "archive", "5", "archive is 5"),
    "media type a list": (SCORED, "media_type", "[]", "media_type is a list"),
    "sha256 a number": (SCORED, "sha256", "5", "sha256 is 5"),
    "verified at a number": (SCORED, "verified_at", "5", "verified_at is 5"),
    "log key a number": (SCORED, "log_key", "5", "log_key is 5"),
}


@pytest.mark.parametrize("bad", BAD_FIELDS)
def test_a_field_no_scan_writes_is_named(tmp_path: Path, bad: str) -> None:
    row, where, text, words = BAD_FIELDS[bad]
    report = tmp_path / "scan.jsonl"
    good = json.dumps({**row, "path": "b.jpg"})
    said = _refused_second_line(report, good, _with(row, where, text))
    assert str(report) in said and words in said, said
    assert len(said) < 300 + len(str(report)), said  # a long number is not quoted whole


def test_fields_as_the_scan_writes_them_resume(tmp_path: Path) -> None:
    """Scores 0 and 1, a score left out (the detector did not load: a note instead), a
    refused entry, a video's claim with a revoked key, and each field null or missing."""
    revoked = {"revoked_at": "2026-12-01T10:00:00.000000Z", "revocation_reason": "lost"}
    rows: list[dict[str, Any]] = [
        SCORED,
        {**SCORED, "detector": {"score": 0, "band": "low"}},
        {**SCORED, "detector": {"score": 1.0, "band": "high"}},
        {**SCORED, "detector": {"available": False, "note": "not scored: too small"}},
        DERIVED_VIDEO,
        _with_device(DERIVED_VIDEO, revoked) | {"status": "REVOKED_KEY"},
        {"path": "x.zip!../e.jpg", "kind": "refused", "size": None, "error": "path traversal"},
        dict.fromkeys(SCORED, None) | {"path": "n.jpg"},
        {"path": "m.jpg"},
    ]
    lines = [json.dumps({**r, "path": f"{i}-{r['path']}"}) for i, r in enumerate(rows)]
    journal = _resume(tmp_path / "scan.jsonl", lines)
    assert len(journal.done) == len(rows)


def _with_device(row: dict[str, Any], device: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(row))
    out["evidence"]["claim"]["device"] = device
    return dict(out)


def test_the_cli_names_a_bad_score_and_exits_1(tmp_path: Path) -> None:
    """``prov scan --resume`` over a report whose row has a NaN detector score: exit 1,
    the report and its line named, no traceback, nothing asked of the server."""
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x")
    report = tmp_path / "scan.jsonl"
    report.write_text(_with(SCORED, "detector.score", "NaN") + "\n")
    run = subprocess.run(
        [sys.executable, "-m", "clients.cli", "scan", str(photo), "--report", str(report)]
        + ["--resume", "--server", closed_port(), "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "400"},
    )
    err = " ".join(run.stderr.split())
    assert run.returncode == 1, (run.returncode, err)
    assert f"{report} line 1 is not a scan report row: its detector.score is NaN" in err, err
    assert "Traceback" not in err and "cannot reach" not in err, err


def test_journal_lines_are_json_dumps_of_each_row() -> None:
    """`encode_lines` (the journal's text for a batch, one C encoder made once) writes each
    row exactly as ``json.dumps`` with compact separators: non-ASCII and control
    characters escaped, floats, nested lists and objects, nulls, key order kept."""
    rows: list[dict[str, Any]] = [
        {
            "path": "d/caf\u00e9 \u202egnp.jpg\n\x00\ud800",
            "size": 2**63 - 1,
            "soft_bindings": [{"hash": "ab", "quality": 100, "timestamp_seconds": 0.5}],
            "evidence": {"pdq_distance": None, "time_flags": [], "claim": {"x": [1, 2.25]}},
            "detector": {"score": 1e-7, "band": "low"},
            "ok": True,
        },
        GOOD,
        {},
    ]
    expected = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
    assert encode_lines(rows) == expected
    assert encode_lines([]) == ""


def test_resume_names_the_paths_of_which_the_report_holds_no_row(tmp_path: Path) -> None:
    """`prov scan many many.zip news --report r.jsonl`, then resumed as `/tmp/x/many
    /tmp/x/many.zip news`: the rows of `news` matched, so no warning came, and the 600
    files of the other two were scanned again and given a second row each. A resume now
    names each PATH of which the report holds no row (new to this scan, or spelled
    otherwise), before any file is scanned."""
    from clients.scan.resume import GivenPaths

    report = tmp_path / "r.jsonl"
    rows = ["many/0.jpg", "many/1.jpg", "many.zip!0.jpg", "news/cat.png", "news/b.jpg"]
    first = GivenPaths(["many", "many.zip", "news"])
    for r in rows:
        first.add(r)
    assert first.mismatch(report) == ""  # every PATH as the first scan spelled it
    moved = GivenPaths(["/x/many", "/x/many.zip", "news"])
    for r in rows:
        moved.add(r)
    said = moved.mismatch(report)
    assert said.startswith("warning: no row in "), said
    assert "/x/many, /x/many.zip (2 of the 3 paths given)" in said, said
    assert "spelled otherwise" in said and "Ctrl-C" in said, said
    # a PATH whose only rows are errors that --retry-errors takes out (`could_match`,
    # never `add`) has rows: no warning for it
    retried = GivenPaths(["many", "news"])
    assert retried.could_match("many/0.jpg")
    retried.add("news/cat.png")
    assert retried.mismatch(report) == ""
    # none matching at all: the warning that says so, as before
    gone = GivenPaths(["/x/many"])
    for r in rows:
        gone.add(r)
    assert gone.mismatch(report).startswith("warning: none of the 5 rows in "), gone.mismatch(
        report
    )
