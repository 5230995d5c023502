"""The HTML summary's thumbnails hold the bytes of one image at a time.

Before: `clients.scan.report.ReportWriter.finish` had `clients.scan.pipeline.fetch_bytes`
read the bytes of all the top unsigned images (up to 100, each up to 256 MiB as archive
entries) into one dict before drawing any thumbnail: tens of GB at worst. Measured here
with tracemalloc over real files and a real zip: the peak of Python allocations while
the page is written stays under a few images' size, whatever their count.
"""

from __future__ import annotations

import io
import os
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

from PIL import Image

from clients.scan.pipeline import fetch_bytes
from clients.scan.report import ReportWriter, html_path
from clients.scan.sources import EntryItem, FileItem, ScanLimits, iter_items

SIZE = 2 << 20  # bytes of each image (a small JPEG padded with random bytes)
COUNT = 8  # in the zip, and as many again in the folder


def _image(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (i * 20 % 256, 80, 160)).save(buf, "JPEG")
    return buf.getvalue() + os.urandom(SIZE - buf.tell())


def _row(ref: str, archive: str | None) -> dict[str, Any]:
    return {
        "path": ref,
        "archive": archive,
        "kind": "media",
        "size": SIZE,
        "media_type": "image/jpeg",
        "status": "UNSIGNED",
        "detector": {"score": 0.5, "band": "low"},
    }


def test_thumbnails_hold_one_image_at_a_time(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    with zipfile.ZipFile(folder / "a.zip", "w", zipfile.ZIP_STORED) as z:
        for i in range(COUNT):
            z.writestr(f"z{i}.jpg", _image(i))
    for i in range(COUNT):
        (folder / f"f{i}.jpg").write_bytes(_image(i))
    limits = ScanLimits()
    rows = []
    for item in iter_items([str(folder)], limits):
        if isinstance(item, EntryItem):
            rows.append(_row(item.ref, item.archive))
        elif isinstance(item, FileItem):
            rows.append(_row(item.ref, None))
    del item
    assert len(rows) == 2 * COUNT
    writer = ReportWriter(tmp_path / "out.jsonl", detect=True)
    writer.add_rows(rows)

    tracemalloc.start()
    try:
        summary = writer.finish(lambda r: fetch_bytes(r, limits), limits.assets.max_pixels)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    page = html_path(tmp_path / "out.jsonl").read_text()
    assert len(summary.unsigned) == 2 * COUNT
    assert page.count("data:image/jpeg;base64,") == 2 * COUNT  # every thumbnail drawn
    # one image read, plus its copies while read and decoded: not all 16 (32 MiB)
    assert peak < 4 * SIZE, f"peak {peak / 2**20:.1f} MiB while writing the page"
