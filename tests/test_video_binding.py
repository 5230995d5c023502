"""Video hard binding: streaming SHA-256 + RFC 9162 chunk Merkle root, damage location."""

from __future__ import annotations

import hashlib
import io
import math
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provenance.core import hash_threads

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
from provenance.core.claims import HardBinding
from provenance.core.errors import BindingError
from provenance.core.merkle import EMPTY_ROOT, MemoryTree, leaf_hash
from provenance.core.video_binding import (
    DEFAULT_VIDEO_CHUNK,
    FILE_PIECE,
    FILE_RING,
    OVERLAP_MIN_BYTES,
    ChunkedHasher,
    check_chunk_hashes,
    chunk_count_for,
    chunk_merkle_root,
    hash_chunked,
    hash_file,
    locate_damage,
)
from tests.steps import CountedOffset

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
VIDEO = FIXTURES / "phash" / "video" / "pattern-hd-no-bar.mp4"
VIDEO_SHA256 = "80865824af39b163569d5d09c264ce44e51639e117c7679033eb9b6e137df72d"
# The signed hard binding of the real clip, pinned: a change of how files are hashed
# must leave every existing signature valid (computed before `hash_file` existed).
VIDEO_ROOT = "56b39c45863cfd4c408deaf8a80b901d16545fae003b65547d141b7686deffc2"
VIDEO_LEAVES = (
    "813b15ba1c92b0bdb8e2ee63f39a161b3762aff3240094c25fe49a1959d5055a",
    "9609706b20461cc4f4ccacc110b88339a6a777cad54a2da074837fd6de6b54eb",
    "7de4a6e223b6c6446f1df387ca7b8e85a69f095e6568ac3f63a3e3f97cc30d89",
)
VIDEO_ROOT_300K = "9149a6ca5095c80d9f7080a371401e2ef10144e9b85b57ed06acd52a882cb8fb"
MIB = 1 << 20


@pytest.fixture(scope="module")
def video_bytes() -> bytes:
    return VIDEO.read_bytes()


def test_digest_of_real_video_matches_hashlib_and_rfc9162_tree(video_bytes: bytes) -> None:
    digest = hash_chunked(video_bytes)
    assert len(video_bytes) == 2_192_916
    assert digest.sha256.hex() == VIDEO_SHA256
    assert digest.size == len(video_bytes)
    assert digest.chunk_size == DEFAULT_VIDEO_CHUNK == MIB
    assert digest.chunk_count == 3  # 1 MiB + 1 MiB + 95,764 bytes
    tree = MemoryTree()
    for i in range(0, len(video_bytes), MIB):
        tree.append(video_bytes[i : i + MIB])
    assert digest.chunk_hashes == tuple(
        leaf_hash(video_bytes[i : i + MIB]) for i in range(0, len(video_bytes), MIB)
    )
    assert digest.chunk_merkle_root == tree.root() == chunk_merkle_root(digest.chunk_hashes)
    assert digest.hard_binding() == HardBinding(
        sha256=digest.sha256,
        chunk_size=MIB,
        chunk_count=3,
        chunk_merkle_root=digest.chunk_merkle_root,
    )


def test_the_real_clip_keeps_its_pinned_binding_by_every_path(video_bytes: bytes) -> None:
    with open(VIDEO, "rb") as f:
        from_file = hash_file(f)
    for digest in (hash_chunked(video_bytes), from_file):
        assert digest.sha256.hex() == VIDEO_SHA256
        assert digest.chunk_merkle_root.hex() == VIDEO_ROOT
        assert tuple(h.hex() for h in digest.chunk_hashes) == VIDEO_LEAVES
        assert digest.size == len(video_bytes)
    with open(VIDEO, "rb", buffering=0) as raw:
        assert hash_file(raw, 300_000).chunk_merkle_root.hex() == VIDEO_ROOT_300K
    assert hash_chunked(video_bytes, 300_000).chunk_merkle_root.hex() == VIDEO_ROOT_300K


