"""Hard binding of a video: SHA-256 of the whole file and a Merkle root over fixed-size
chunks, computed in one streaming pass.

The file is cut into chunks of ``chunk_size`` bytes (the last one shorter); chunk ``i``
covers bytes ``[i * chunk_size, min((i + 1) * chunk_size, size))``. Each chunk's leaf is
the RFC 9162 leaf hash ``SHA-256(0x00 || chunk bytes)`` and the chunk root is the RFC 9162
Merkle tree hash over those leaves, so the same code and proofs as the transparency log
apply. The claim records ``sha256``, ``chunk_size``, ``chunk_count`` and
``chunk_merkle_root`` (`provenance.core.claims.HardBinding`).

Where the per-chunk hashes come from when a file is checked: the claim carries only the
root, so the sidecar carries the list of chunk leaf hashes (32 bytes each, 32 KiB per GiB
of video at the default chunk size). The list is untrusted until `check_chunk_hashes`
shows that it rebuilds the signed root; only then may `locate_damage` compare it with the
chunk hashes of the received file to name the damaged byte ranges. Without the list, a
mismatch is still detected (the root differs) but cannot be located. A file exported with
a C2PA manifest store is compared with its store removed (the bytes the claim signed) and
`file_ranges` names the ranges at their offsets in the file.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from provenance.core.claims import HardBinding
from provenance.core.errors import BindingError
from provenance.core.hash_threads import BackgroundFeed, run_beside, start_beside
from provenance.core.merkle import HASH_SIZE, CompactRange

#: Default chunk size of the video hard binding, in bytes (1 MiB); recorded in the claim.
DEFAULT_VIDEO_CHUNK = 1 << 20
#: Largest chunk size accepted, in bytes (64 MiB).
MAX_VIDEO_CHUNK = 64 << 20


#: Pieces at least this long are hashed whole-file on a helper thread while the calling
#: thread hashes their chunk leaves (hashlib releases the GIL over 2 KiB;
#: `provenance.core.hash_threads`).
OVERLAP_MIN_BYTES = 256 * 1024


#: `hash_file` reads in pieces of this many bytes: a regular file twice, by two threads
#: with a buffer each; a pipe once, into FILE_RING buffers in turn, the chunk leaves of a
#: piece hashed on a helper thread while this thread hashes the whole file and reads the
#: next pieces, waiting for the helper only when it is FILE_RING pieces behind.
FILE_PIECE = 1 << 20
FILE_RING = 4


def _check_chunk_size(chunk_size: int) -> None:
    if not 0 < chunk_size <= MAX_VIDEO_CHUNK:
        raise BindingError(f"chunk size must be in 1..{MAX_VIDEO_CHUNK} bytes, got {chunk_size}")


def chunk_count_for(size: int, chunk_size: int) -> int:
    """Number of chunks of a file of ``size`` bytes: ceil(size / chunk_size) (0 if empty)."""
    _check_chunk_size(chunk_size)
    if size < 0:
        raise BindingError(f"file size {size} is negative")
    return -(-size // chunk_size)


@dataclass(frozen=True)
class ChunkedDigest:
    """The hard binding of a whole file.

    sha256: 32-byte SHA-256 of all bytes; size: bytes; chunk_size: bytes per chunk;
    chunk_hashes: one 32-byte RFC 9162 leaf hash per chunk, in file order;
    chunk_merkle_root: 32-byte RFC 9162 tree hash over chunk_hashes (SHA-256 of the empty
    string for an empty file).
    """

    sha256: bytes
    size: int
    chunk_size: int
    chunk_hashes: tuple[bytes, ...]
    chunk_merkle_root: bytes

    @property
    def chunk_count(self) -> int:
        """Number of chunks."""
        return len(self.chunk_hashes)

    def hard_binding(self) -> HardBinding:
        """The claim's hard binding for this file."""
        return HardBinding(
            sha256=self.sha256,
            chunk_size=self.chunk_size,
            chunk_count=self.chunk_count,
            chunk_merkle_root=self.chunk_merkle_root,
        )


