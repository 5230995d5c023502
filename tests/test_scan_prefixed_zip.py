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

from clients.scan.sources import EntryItem, FileItem, RefusedItem, ScanLimits, iter_items

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


def test_a_self_extracting_zip_refused_whole_is_a_row_of_its_own(tmp_path: Path) -> None:
    """The zip of a prefixed file refused as a whole (here over max_entries) is the row
    ``FILE!``, apart from the file's own row ``FILE``: before 10c77dd both were ``FILE``,
    one hidden behind the other in the report (the archive fuzz target's crash)."""
    path = tmp_path / "photos.zip"
    path.write_bytes(STUB + _zip_of_a_photo())
    whole, refused = iter_items([str(path)], ScanLimits(max_entries=0))
    assert isinstance(whole, FileItem) and whole.ref == str(path), whole
    assert isinstance(refused, RefusedItem) and refused.ref == f"{path}!", refused
    assert "more than 0 entries" in refused.error, refused


def test_a_refused_zip_is_named_past_an_entry_of_an_empty_name(tmp_path: Path) -> None:
    """An entry with an empty name is ``FILE!`` (refused: no name); the zip refused as a
    whole after it (its entries declare more bytes than max_total_bytes) is then
    ``FILE! #2``, each row its own ref."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(zipfile.ZipInfo(""), b"x")
        z.writestr("big.bin", bytes(100))
    path = tmp_path / "photos.zip"
    path.write_bytes(STUB + archive.getvalue())
    items = list(iter_items([str(path)], ScanLimits(max_total_bytes=50)))
    assert [i.ref for i in items] == [str(path), f"{path}!", f"{path}! #2"], items
    assert isinstance(items[1], RefusedItem) and isinstance(items[2], RefusedItem), items
    assert items[1].error == "empty entry name", items[1]
    assert "declare more than 50 bytes" in items[2].error, items[2]
