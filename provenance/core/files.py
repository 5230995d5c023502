"""What kind of file a path is, in words, for a message refusing one that is not a
regular file (a FIFO, a device, a folder): pure, on an ``os.stat`` mode; and whether a
file is still the one read before (`file_identity`, `holds_sha256`). Opening files is
the edge's job (`provenance.cli.files`, `clients.files`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

#: Bytes `holds_sha256` reads at a time.
HASH_PIECE = 1 << 20


def file_kind(mode: int) -> str:
    """What a path of ``os.stat`` mode ``mode`` is, for a message saying it is not a
    regular file: "a FIFO (named pipe)", "a device", "a socket", "a folder"."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def file_identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What changes when a file is replaced or written to: device, inode, size (bytes)
    and modification time (ns). Equal identities of one path at two times say it was
    most likely left alone; a write within one tick of the timestamps (a clock tick on
    kernels before 6.13, two seconds on FAT) that keeps the size, or one whose
    modification time was set back, does not show, which is why `holds_sha256` re-reads
    the bytes too. The change time is left out: a mode change, a new hard link (a
    backup tool's) or an extended attribute moves it without touching a byte."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def holds_sha256(f: BinaryIO, sha256: bytes) -> bool:
    """Whether the open file ``f`` holds, from its start to its end, bytes of SHA-256
    ``sha256`` (32 bytes; FIPS 180-4). Reads ``f`` from offset 0 in `HASH_PIECE` pieces
    and leaves it at its end. Raises OSError as reading raises it."""
    f.seek(0)
    again = hashlib.sha256()
    while piece := f.read(HASH_PIECE):
        again.update(piece)
    return again.digest() == sha256


#: What to do about a failed write, by its errno (`os_failure`).
_WHAT_TO_DO = {
    errno.ENOSPC: "free space on its disk, or write it elsewhere",
    errno.EDQUOT: "free space under your disk quota, or write it elsewhere",
    errno.EFBIG: "it is over the file size limit here; free space or raise the limit",
    errno.EACCES: "check the permissions of the file and its folder",
    errno.EPERM: "check the permissions of the file and its folder",
    errno.EROFS: "its file system is read-only; write it elsewhere",
}


@contextmanager
def naming(path: str | os.PathLike[str]) -> Iterator[None]:
    """Inside the block, an OSError raised while writing ``path`` carries ``path`` as its
    file name (a write() on a full disk names no file; an open() of a temporary file
    names that, not the file meant), so `os_failure` can say which file it was."""
    try:
        yield
    except OSError as e:
        e.filename = os.fspath(path)
        raise


def os_failure(e: OSError) -> str:
    """An OSError in words: what happened, the file it names, what to do (for a full
    disk, a size limit, a permission), e.g. "No space left on device: out.csv; free
    space on its disk, or write it elsewhere"."""
    said = e.strerror or str(e)
    if e.filename is not None:
        said += f": {os.fsdecode(e.filename)}"
    todo = _WHAT_TO_DO.get(e.errno or 0)
    return f"{said}; {todo}" if todo else said