class ChunkLeaves:
    """The chunk leaf hashes and their RFC 9162 Merkle root of a byte stream, without the
    whole-file SHA-256 (`ChunkedHasher` adds it; an upload hashes the two on separate
    helper threads, `provenance.media.inspect.Upload`).

    Feed the bytes in any pieces with `update`; whole chunks are hashed as soon as they
    complete (memory: one chunk plus 32 bytes per chunk). `finalize` hashes the last,
    partial chunk and returns (leaf hashes, root); no more bytes are taken after it.
    """

    def __init__(self, chunk_size: int = DEFAULT_VIDEO_CHUNK) -> None:
        _check_chunk_size(chunk_size)
        self.chunk_size = chunk_size
        self._pending = bytearray()
        self._chunk_hashes: list[bytes] = []
        self._tree = CompactRange()
        self._final: tuple[tuple[bytes, ...], bytes] | None = None

    @property
    def chunk_hashes(self) -> tuple[bytes, ...]:
        """Leaf hashes of the chunks completed so far."""
        return tuple(self._chunk_hashes)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Cut ``data`` into chunks after the pending bytes and hash every complete one.
        Raises BindingError after `finalize`."""
        if self._final is not None:
            raise BindingError("the hasher was finalized; it takes no more bytes")
        view = memoryview(data).cast("B")
        if self._pending:
            take = min(len(view), self.chunk_size - len(self._pending))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) == self.chunk_size:
                self._add_chunk(self._pending)
                self._pending = bytearray()
        while len(view) >= self.chunk_size:
            self._add_chunk(view[: self.chunk_size])
            view = view[self.chunk_size :]
        if view:
            self._pending += view

    def _add_chunk(self, chunk: bytes | bytearray | memoryview) -> None:
        leaf = hashlib.sha256(b"\x00")
        leaf.update(chunk)
        digest = leaf.digest()
        self._chunk_hashes.append(digest)
        self._tree.append(digest)

    def finalize(self) -> tuple[tuple[bytes, ...], bytes]:
        """Hash the last partial chunk; return (32-byte leaf hashes in file order, 32-byte
        RFC 9162 root over them), the same again if called again."""
        if self._final is None:
            if self._pending:
                self._add_chunk(self._pending)
                self._pending = bytearray()
            self._final = (tuple(self._chunk_hashes), self._tree.root())
        return self._final


class ChunkedHasher:
    """Streaming SHA-256 and chunk Merkle root of a byte stream.

    Feed the bytes in any pieces with `update` (upload chunks of arbitrary sizes): whole
    chunks are hashed as soon as they complete, so memory is one chunk plus 32 bytes per
    chunk seen, and `chunk_hashes` grows while the stream arrives (a receiver holding the
    expected list can stop at the first bad chunk). `finalize` hashes the last, partial
    chunk and returns the `ChunkedDigest`; the hasher takes no more bytes after it.
    """

    def __init__(self, chunk_size: int = DEFAULT_VIDEO_CHUNK) -> None:
        self._leaves = ChunkLeaves(chunk_size)
        self._sha256 = hashlib.sha256()
        self._size = 0
        self._final: ChunkedDigest | None = None

    @property
    def size(self) -> int:
        """Bytes fed so far."""
        return self._size

    @property
    def chunk_hashes(self) -> tuple[bytes, ...]:
        """Leaf hashes of the chunks completed so far."""
        return self._leaves.chunk_hashes

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed the next bytes of the stream. Raises BindingError after `finalize`."""
        if self._final is not None:
            raise BindingError("the hasher was finalized; it takes no more bytes")
        view = memoryview(data).cast("B")
        self._size += len(view)
        if len(view) < OVERLAP_MIN_BYTES:
            self._sha256.update(view)
            self._leaves.update(view)
            return
        # Each byte is read by two hashes: the whole-file one runs on a helper thread
        # while this thread hashes the chunk leaves; both finish before `data` returns
        # to the caller (who may reuse its buffer).
        run_beside(lambda: self._sha256.update(view), lambda: self._leaves.update(view))

    def finalize(self) -> ChunkedDigest:
        """Hash the last partial chunk and return the digest (the same one if called again)."""
        if self._final is None:
            hashes, root = self._leaves.finalize()
            self._final = ChunkedDigest(
                sha256=self._sha256.digest(),
                size=self._size,
                chunk_size=self._leaves.chunk_size,
                chunk_hashes=hashes,
                chunk_merkle_root=root,
            )
        return self._final


def hash_chunked(
    data: bytes | bytearray | memoryview, chunk_size: int = DEFAULT_VIDEO_CHUNK
) -> ChunkedDigest:
    """The `ChunkedDigest` of bytes already in memory."""
    hasher = ChunkedHasher(chunk_size)
    hasher.update(data)
    return hasher.finalize()


def _nothing() -> None:
    return None


def _reader(f: BinaryIO) -> Callable[[bytearray], int | None]:
    """``f.readinto`` for a file object of `io` (raw or buffered), else reads copied in."""
    if isinstance(f, io.RawIOBase | io.BufferedIOBase):
        return f.readinto

    def readinto(buf: bytearray) -> int:
        data = f.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    return readinto


