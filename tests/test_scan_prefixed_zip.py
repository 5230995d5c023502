"""A zip with bytes before it (a self-extracting archive: a program with a zip appended)
named ``.zip`` is opened as the zip it is, as `unzip`, 7-Zip and Python's zipfile open it
(h-files51). Before, `prov scan` took only a file that starts with a zip header for a
zip, so a signed capture inside such an archive was never looked at: the archive was one
row, "not a recognised image or video format: looked up by SHA-256 only". A file named
otherwise (``setup.exe``) is still one file, not opened."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from PIL import Image

from clients.scan.sources import EntryItem, FileItem, ScanLimits, iter_items

#: The start of a Windows program (an MZ header and its DOS stub's words), as a
#: self-extracting archive's stub begins.
STUB = b"MZ" + bytes(62) + b"This program cannot be run in DOS mode.\r\n" + bytes(4000)


def _zip_of_a_photo() -> bytes:
    photo = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(photo, "JPEG")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("day1/photo.jpg", photo.getvalue())
    return archive.getvalue()


def test_a_self_extracting_zip_named_zip_is_opened(tmp_path: Path) -> None:
    path = tmp_path / "photos.zip"
    path.write_bytes(STUB + _zip_of_a_photo())
    whole, item = iter_items([str(path)], ScanLimits())
    assert isinstance(whole, FileItem) and whole.ref == str(path), whole
    assert isinstance(item, EntryItem) and item.ref == f"{path}!day1/photo.jpg", item
    assert item.data.startswith(b"\xff\xd8\xff")


def test_a_self_extracting_zip_inside_a_folder_is_opened_too(tmp_path: Path) -> None:
    (tmp_path / "photos.zip").write_bytes(STUB + _zip_of_a_photo())
    whole, item = iter_items([str(tmp_path)], ScanLimits())
    assert isinstance(whole, FileItem) and whole.ref.endswith("photos.zip"), whole
    assert isinstance(item, EntryItem) and item.ref.endswith("photos.zip!day1/photo.jpg"), item


def test_a_photo_with_a_zip_appended_named_zip_is_still_scanned_whole(tmp_path: Path) -> None:
    """revfiles51: a photo (say one the log knows, by its pixels) with an empty zip
    appended and renamed ``.zip`` was only opened as that zip: no row for the photo, so
    its pixels were never hashed nor the file looked up. The file itself is still one
    row (looked up by SHA-256, a photo's pixels hashed), its entries rows after it."""
    photo = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 30)).save(photo, "JPEG")
    empty = io.BytesIO()
    zipfile.ZipFile(empty, "w").close()
    path = tmp_path / "holiday.zip"
    path.write_bytes(photo.getvalue() + empty.getvalue())
    items = list(iter_items([str(path)], ScanLimits()))
    assert [type(i) for i in items] == [FileItem] and items[0].ref == str(path), items


def test_a_program_named_as_one_is_one_file(tmp_path: Path) -> None:
    path = tmp_path / "setup.exe"
    path.write_bytes(STUB + _zip_of_a_photo())
    (item,) = iter_items([str(tmp_path)], ScanLimits())
    assert isinstance(item, FileItem) and item.ref == str(path), item
