"""`clients.scan.hashing.read_ahead`: a batch's small folder files read before decoding give
the rows that reading each file in `measure` gives; `decode_ahead`: a batch's photos decoded
one after another, before any is SHA-256 hashed, give what decoding each in `measure` gives,
its refusals and failures included."""

from __future__ import annotations

import hashlib
import os
import shutil
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from clients.scan import worker
from clients.scan.hashing import decode_ahead, measure, read_ahead
from clients.scan.sources import FileItem, RefusedItem, ScanLimits
from clients.scan.worker import MEASURE_FAILED, ScanConfig, process_batch
from provenance.media.assets import AssetLimits, image_pdq
from tests.conftest import SAMPLES, closed_port


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


def _odd_folder(tmp_path: Path) -> AssetLimits:
    """Photos, a truncated one, text, a sidecar-named photo, a video and an image over the
    limit in ``tmp_path``; the limits that make the last one too large."""
    for name in ("grace_hopper.jpg", "chelsea.png", "rocket.jpg"):
        shutil.copy(SAMPLES / name, tmp_path / name)
    jpeg = (SAMPLES / "grace_hopper.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # truncated: SHA-256 only
    (tmp_path / "notes.txt").write_bytes(b"not media")
    (tmp_path / "x.jpg.prov").write_bytes(jpeg)  # named as a sidecar: measure decodes it
    (tmp_path / "clip.mp4").write_bytes(b"\0\0\0\x18ftypisom" + bytes(64))
    (tmp_path / "empty.jpg").write_bytes(b"")
    return AssetLimits(max_pixels=300_000)  # grace_hopper.jpg (512x600) over it


def test_decode_ahead_measures_as_decoding_each_file(tmp_path: Path) -> None:
    limits = _odd_folder(tmp_path)
    items = [_item(p) for p in sorted(tmp_path.iterdir())]
    read = read_ahead(items, limits)
    decoded = decode_ahead(read, limits)
    assert {Path(r).name for r in decoded} == {
        "grace_hopper.jpg",
        "chelsea.png",
        "rocket.jpg",
        "cut.jpg",
    }
    for item in items:
        got = measure(item, limits, read.get(item.ref), decoded.get(item.ref))
        assert got == measure(item, limits), item.ref
    assert measure(_item(tmp_path / "cut.jpg"), limits).kind == "file"


def test_a_batch_decodes_its_photos_before_hashing_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The photos of a batch are decoded one after another, before any SHA-256: decoding
    between the other steps cost 10-20 us a file more (caches and branch predictors cold)."""
    limits = _odd_folder(tmp_path)
    done: list[str] = []

    def decoding(data: bytes, lim: AssetLimits) -> Any:
        done.append("decode")
        return image_pdq(data, lim)

    def hashing_sha(data: bytes) -> Any:
        done.append("sha")
        return hashlib.sha256(data)

    monkeypatch.setattr("clients.scan.hashing.image_pdq", decoding)
    monkeypatch.setattr("clients.scan.hashing.hashlib", SimpleNamespace(sha256=hashing_sha))
    monkeypatch.setattr(worker, "_lookup", lambda client, measured: {})  # no server here
    items = [_item(p) for p in sorted(tmp_path.iterdir())]
    rows = process_batch(items, ScanConfig(closed_port(), ScanLimits(assets=limits)))
    assert [r["path"] for r in rows] == [i.ref for i in items]
    first_sha = done.index("sha")
    assert done[:first_sha] == ["decode"] * 4, done  # the 4 photos sniffed as images
    assert "decode" in done[first_sha:], done  # x.jpg.prov: measure decodes it itself


def test_a_decoder_failure_ahead_is_the_file_own_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decoder failing unforeseen on one photo of the batch (`decode_ahead` keeps the
    exception) gives that file the measure-failed row; the other photos are measured."""
    limits = _odd_folder(tmp_path)

    def failing(data: bytes, lim: AssetLimits) -> Any:
        if data == (tmp_path / "rocket.jpg").read_bytes():
            raise RecursionError("maximum recursion depth exceeded")
        return image_pdq(data, lim)

    monkeypatch.setattr("clients.scan.hashing.image_pdq", failing)
    monkeypatch.setattr(worker, "_lookup", lambda client, measured: {})  # no server here
    items = [_item(p) for p in sorted(tmp_path.iterdir())]
    rows = {
        r["path"]: r
        for r in process_batch(items, ScanConfig(closed_port(), ScanLimits(assets=limits)))
    }
    assert rows[str(tmp_path / "rocket.jpg")]["error"] == MEASURE_FAILED
    assert rows[str(tmp_path / "chelsea.png")]["kind"] == "media"
    assert rows[str(tmp_path / "grace_hopper.jpg")]["kind"] == "file"  # over max_pixels
    # measured, then left unanswered by the stand-in lookup: the "no result" row
    assert "answered no result" in rows[str(tmp_path / "chelsea.png")]["error"]


def test_a_failure_kept_ahead_holds_no_decoder_locals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the decoder held when it failed (its image) is let go at once, not kept with the
    exception until the batch's measure reaches the file; its traceback keeps its lines."""

    def failing(data: bytes, lim: AssetLimits) -> Any:
        held = bytearray(data)  # as a decoder holds its image
        try:
            raise ValueError("inner")
        except ValueError as e:
            raise RecursionError(f"failed over {len(held)} bytes") from e

    monkeypatch.setattr("clients.scan.hashing.image_pdq", failing)
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg")
    item = _item(tmp_path / "rocket.jpg")
    (kept,) = decode_ahead(read_ahead([item], AssetLimits()), AssetLimits()).values()
    assert isinstance(kept, RecursionError)
    for e in (kept, kept.__cause__):
        assert e is not None and e.__traceback__ is not None
        tb: Any = e.__traceback__
        while tb is not None:  # the decoder's frames (here `failing`) hold nothing now
            if tb.tb_frame.f_code.co_name == "failing":
                assert "held" not in tb.tb_frame.f_locals, (e, sorted(tb.tb_frame.f_locals))
            tb = tb.tb_next
    assert "failing" in "".join(traceback.format_exception(kept))
