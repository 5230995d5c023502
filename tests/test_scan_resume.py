"""Resuming a scan from a report whose rows were damaged or edited: the line is named and
the scan stops with a ConfigError (exit 1, "error: ..."), never a traceback. The real
journal and report writer, as `clients.scan.pipeline.run_scan` joins them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clients.scan.report import ReportWriter
from clients.scan.resume import Journal
from provenance.core.errors import ConfigError

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
