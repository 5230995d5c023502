"""The HTML summary's thumbnails hold the bytes of one image at a time.

Before: `clients.scan.report.ReportWriter.finish` had `clients.scan.pipeline.fetch_bytes`
read the bytes of all the top unsigned images (up to 100, each up to 256 MiB as archive
entries) into one dict before drawing any thumbnail: tens of GB at worst. Measured here
with tracemalloc over real files and a real zip: the peak of Python allocations while
the page is written stays under a few images' size, whatever their count; in a child
process (`tests.memory`: tracemalloc counts every thread).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

from PIL import Image

from clients.scan.report import ReportWriter, html_path
from clients.scan.sources import EntryItem, FileItem, ScanLimits, iter_items
from tests.memory import traced_in_child

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


def _writer(folder: Path, out: Path) -> tuple[ReportWriter, ScanLimits]:
    """A report at ``out`` (detect on) of a row for each item of ``folder``, each
    unsigned, the page not yet written; and the limits its items were read with."""
    limits = ScanLimits()
    rows = []
    for item in iter_items([str(folder)], limits):
        if isinstance(item, EntryItem):
            rows.append(_row(item.ref, item.archive))
        elif isinstance(item, FileItem):
            rows.append(_row(item.ref, None))
    del item
    writer = ReportWriter(out, detect=True)
    writer.add_rows(rows)
    return writer, limits


#: Writes the page of `_writer`'s report of the folder argv[1] at argv[2], traced;
#: tells how many unsigned rows the summary has and the peak of bytes traced.
_FINISH = """
from pathlib import Path
from clients.scan.pipeline import fetch_bytes
from tests.test_scan_thumb_memory import _writer
writer, limits = _writer(Path(sys.argv[1]), Path(sys.argv[2]))
fetch = lambda r: fetch_bytes(r, limits)
summary, _, peak = traced(lambda: writer.finish(fetch, limits.assets.max_pixels))
tell(len(summary.unsigned), peak)
"""


def test_thumbnails_hold_one_image_at_a_time(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    with zipfile.ZipFile(folder / "a.zip", "w", zipfile.ZIP_STORED) as z:
        for i in range(COUNT):
            z.writestr(f"z{i}.jpg", _image(i))
    for i in range(COUNT):
        (folder / f"f{i}.jpg").write_bytes(_image(i))
    (unsigned, peak), _ = traced_in_child(_FINISH, [str(folder), "out.jsonl"], tmp_path)

    page = html_path(tmp_path / "out.jsonl").read_text()
    assert unsigned == 2 * COUNT
    assert page.count("data:image/jpeg;base64,") == 2 * COUNT  # every thumbnail drawn
    # one image read, plus its copies while read and decoded: not all 16 (32 MiB)
    assert peak < 4 * SIZE, f"peak {peak / 2**20:.1f} MiB while writing the page"
