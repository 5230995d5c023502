"""A file whose measure fails in a way the scanner does not foresee (a parser bug that
hostile bytes reach: before MAX_BMFF_DEPTH, deeply nested MP4 boxes raised RecursionError
there) gets a row that says so in words: what failed, why it may have, what to do, and
not the exception's class name (before: "cannot measure: RecursionError"). The other
files of the batch get their rows.

`clients.scan.worker.measure` is made to raise as that parser did: no file known today
reaches this path, which is the last guard of the worker."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from clients.scan import worker
from clients.scan.sources import FileItem
from clients.scan.worker import ScanConfig, process_batch
from tests.conftest import SAMPLES, closed_port


def test_an_unforeseen_measure_failure_is_said_in_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "deep.mp4"))

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded while calling a Python object")

    monkeypatch.setattr(worker, "measure", failing)
    item = FileItem(str(photo), str(photo), photo.stat().st_size)
    (row,) = process_batch([item], ScanConfig(closed_port()))
    error = row["error"]
    assert row["status"] is None, row
    assert error.startswith("cannot measure: hashing or decoding its bytes failed"), error
    assert "not looked up" in error and "report it" in error, error
    assert not re.search(r"[A-Z][a-z]+[A-Z]\w*Error", error), error
