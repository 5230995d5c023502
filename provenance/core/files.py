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
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, overload

from provenance.core.errors import FileChangedError

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


#: Bytes `FileView` keeps of the last place it read, for the small reads of a walk.
VIEW_BLOCK = 64 * 1024


class FileView:
    """The first ``size`` bytes of the open file ``fd``, read by position (``os.pread``)
    as they are asked for, for a walk over a file too large to hold (`provenance.c2pa.
    container.stripped_sha256`, and `reader_walk_problem` for `provenance.c2pa.reader.
    read_c2pa`): indexing, slicing, ``len``, ``find`` as on bytes and `unpack_from` as
    ``struct.unpack_from``, and `pieces` for long runs. Memory: one `VIEW_BLOCK` of the
    last small read, one `HASH_PIECE` buffer made by the first `pieces`, a ``find``'s
    piece; never the file.

    Unlike an ``mmap``, a file cut short while it is read is no SIGBUS that kills the
    process: a read that finds fewer bytes than ``size`` raises FileChangedError, naming
    ``name`` (the path, for the message). ``fd`` stays the caller's to close."""

    def __init__(self, fd: int, size: int, name: str) -> None:
        self.fd, self.size, self.name = fd, size, name
        self._at, self._block = 0, b""  # the last block read, from file offset _at
        self._piece: bytearray | None = None  # made by the first `pieces`

    def __len__(self) -> int:
        return self.size

    def _read(self, at: int, n: int) -> bytes:
        """``n`` bytes from ``at`` (within ``size``); raises FileChangedError when the file
        holds fewer now, OSError as reading raises it."""
        data = os.pread(self.fd, n, at)
        if len(data) < n:
            raise self._shorter(at + len(data))
        return data

    def _shorter(self, found: int) -> FileChangedError:
        return FileChangedError(
            f"{self.name} got shorter while it was read: {found:,} of its {self.size:,} bytes"
            " were there (cut or rewritten by another program)"
        )

    @overload
    def __getitem__(self, key: int) -> int: ...
    @overload
    def __getitem__(self, key: slice) -> bytes: ...
    def __getitem__(self, key: int | slice) -> int | bytes:
        """A byte (an int) or a run of bytes, as ``bytes`` gives them (a slice's step must
        be 1). Raises IndexError for an index outside the file, FileChangedError as
        `_read`."""
        if isinstance(key, slice):
            start, stop, step = key.indices(self.size)
            if step != 1:
                raise ValueError("FileView slices take no step")
            return self._span(start, stop) if stop > start else b""
        at = key + self.size if key < 0 else key
        if not 0 <= at < self.size:
            raise IndexError("FileView index out of range")
        return self._span(at, at + 1)[0]

    def _span(self, start: int, stop: int) -> bytes:
        """The bytes ``start:stop`` (within ``size``), from the kept block when it holds
        them; a run of at most `VIEW_BLOCK` bytes reads a block from ``start`` first."""
        if self._at <= start and stop <= self._at + len(self._block):
            return self._block[start - self._at : stop - self._at]
        if stop - start > VIEW_BLOCK:
            return self._read(start, stop - start)
        n = min(VIEW_BLOCK, self.size - start)
        self._at, self._block = start, self._read(start, n)
        return self._block[: stop - start]

    def unpack_from(self, fmt: str, at: int) -> tuple[Any, ...]:
        """``struct.unpack_from(fmt, file bytes, at)`` for ``at >= 0``: unpacked from the
        kept block in place when it holds them (a walk's header reads, without the copy
        of a slice), else from ``self[at : at + size]``. Raises struct.error past the end
        of ``size``, FileChangedError as `_read`."""
        i = at - self._at
        if i >= 0 and i + struct.calcsize(fmt) <= len(self._block):
            return struct.unpack_from(fmt, self._block, i)
        return struct.unpack(fmt, self[at : at + struct.calcsize(fmt)])

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        """The lowest offset of ``sub`` in the bytes ``start:end``, or -1, as
        ``bytes.find``; read in pieces of `HASH_PIECE` that overlap by ``len(sub) - 1``."""
        start, end, _ = slice(start, end).indices(self.size)
        if not sub:
            return start if start <= end else -1
        at = start
        while at + len(sub) <= end:
            n = min(HASH_PIECE, end - at)
            found = self._read(at, n).find(sub)
            if found != -1:
                return at + found
            at += n - len(sub) + 1
        return -1

    def pieces(self, start: int, end: int) -> Iterator[memoryview]:
        """The bytes ``start:end`` (within ``size``), in order, as views of one buffer of
        `HASH_PIECE` bytes that the next piece overwrites: use each before asking for the
        next (a hash's ``update``). Raises FileChangedError as `_read`."""
        if self._piece is None:
            self._piece = bytearray(HASH_PIECE)
        view = memoryview(self._piece)
        try:
            at = start
            while at < end:
                n = os.preadv(self.fd, [view[: min(HASH_PIECE, end - at)]], at)
                if n == 0:
                    raise self._shorter(at)
                yield view[:n]
                at += n
        finally:
            view.release()


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
