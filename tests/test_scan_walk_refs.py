"""Two per-file steps of a scan's driver, made cheaper without a change of output
(h-scan57): the walk names each file by its listing's ``DirEntry.path`` (made in C)
instead of ``os.path.join(folder, name)``, and the CSV passes over an empty cell before
its checks. These tests pin what they must still give: each ref as ``os.path.join`` of
the folder as given (a trailing slash, ``.``, nested folders, an undecodable byte), and
each CSV cell as `csv_cell` makes it. They passed before the change too: it changes no
output (speed only, which bench/bench_scan.py measures)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from clients.scan.report import _csv_values, csv_cell, csv_row
from clients.scan.sources import FileItem, ScanLimits, escape_name, iter_items


def _tree(root: Path) -> list[str]:
    """Files under ``root`` made here, by their path relative to it."""
    names = ["a.jpg", "b c.txt", "sub/d.png", "sub/deeper/e.jpg", "=f.jpg"]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    if os.name == "posix":
        raw = os.fsencode(root) + b"/bad\xffname.jpg"
        with open(raw, "wb") as f:
            f.write(b"x")
        names.append(os.fsdecode(b"bad\xffname.jpg"))
    return names


@pytest.mark.parametrize("spelling", ["plain", "trailing slash", "relative dot"])
def test_each_ref_is_the_folder_joined_with_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    names = _tree(tmp_path)
    folder = {"plain": str(tmp_path), "trailing slash": f"{tmp_path}/", "relative dot": "."}[
        spelling
    ]
    if spelling == "relative dot":
        monkeypatch.chdir(tmp_path)
    items = list(iter_items([folder], ScanLimits()))
    assert all(isinstance(i, FileItem) for i in items)
    got = sorted((i.ref, i.path) for i in items if isinstance(i, FileItem))
    want = sorted((escape_name(os.path.join(folder, n)), os.path.join(folder, n)) for n in names)
    assert got == want


def test_each_csv_cell_is_as_csv_cell_makes_it() -> None:
    row: dict[str, Any] = {
        "path": "=HYPERLINK(x).jpg",
        "archive": "",
        "kind": "media",
        "size": 5,
        "media_type": "",
        "sha256": "ab",
        "soft_bindings": [{"hash": "", "quality": 0}],
        "status": "UNSIGNED",
        "evidence": {"pdq_distance": None, "claim": {"device_id": "-d", "captured_at": ""}},
        "detector": {},
        "note": "line\nbreak",
        "error": "",
        "reasons": ["\u202eabc"],
    }
    cells = csv_row(row)
    assert cells == [csv_cell(c) for c in _csv_values(row)]
    assert cells[0] == "'=HYPERLINK(x).jpg" and "\n" not in cells[15] and cells[1] == ""
