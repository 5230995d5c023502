"""`clients.scan.hashing.read_ahead`: a batch's small folder files read before decoding give
the rows that reading each file in `measure` gives."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from clients.scan.hashing import measure, read_ahead
from clients.scan.sources import FileItem, RefusedItem
from provenance.media.assets import AssetLimits
from tests.conftest import SAMPLES


def _item(path: Path) -> FileItem:
    return FileItem(str(path), str(path), path.stat().st_size)


def test_read_ahead_measures_as_reading_each_file(tmp_path: Path) -> None:
    for name in ("grace_hopper.jpg", "chelsea.png"):
        shutil.copy(SAMPLES / name, tmp_path / name)
    jpeg = (SAMPLES / "grace_hopper.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # truncated: SHA-256 only
    (tmp_path / "notes.txt").write_bytes(b"not media")
    (tmp_path / "x.jpg.prov").write_bytes(b"not a sidecar")
    (tmp_path / "clip.mp4").write_bytes(b"\0\0\0\x18ftypisom" + bytes(64))  # not decodable
    png = (SAMPLES / "chelsea.png").read_bytes()
    (tmp_path / "big.png").write_bytes(png + bytes(16))
    limits = AssetLimits(max_image_bytes=len(png))
    items = [_item(p) for p in sorted(tmp_path.iterdir())]
    read = read_ahead([RefusedItem("gone", "no"), *items], limits)
    assert "big.png" not in {Path(r).name for r in read}  # over the image limit: not read
    assert {Path(r).name for r in read} == {p.name for p in tmp_path.iterdir()} - {"big.png"}
    for item in items:
        assert measure(item, limits, read.get(item.ref)) == measure(item, limits), item.ref


def test_read_ahead_leaves_out_what_it_cannot_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    gone = FileItem(str(tmp_path / "gone.jpg"), str(tmp_path / "gone.jpg"), 10)
    shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "a.jpg")
    lied = FileItem(str(tmp_path / "a.jpg"), str(tmp_path / "a.jpg"), 1)  # grew since the walk
    read = read_ahead([FileItem(str(fifo), str(fifo), 1), gone, lied], AssetLimits())
    assert read == {lied.ref: (tmp_path / "a.jpg").read_bytes()}
