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


@pytest.mark.parametrize("damage", DAMAGED)
def test_a_damaged_row_is_named_not_a_traceback(tmp_path: Path, damage: str) -> None:
    line, words = DAMAGED[damage]
    report = tmp_path / "scan.jsonl"
    report.write_text(json.dumps(GOOD) + "\n" + line + "\n")
    writer = ReportWriter(report)
    try:
        with pytest.raises(ConfigError, match="line 2 is not a scan report row") as info:
            Journal(report, resume=True, on_row=writer.add)
    finally:
        writer.discard()
    assert words in str(info.value), info.value


def test_rows_as_the_scan_writes_them_still_resume(tmp_path: Path) -> None:
    report = tmp_path / "scan.jsonl"
    row = {**GOOD, "soft_bindings": [{"hash": "ab", "quality": 90}], "evidence": {}}
    report.write_text(json.dumps(GOOD) + "\n" + json.dumps({**row, "path": "b.jpg"}) + "\n")
    writer = ReportWriter(report)
    try:
        journal = Journal(report, resume=True, on_row=writer.add)
        journal.close()
    finally:
        writer.discard()
    assert "a.jpg" in journal.done and "b.jpg" in journal.done
