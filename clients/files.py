"""Reading untrusted paths on the client: never blocking on special files, never
reading without end.

A path given to ``prov sign``, ``prov verify`` or found by ``prov scan`` may be a FIFO
(an ``open`` for reading blocks until a writer comes), a device or a symbolic link to
one (``/dev/zero`` reads forever), or a file far larger than what the caller means to
hold in memory. `open_regular` opens only a regular file, judged before it is opened
for reading and never swapped meanwhile (`provenance.cli.files.open_regular_fd`), and
`read_bounded` reads at most a stated number of bytes.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from provenance.cli.files import open_regular as open_regular_as
from provenance.core.errors import MediaError, MediaTooLargeError
from provenance.core.files import HASH_PIECE, file_identity, holds_sha256


class NotRegularFileError(MediaError):
    """The path is a FIFO, socket, device or folder, not a regular file."""


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file (symbolic links are
    followed, then judged by what they point to).

    Anything else is never opened for reading, and the open never blocks
    (`provenance.cli.files.open_regular_fd`); reads block as a regular file's do. Raises NotRegularFileError for FIFOs, sockets, devices and folders, and OSError
    when the path cannot be opened.
    """
    return open_regular_as(path, NotRegularFileError)


def read_bounded(path: str | os.PathLike[str], limit: int, what: str = "file") -> bytes:
    """All bytes of the regular file ``path`` if there are at most ``limit`` of them.

    Reads at most ``limit + 1`` bytes whatever the file claims its size is. Raises
    NotRegularFileError (see `open_regular`), MediaTooLargeError beyond ``limit`` (the
    message names ``what``), OSError when the file cannot be read.
    """
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise MediaTooLargeError(
            f"{what} {os.fspath(path)} is over the {limit}-byte limit: not read"
        )
    return data


def still_the_file(
    path: str | os.PathLike[str], f: BinaryIO, before: os.stat_result, sha256: bytes
) -> bool:
    """Whether ``path`` still names the file ``f`` opened, as it was when ``before``
    (``fstat`` of ``f`` before its bytes were read) was taken, and ``f`` still holds
    bytes of SHA-256 ``sha256`` (32 bytes): for a file read twice, through ``f`` and
    then by name (a video's frames, decoded by a child that opens the path), whether
    both reads saw the same bytes. The identity (`provenance.core.files.file_identity`)
    shows a file renamed over ``path``, appended to or truncated; the second hash
    (`provenance.core.files.holds_sha256`, which leaves ``f`` at its end) a same-size
    write within one tick of the timestamps. Raises OSError as reading ``f`` raises it."""
    try:
        named: tuple[int, ...] = file_identity(os.stat(path))
    except OSError:
        named = ()
    same = file_identity(before) == file_identity(os.fstat(f.fileno())) == named
    return same and holds_sha256(f, sha256)


def still_holds(fd: int, before: os.stat_result, data: bytes) -> bool:
    """Whether the open file ``fd`` is as ``before`` (its ``fstat`` before ``data`` was
    read from it) found it and still holds exactly ``data`` from its start to its end:
    for bytes read once and then hashed and decoded (an image), whether a writer changed
    the file while they were read, so that they may be a mix of its old and new bytes
    that the file never held. The identity (`provenance.core.files.file_identity`) shows
    a write that moved the size or the modification time; the second read (``pread``,
    the file offset left alone) a same-size write within one tick of the timestamps.
    Raises OSError as reading raises it.

    Each piece is compared with a slice of ``data`` as bytes (a copy of at most
    HASH_PIECE, none when one piece is the whole file): a memoryview compared with bytes
    goes byte by byte, about 9 us of a 5 kB photo's 22 us of reading (6 December)."""
    if file_identity(os.fstat(fd)) != file_identity(before):
        return False
    at = 0
    while block := os.pread(fd, asked := min(HASH_PIECE, len(data) + 1 - at), at):
        if block != data[at : at + len(block)]:  # also a file longer than ``data``
            return False
        at += len(block)
        if at == len(data) and len(block) < asked:  # all of it, and then its end: the
            break  # read at the end (b"") would tell no more (one system call less a file)
    return at == len(data)
