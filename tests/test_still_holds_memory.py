"""`clients.files.still_holds`, the second read that tells whether an image file changed
while it was read whole (`prov sign`, `prov scan`): it compares the file with the bytes
already read piece by piece. Before, it read the whole file again in one piece, holding a
second copy of the image (up to the 256 MiB image limit) beside the one being checked:
twice the image in memory at once, for every image signed or scanned. Measured in a
child process (`tests.memory`: tracemalloc counts every thread)."""

from __future__ import annotations

import os
from pathlib import Path

from clients.files import still_holds
from provenance.core.files import HASH_PIECE
from tests.memory import traced_in_child

SIZE = 16 << 20


def _holds(path: Path, data: bytes) -> bool:
    """`still_holds` of ``path`` (opened, its `os.fstat` taken) and ``data``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return still_holds(fd, os.fstat(fd), data)
    finally:
        os.close(fd)


#: `_holds` of the file argv[1] and the bytes of the file argv[2], traced: tells its
#: answer and the peak of bytes traced.
_CHECK = """
from pathlib import Path
from tests.test_still_holds_memory import _holds
data = Path(sys.argv[2]).read_bytes()
same, _, peak = traced(lambda: _holds(Path(sys.argv[1]), data))
tell(same, peak)
"""


def test_the_second_read_holds_no_copy_of_the_file(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    (tmp_path / "read.png").write_bytes(data)
    (same, peak), _ = traced_in_child(_CHECK, ["big.png", "read.png"], tmp_path)
    assert same is True
    assert peak < 3 * HASH_PIECE < SIZE // 4, f"peak {peak:,} bytes for an {SIZE:,}-byte file"


def test_a_changed_byte_or_length_is_still_found(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    changed = bytearray(data)
    changed[SIZE - 1] ^= 1
    assert not _holds(path, bytes(changed))
    assert not _holds(path, data[:-1])  # the file holds one byte more
    path.write_bytes(data[:-1])
    assert not _holds(path, data)  # the file holds one byte less
    path.write_bytes(b"")
    assert _holds(path, b"")