def _pieces(fd: int, start: int, end: int, stop: list[bool]) -> Iterator[memoryview]:
    """Bytes ``[start, end)`` of the file ``fd``, read with pread into one FILE_PIECE
    buffer (each view is overwritten by the next). Stops early once ``stop[0]`` is set;
    raises BindingError if the file ends before ``end``."""
    buf = bytearray(FILE_PIECE)
    view = memoryview(buf)
    at = start
    while at < end and not stop[0]:
        n = os.preadv(fd, [view[: min(FILE_PIECE, end - at)]], at)
        if not n:
            raise BindingError("the file got shorter while it was hashed; hash it again")
        yield view[:n]
        at += n


def _regular_fd(f: BinaryIO) -> int | None:
    """The descriptor of ``f`` if it is a regular file, else None."""
    try:
        fd = f.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None
    return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None


def hash_file(f: BinaryIO, chunk_size: int = DEFAULT_VIDEO_CHUNK) -> ChunkedDigest:
    """The `ChunkedDigest` of the bytes of ``f`` from its position to its end (the same
    value as `ChunkedHasher` fed the same bytes); ``f`` is left at its end.

    Each byte is hashed twice (whole file and chunk leaf). For a regular file the two run
    on two threads that share nothing but the descriptor: this thread reads the file with
    pread in FILE_PIECE pieces and computes the whole-file SHA-256 over them, the same
    work as hashing the file alone, while a helper thread (`start_beside`) reads the same
    bytes into its own buffer and hashes the chunk leaves; neither waits for the other
    until the end. The size is taken when hashing starts; a file whose size, mtime or
    inode differ at the end raises BindingError (the two passes might have seen different
    bytes). Any other binary file (a pipe, `io.BytesIO`) is read once into a ring of
    buffers (`_hash_stream`). Raises BindingError for a bad chunk size, a file that
    changed while it was hashed, or a non-blocking one with no bytes ready; OSError as
    reading raises it.
    """
    _check_chunk_size(chunk_size)
    fd = _regular_fd(f)
    if fd is None:
        return _hash_stream(f, chunk_size)
    before = os.fstat(fd)
    start = f.tell()
    end = max(start, before.st_size)
    leaves = ChunkLeaves(chunk_size)
    stop = [False]  # set when this thread fails: the helper stops at its next piece

    def leaf_pass() -> None:
        for view in _pieces(fd, start, end, stop):
            leaves.update(view)

    wait = start_beside(leaf_pass)
    sha = hashlib.sha256()
    try:
        for view in _pieces(fd, start, end, [False]):
            sha.update(view)
    except BaseException:
        stop[0] = True
        with contextlib.suppress(Exception):
            wait()  # the helper reads fd: it must be done before the caller may close it
        raise
    wait()
    after = os.fstat(fd)
    if (after.st_size, after.st_mtime_ns, after.st_ino) != (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    ):
        raise BindingError("the file changed while it was hashed; hash it again")
    f.seek(end)
    hashes, root = leaves.finalize()
    return ChunkedDigest(
        sha256=sha.digest(),
        size=end - start,
        chunk_size=chunk_size,
        chunk_hashes=hashes,
        chunk_merkle_root=root,
    )


def _hash_stream(f: BinaryIO, chunk_size: int) -> ChunkedDigest:
    """`hash_file` of a file that is read only once, in order (a pipe, `io.BytesIO`):
    FILE_PIECE pieces read into FILE_RING buffers in turn; this thread computes the
    whole-file SHA-256 of each while a helper hashes the chunk leaves of the pieces
    already read (`provenance.core.hash_threads.BackgroundFeed.lend`); a buffer is reused
    only once the helper is done with it."""
    leaves = ChunkLeaves(chunk_size)
    feed = BackgroundFeed(leaves.update)
    sha = hashlib.sha256()
    ring = [bytearray(FILE_PIECE) for _ in range(FILE_RING)]
    waits: list[Callable[[], None]] = [_nothing] * FILE_RING
    readinto = _reader(f)
    slot = 0
    while n := readinto(ring[slot]):
        view = memoryview(ring[slot])[:n]
        waits[slot] = feed.lend(view)
        sha.update(view)
        slot = (slot + 1) % FILE_RING
        waits[slot]()  # the helper is done with the buffer read next
        waits[slot] = _nothing
    if n is None:
        raise BindingError("the file is non-blocking and had no bytes ready")
    feed.drain()
    hashes, root = leaves.finalize()
    return ChunkedDigest(
        sha256=sha.digest(),
        size=feed.size,
        chunk_size=chunk_size,
        chunk_hashes=hashes,
        chunk_merkle_root=root,
    )


