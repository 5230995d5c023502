"""`clients.files.still_holds`, the second read that tells whether an image file changed
while it was read whole (`prov sign`, `prov scan`): it compares the file with the bytes
already read piece by piece. Before, it read the whole file again in one piece, holding a
second copy of the image (up to the 256 MiB image limit) beside the one being checked:
twice the image in memory at once, for every image signed or scanned."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

from clients.files import still_holds
from provenance.core.files import HASH_PIECE

SIZE = 16 << 20


def _peak_of_check(path: Path, data: bytes) -> tuple[bool, int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        before = os.fstat(fd)
        tracemalloc.start()
        try:
            same = still_holds(fd, before, data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        os.close(fd)
    return same, peak


def test_the_second_read_holds_no_copy_of_the_file(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    same, peak = _peak_of_check(path, data)
    assert same
    assert peak < 3 * HASH_PIECE < SIZE // 4, f"peak {peak:,} bytes for an {SIZE:,}-byte file"


def test_a_changed_byte_or_length_is_still_found(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    changed = bytearray(data)
    changed[SIZE - 1] ^= 1
    assert not _peak_of_check(path, bytes(changed))[0]
    assert not _peak_of_check(path, data[:-1])[0]  # the file holds one byte more
    path.write_bytes(data[:-1])
    assert not _peak_of_check(path, data)[0]  # the file holds one byte less
    path.write_bytes(b"")
    assert _peak_of_check(path, b"")[0]