class _ReadOnly:
    """A binary file object with only ``read`` (no ``readinto``, no descriptor)."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)


class _CountedReads(io.BytesIO):
    """io.BytesIO counting its ``readinto`` calls."""

    reads = 0

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        self.reads += 1
        return super().readinto(buffer)


@pytest.mark.parametrize("chunk_size", [DEFAULT_VIDEO_CHUNK, 300_000, 3 * MIB, 1000])
def test_hash_file_equals_the_streaming_hasher_for_every_kind_of_file(
    video_bytes: bytes, tmp_path: Path, chunk_size: int
) -> None:
    # more than FILE_RING pieces, an odd size, and a start past the file's beginning
    data = b"skip" + video_bytes * 3 + os.urandom(12_345)
    assert len(data) > FILE_RING * FILE_PIECE
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    expected = hash_chunked(data[4:], chunk_size)
    assert expected.sha256 == hashlib.sha256(data[4:]).digest()
    for buffering in (-1, 0):  # a regular file: read twice, by two threads
        with open(path, "rb", buffering=buffering) as f:
            f.seek(4)
            assert hash_file(f, chunk_size) == expected
            assert f.tell() == len(data)
    whole = hash_chunked(data, chunk_size)
    assert hash_file(io.BytesIO(data), chunk_size) == whole  # read once, into a ring
    assert hash_file(cast(BinaryIO, _ReadOnly(data)), chunk_size) == whole  # only `read`


def test_a_file_read_once_waits_for_the_helper_before_it_reuses_a_buffer() -> None:
    data = os.urandom((FILE_RING + 2) * FILE_PIECE + 5)
    source = _CountedReads(data)
    busy = threading.Event()
    for helper in hash_threads._helpers():  # no chunk leaf can be hashed
        helper.start(busy.wait)
    out: list[object] = []
    worker = threading.Thread(target=lambda: out.append(hash_file(source)))
    worker.start()
    try:
        deadline = time.monotonic() + 60  # returns once filled: a loaded machine is slower
        while source.reads < FILE_RING and time.monotonic() < deadline:
            time.sleep(0.01)
        worker.join(0.5)  # time to overwrite a buffer, were the helper not waited for
        assert worker.is_alive()
        assert source.reads == FILE_RING  # every buffer filled once, none overwritten
    finally:
        busy.set()
    worker.join(30)
    assert out == [hash_chunked(data)]


@pytest.mark.parametrize("change", ["append", "truncate"])
def test_a_regular_file_that_changes_while_it_is_hashed_is_refused(
    tmp_path: Path, change: str
) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(os.urandom(3 * FILE_PIECE + 7))
    busy = threading.Event()
    for helper in hash_threads._helpers():  # the chunk-leaf pass waits
        helper.start(busy.wait)
    errors: list[BaseException] = []

    def run() -> None:
        with open(path, "rb") as f:
            try:
                hash_file(f)
            except BindingError as e:
                errors.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        worker.join(1.0)  # the whole-file pass is done by now; the leaf pass not begun
        with open(path, "r+b") as f:
            if change == "append":
                f.seek(0, os.SEEK_END)
                f.write(b"more")
            else:
                f.truncate(FILE_PIECE)
    finally:
        busy.set()
    worker.join(30)
    assert len(errors) == 1
    assert ("changed" if change == "append" else "got shorter") in str(errors[0])


def test_hash_file_of_a_pipe_with_short_reads_and_of_a_nonblocking_empty_one(
    video_bytes: bytes,
) -> None:
    r, w = os.pipe()

    def write() -> None:
        with os.fdopen(w, "wb", buffering=0) as out:
            for i in range(0, len(video_bytes), 100_003):  # pieces no chunk boundary fits
                out.write(video_bytes[i : i + 100_003])

    writer = threading.Thread(target=write)
    writer.start()
    with os.fdopen(r, "rb", buffering=0) as raw:
        assert hash_file(raw) == hash_chunked(video_bytes)
    writer.join(10)
    r, w = os.pipe()
    os.set_blocking(r, False)
    with os.fdopen(r, "rb", buffering=0) as raw, os.fdopen(w, "wb"):
        with pytest.raises(BindingError, match="non-blocking"):
            hash_file(raw)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=2_192_916), max_size=12))
def test_any_feeding_pattern_gives_the_same_digest(video_bytes: bytes, cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(video_bytes)]
    hasher = ChunkedHasher()
    for start, end in zip(bounds, bounds[1:], strict=False):
        hasher.update(memoryview(video_bytes)[start:end])
    assert hasher.finalize() == hash_chunked(video_bytes)


def test_a_reused_read_buffer_gives_the_same_digest(video_bytes: bytes) -> None:
    # The whole-file SHA-256 of a large piece runs on a helper thread; update must not
    # return before it is done, or overwriting the caller's buffer would corrupt it.
    hasher = ChunkedHasher()
    buf = bytearray(OVERLAP_MIN_BYTES * 3)
    for start in range(0, len(video_bytes), len(buf)):
        piece = video_bytes[start : start + len(buf)]
        buf[: len(piece)] = piece
        hasher.update(memoryview(buf)[: len(piece)])
        buf[:] = bytes(len(buf))
    assert hasher.finalize().sha256.hex() == VIDEO_SHA256
    assert hasher.finalize() == hash_chunked(video_bytes)


def test_chunk_hashes_grow_while_the_stream_arrives(video_bytes: bytes) -> None:
    hasher = ChunkedHasher()
    hasher.update(video_bytes[: MIB + 10])
    assert hasher.size == MIB + 10
    assert hasher.chunk_hashes == (leaf_hash(video_bytes[:MIB]),)
    hasher.update(video_bytes[MIB + 10 :])
    final = hasher.finalize()
    assert hasher.finalize() is final
    with pytest.raises(BindingError, match="finalized"):
        hasher.update(b"x")


def test_small_chunk_sizes_and_the_empty_file() -> None:
    data = bytes(range(256)) * 5  # 1,280 bytes
    digest = hash_chunked(data, chunk_size=500)
    assert digest.chunk_count == 3 == chunk_count_for(1280, 500)
    assert digest.chunk_hashes[2] == leaf_hash(data[1000:])
    empty = hash_chunked(b"")
    assert empty.chunk_count == 0
    assert empty.chunk_merkle_root == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert empty.sha256 == hashlib.sha256(b"").digest()
    for bad in (0, -1, (64 << 20) + 1):
        with pytest.raises(BindingError, match="chunk size"):
            ChunkedHasher(bad)


def test_one_flipped_byte_is_located_in_its_chunk(video_bytes: bytes) -> None:
    signed = hash_chunked(video_bytes)
    damaged = bytearray(video_bytes)
    damaged[1_500_000] ^= 0x01
    received = hash_chunked(damaged)
    assert received.sha256 != signed.sha256
    assert received.chunk_merkle_root != signed.chunk_merkle_root
    assert received.chunk_hashes[0] == signed.chunk_hashes[0]
    ranges = locate_damage(
        signed.chunk_hashes, received.chunk_hashes, MIB, signed.size, received.size
    )
    assert ranges == [(MIB, 2 * MIB - 1)]
    assert ranges[0][0] <= 1_500_000 <= ranges[0][1]


def test_truncated_file_names_the_cut_chunk_and_the_missing_tail(video_bytes: bytes) -> None:
    signed = hash_chunked(video_bytes)
    received = hash_chunked(video_bytes[:1_200_000])
    assert received.chunk_count == 2
    ranges = locate_damage(
        signed.chunk_hashes, received.chunk_hashes, MIB, signed.size, received.size
    )
    assert ranges == [(MIB, len(video_bytes) - 1)]


def test_garbage_appended_is_located_at_the_end(video_bytes: bytes) -> None:
    signed = hash_chunked(video_bytes)
    longer = video_bytes + b"\x00garbage" * 200_000  # 1.6 MB more: 3.6 MiB in all
    received = hash_chunked(longer)
    assert received.chunk_count == 4
    ranges = locate_damage(
        signed.chunk_hashes, received.chunk_hashes, MIB, signed.size, received.size
    )
    assert ranges == [(2 * MIB, len(longer) - 1)]
    assert (
        locate_damage(signed.chunk_hashes, signed.chunk_hashes, MIB, signed.size, signed.size) == []
    )


def test_separate_damaged_chunks_give_separate_ranges(video_bytes: bytes) -> None:
    signed = hash_chunked(video_bytes, chunk_size=256 * 1024)
    damaged = bytearray(video_bytes)
    damaged[10] ^= 0xFF  # chunk 0
    damaged[300_000] ^= 0xFF  # chunk 1
    damaged[1_000_000] ^= 0xFF  # chunk 3
    received = hash_chunked(damaged, chunk_size=256 * 1024)
    q = 256 * 1024
    assert locate_damage(
        signed.chunk_hashes, received.chunk_hashes, q, signed.size, received.size
    ) == [(0, 2 * q - 1), (3 * q, 4 * q - 1)]


def test_sidecar_chunk_list_is_checked_against_the_signed_root(video_bytes: bytes) -> None:
    signed = hash_chunked(video_bytes)
    binding = signed.hard_binding()
    check_chunk_hashes(signed.chunk_hashes, binding, signed.size)
    forged = (signed.chunk_hashes[0], leaf_hash(b"forged"), signed.chunk_hashes[2])
    with pytest.raises(BindingError, match="do not rebuild"):
        check_chunk_hashes(forged, binding, signed.size)
    with pytest.raises(BindingError, match="got 2 chunk hashes"):
        check_chunk_hashes(signed.chunk_hashes[:2], binding, signed.size)
    with pytest.raises(BindingError, match="make 4"):
        check_chunk_hashes(signed.chunk_hashes, binding, 3 * MIB + 1)
    with pytest.raises(BindingError, match="no chunk Merkle root"):
        check_chunk_hashes(signed.chunk_hashes, HardBinding(sha256=signed.sha256), signed.size)
    with pytest.raises(BindingError, match="33 bytes"):
        chunk_merkle_root([b"\x00" * 33])


def test_locate_damage_rejects_lists_that_do_not_fit_their_sizes(video_bytes: bytes) -> None:
    signed = hash_chunked(video_bytes)
    with pytest.raises(BindingError, match="expected: 3 chunk hashes for 1000 bytes"):
        locate_damage(signed.chunk_hashes, signed.chunk_hashes, MIB, 1000, signed.size)


def _file_ranges_by_walk(
    ranges: list[tuple[int, int]], removed: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """`file_ranges` as first written: each offset walks the runs (the reference)."""

    def at(offset: int) -> int:
        for start, length in removed:
            if start > offset:
                break
            offset += length
        return offset

    return [(at(first), at(last)) for first, last in ranges]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(1, 30)), max_size=8),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 40)), max_size=8),
)
def test_file_ranges_names_the_same_bytes_as_a_walk_over_the_runs(
    gaps: list[tuple[int, int]], spans: list[tuple[int, int]]
) -> None:
    from provenance.core.video_binding import file_ranges

    removed, at = [], 0
    for gap, length in gaps:  # runs in file order, apart or adjacent
        removed.append((at + gap, length))
        at += gap + length
    ranges = [(first, first + span) for first, span in sorted(spans)]
    assert file_ranges(ranges, removed) == _file_ranges_by_walk(ranges, removed)


def test_file_ranges_of_many_runs_and_ranges_takes_logarithmic_steps() -> None:
    """Each offset walked every run taken out before it: an MP4 export carrying 200,000
    empty C2PA boxes (24 bytes each, 4.8 MB) before its media, edited in 400 places,
    walked 160,000,000 runs in all (3.4 s of CPU). Now a binary search per offset: at
    most ceil(log2 runs) + 1 comparisons each (a step count, not a time)."""
    from provenance.core.video_binding import file_ranges

    removed = [(32 + 24 * i, 24) for i in range(200_000)]
    ranges = [(CountedOffset(i * 131_072), CountedOffset(i * 131_072 + 65_535)) for i in range(400)]
    CountedOffset.comparisons = 0
    found = file_ranges(ranges, removed)
    per_offset = math.ceil(math.log2(len(removed))) + 1
    assert CountedOffset.comparisons <= 2 * len(ranges) * per_offset, CountedOffset.comparisons
    shift = 24 * 200_000
    assert found[0] == (0, 65_535 + shift)  # over the runs' place: takes them in
    assert found[1] == (131_072 + shift, 131_072 + 65_535 + shift)  # after every run
