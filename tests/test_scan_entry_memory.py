"""Reading an archive entry into memory holds it about once, not two or three times.

Before: `clients.scan.sources._read_all` gathered the entry in a bytearray, copied it to
bytes, and the caller put the head in front (one more copy): a 200 MiB image in a zip or
tar took the driver's peak RSS from 72 to 473 MiB while it was read. Now the entry is
written into one buffer that becomes the bytes without a copy.

Measured with tracemalloc (every bytes and bytearray buffer the read allocates), relative
to the entry's size, on real zip and tar files, in a child process (`tests.memory`:
tracemalloc counts every thread); no timing.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.memory import traced_in_child

#: An entry well over the 1 MiB read block, so that the copies, not the block, set the peak.
SIZE = 24 << 20


def _png_like(size: int) -> bytes:
    """A PNG signature and random bytes: sniffed as an image (kept in memory whole, up to
    max_image_bytes), incompressible (the zip's ratio check never trips)."""
    return b"\x89PNG\r\n\x1a\n" + os.urandom(size - 8)


def _zip(path: Path, data: bytes, method: int) -> Path:
    with zipfile.ZipFile(path, "w", method, compresslevel=1 if method else None) as z:
        z.writestr("big.png", data)
    return path


def _tar(path: Path, data: bytes, mode: str) -> Path:
    with tarfile.open(path, mode) as t:  # type: ignore[call-overload]  # mode: "w" or "w:gz"
        info = tarfile.TarInfo("big.png")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return path


def _nested(path: Path, data: bytes) -> Path:
    """A stored zip holding a tar (a nested archive, read whole into memory) holding it."""
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as t:
        info = tarfile.TarInfo("big.png")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("inner.tar", inner.getvalue())
    return path


ARCHIVES: dict[str, Callable[[Path, bytes], Path]] = {
    "zip-stored": lambda p, d: _zip(p / "a.zip", d, zipfile.ZIP_STORED),
    "zip-deflated": lambda p, d: _zip(p / "a.zip", d, zipfile.ZIP_DEFLATED),
    "tar": lambda p, d: _tar(p / "a.tar", d, "w"),
    "tar.gz": lambda p, d: _tar(p / "a.tar.gz", d, "w:gz"),
}


#: Reads the items of the archive argv[1] traced, each kept; tells the type name and
#: SHA-256 (hex) of each one's data, and the peak of bytes traced.
_READ = """
import hashlib
from clients.scan.sources import EntryItem, ScanLimits, iter_items
items, _, peak = traced(lambda: list(iter_items([sys.argv[1]], ScanLimits())))
if isinstance(items, Exception):
    raise items
assert all(isinstance(i, EntryItem) for i in items), items
tell([(type(i.data).__name__, hashlib.sha256(i.data).hexdigest()) for i in items], peak)
"""


def _peak_while_reading(archive: Path) -> tuple[int, list[tuple[str, str]]]:
    """Peak bytes traced while the archive's items are read, each item kept; and the
    type name and SHA-256 (hex) of each entry's data."""
    (entries, peak), _ = traced_in_child(_READ, [archive.name], archive.parent)
    return peak, [(kind, digest) for kind, digest in entries]


@pytest.mark.parametrize("kind", sorted(ARCHIVES))
def test_an_entry_read_into_memory_is_held_about_once(tmp_path: Path, kind: str) -> None:
    data = _png_like(SIZE)
    archive = ARCHIVES[kind](tmp_path, data)
    peak, entries = _peak_while_reading(archive)
    assert entries == [("bytes", hashlib.sha256(data).hexdigest())]
    # the entry itself, the buffer's growth margin (at most an eighth) and a read block or
    # two; before: 2 x SIZE and more (a bytearray, its bytes copy, then head + those bytes)
    assert peak < 1.4 * SIZE, f"{peak / SIZE:.2f} x the entry's size"


def test_a_nested_archive_is_held_about_once_while_read(tmp_path: Path) -> None:
    """A tar inside a zip is read into memory whole to be opened (max_nested_bytes):
    that read too holds the nested archive once, beside the entry read out of it."""
    data = _png_like(SIZE)
    peak, entries = _peak_while_reading(_nested(tmp_path / "a.zip", data))
    assert [digest for _, digest in entries] == [hashlib.sha256(data).hexdigest()]
    # the nested tar (SIZE and its headers) and the entry read out of it (SIZE)
    assert peak < 2.5 * SIZE, f"{peak / SIZE:.2f} x the entry's size"