def chunk_merkle_root(chunk_hashes: Sequence[bytes]) -> bytes:
    """RFC 9162 tree hash over chunk leaf hashes (32 bytes each). BindingError on a bad hash."""
    tree = CompactRange()
    for i, value in enumerate(chunk_hashes):
        if len(value) != HASH_SIZE:
            raise BindingError(f"chunk hash {i} is {len(value)} bytes, expected {HASH_SIZE}")
        tree.append(value)
    return tree.root()


def check_chunk_hashes(chunk_hashes: Sequence[bytes], binding: HardBinding, size: int) -> None:
    """Check an untrusted list of chunk leaf hashes (from a sidecar) against a signed binding.

    size: the file size in bytes the claim states. Raises BindingError unless the binding
    is chunked, the list has ceil(size / chunk_size) == chunk_count entries, and its RFC
    9162 root equals binding.chunk_merkle_root.
    """
    if binding.chunk_size <= 0 or not binding.chunk_merkle_root:
        raise BindingError("the hard binding has no chunk Merkle root")
    expected = chunk_count_for(size, binding.chunk_size)
    if binding.chunk_count != expected:
        raise BindingError(
            f"the binding states {binding.chunk_count} chunks, but {size} bytes in chunks of "
            f"{binding.chunk_size} make {expected}"
        )
    if len(chunk_hashes) != expected:
        raise BindingError(f"got {len(chunk_hashes)} chunk hashes, the binding has {expected}")
    if chunk_merkle_root(chunk_hashes) != binding.chunk_merkle_root:
        raise BindingError("the chunk hashes do not rebuild the signed chunk Merkle root")


def locate_damage(
    expected_chunk_hashes: Sequence[bytes],
    actual_chunk_hashes: Sequence[bytes],
    chunk_size: int,
    expected_size: int,
    actual_size: int,
) -> list[tuple[int, int]]:
    """Byte ranges where a received file differs from the signed one, for the report.

    expected_chunk_hashes: leaf hashes of the signed file (checked with
    `check_chunk_hashes` first), expected_size bytes long; actual_chunk_hashes: those of
    the received file (`ChunkedDigest.chunk_hashes`), actual_size bytes long; both cut at
    chunk_size. Returns inclusive (first_byte, last_byte) ranges, adjacent damaged chunks
    merged, in order: chunks whose hashes differ, chunks missing from a truncated file, and
    chunks added to a longer one. A range ends at the end of the longer file. Empty when
    the chunks are identical. Raises BindingError when a list does not fit its size.
    """
    for name, hashes, size in (
        ("expected", expected_chunk_hashes, expected_size),
        ("actual", actual_chunk_hashes, actual_size),
    ):
        count = chunk_count_for(size, chunk_size)
        if len(hashes) != count:
            raise BindingError(
                f"{name}: {len(hashes)} chunk hashes for {size} bytes, expected {count}"
            )
    end = max(expected_size, actual_size)
    common = min(len(expected_chunk_hashes), len(actual_chunk_hashes))
    total = max(len(expected_chunk_hashes), len(actual_chunk_hashes))
    damaged = [
        i for i in range(total) if i >= common or expected_chunk_hashes[i] != actual_chunk_hashes[i]
    ]
    ranges: list[tuple[int, int]] = []
    for i in damaged:
        first, last = i * chunk_size, min((i + 1) * chunk_size, end) - 1
        if ranges and ranges[-1][1] + 1 == first:
            ranges[-1] = (ranges[-1][0], last)
        else:
            ranges.append((first, last))
    return ranges


def file_ranges(
    ranges: Sequence[tuple[int, int]], removed: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """``ranges`` (inclusive byte ranges, as `locate_damage` gives) of a file's bytes
    with runs taken out, named by their offsets in the file itself.

    removed: (offset in the file, length in bytes) of each run taken out, in file order
    (the C2PA manifest store a claim's bytes were exported with,
    `provenance.c2pa.container.strip_and_locate`). A range over the place of a run takes
    the run in; a range past the end of the shorter bytes is shifted by every run.
    """

    # run k begins, in the shorter bytes, at its file offset less the runs before it;
    # an offset at or past that is shifted by run k and every run before it (a binary
    # search: a walk over the runs for each offset took 3.4 s of CPU for 200,000 runs
    # and 400 ranges)
    begins, shifts, before = [], [], 0
    for start, length in removed:
        begins.append(start - before)
        before += length
        shifts.append(before)

    def at(offset: int) -> int:
        k = bisect.bisect_right(begins, offset)
        return offset + (shifts[k - 1] if k else 0)

    return [(at(first), at(last)) for first, last in ranges]
