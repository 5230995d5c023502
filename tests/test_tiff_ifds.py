"""A TIFF's (or DNG's) IFDs and entries bound the C2PA reader's cost (review att36): c2pa-rs
reads each IFD entry on its own, so a 790 KB TIFF whose first IFD holds 65,535 entries
took it 1.3-2.3 s, and one whose 4 SubIFD offsets all name such an IFD 5.1-7.5 s, more
with more offsets (bench/bench_tiff_ifds.py). Such a file is now not given to it (TooLarge, saying why), as BMFF files of too
many boxes and PNG or WebP files of too many chunks are; the verdict is unchanged."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from clients.api import ProvenanceClient
from provenance.c2pa.container import MAX_TIFF_IFD_UNITS, reader_walk_problem, tiff_ifd_count
from provenance.c2pa.pool import ReaderPool
from provenance.c2pa.reader import read_c2pa
from provenance.core.claims import Verdict
from tests.conftest import ADMIN_TOKEN, ServerProc
from tests.test_c2pa_reader import FIXTURES

#: SubIFDs, Exif IFD, GPS IFD and C2PA tags: not among the extra entries.
_IFD_TAGS = frozenset({0x014A, 0x8769, 0x8825, 0xCD41})
DNG = FIXTURES / "third_party" / "c2pa-python" / "C.dng"
POC = FIXTURES / "third_party" / "c2pa-rs" / "malformed" / "tiff_poc.tiff"
TOO_MANY = (
    f"a TIFF of more than {MAX_TIFF_IFD_UNITS:,} IFDs and IFD entries (counting each IFD"
    " the C2PA reader reads), the limit here: not given to the C2PA reader, so its Content"
    " Credentials were not checked (another C2PA validator, such as c2patool, can check"
    " them)"
)


@pytest.fixture(scope="module")
def pool() -> Iterator[ReaderPool]:
    with ReaderPool(workers=1) as p:
        yield p


def _entry(order: str, big: bool, tag: int, kind: int, count: int, value: int) -> bytes:
    if big:
        return struct.pack(order + "HHQQ", tag, kind, count, value)
    return struct.pack(order + "HHII", tag, kind, count, value)


def _tiff(
    extra: int = 0,
    subifds: int = 0,
    sub_entries: int = 0,
    big: bool = False,
    distinct: bool = False,
    long8: bool = False,
) -> bytes:
    """A 64x64 grey TIFF (BigTIFF with ``big``) whose first IFD holds Pillow's entries plus
    ``extra`` BYTE entries of private tags (60,000-64,999, repeated; with ``distinct``,
    each its own tag from 1 up, as the review's file, which Pillow does not decode: a
    TileWidth of 0) and, with ``subifds``, a SubIFDs entry of that many offsets, all
    naming one IFD of ``sub_entries`` entries: 4-byte offsets (LONG), or with ``big`` and
    ``long8`` 8-byte ones (LONG8, as the BigTIFF spec has them) whose two 4-byte halves
    each name that IFD (the whole value: an offset far past the file's end)."""
    buf = io.BytesIO()
    Image.new("L", (64, 64), 128).save(buf, "TIFF", big_tiff=big)
    data = bytearray(buf.getvalue())
    order = "<" if data[:2] == b"II" else ">"
    offset_fmt, count_fmt, step = (
        (order + "Q", order + "Q", 20) if big else (order + "I", order + "H", 12)
    )
    first = struct.unpack_from(offset_fmt, data, 8 if big else 4)[0]
    n = struct.unpack_from(count_fmt, data, first)[0]
    at = first + struct.calcsize(count_fmt)
    entries = [bytes(data[at + i * step : at + (i + 1) * step]) for i in range(n)]
    tags = [t for t in range(1, 65536) if t not in _IFD_TAGS] if distinct else []
    entries += [
        _entry(order, big, tags[i] if distinct else 60_000 + i % 5_000, 1, 1, 0)
        for i in range(extra)
    ]
    ifd = len(data)
    size = struct.calcsize(count_fmt) + (len(entries) + bool(subifds)) * step + (8 if big else 4)
    width = 8 if long8 else 4
    array, sub = ifd + size, ifd + size + width * subifds
    if subifds:
        pointed = width * subifds > 8 if long8 else subifds > 1  # else in the entry
        inline = sub * (1 + (1 << 32)) if long8 else sub
        kind = 16 if long8 else 4
        entries.append(_entry(order, big, 0x014A, kind, subifds, array if pointed else inline))
    entries.sort(key=lambda e: struct.unpack_from(order + "H", e)[0])
    struct.pack_into(offset_fmt, data, 8 if big else 4, ifd)
    data += struct.pack(count_fmt, len(entries)) + b"".join(entries) + bytes(8 if big else 4)
    if subifds:
        data += struct.pack(f"{order}{subifds * width // 4}I", *[sub] * (subifds * width // 4))
        sub_ifd = [_entry(order, big, 60_000 + i % 5_000, 1, 1, 0) for i in range(sub_entries)]
        data += struct.pack(count_fmt, sub_entries) + b"".join(sub_ifd) + bytes(8 if big else 4)
    return bytes(data)


def test_ifds_and_entries_are_counted_as_the_reader_reads_them() -> None:
    """The page IFDs of the chain, and for each its SubIFDs (each offset again) and its
    Exif and GPS IFDs, each IFD counting 1 plus its entries; classic and BigTIFF; the
    count stops past its limit, where the reader stops (more than 1,000 SubIFDs), and at a
    chain looping back on itself."""
    for big in (False, True):
        plain = tiff_ifd_count(_tiff(big=big))
        assert tiff_ifd_count(_tiff(extra=100, big=big)) == plain + 100
        assert tiff_ifd_count(_tiff(subifds=3, sub_entries=10, big=big)) == plain + 1 + 3 * 11
        assert 500 < tiff_ifd_count(_tiff(subifds=9, sub_entries=300, big=big), limit=500) < 900
    assert tiff_ifd_count(DNG.read_bytes()) == 134  # 6 IFDs, 128 entries
    # more than 1,000 SubIFDs: the reader refuses the file before reading any of them
    assert tiff_ifd_count(_tiff(subifds=1001, sub_entries=10)) == tiff_ifd_count(_tiff()) + 1
    assert tiff_ifd_count(POC.read_bytes()) == 2  # its page: 1 entry, 5,000 SubIFDs
    looped = bytearray(_tiff())
    first = struct.unpack_from("<I", looped, 4)[0]
    n = struct.unpack_from("<H", looped, first)[0]
    struct.pack_into("<I", looped, first + 2 + 12 * n, first)  # the next page: itself
    assert tiff_ifd_count(bytes(looped)) == tiff_ifd_count(_tiff())
    assert tiff_ifd_count(b"II*\x00") == 0 and tiff_ifd_count(b"II*\x00\xff\xff\xff\xff") == 0


def test_bigtiff_subifd_offsets_are_counted_as_the_reader_reads_them(pool: ReaderPool) -> None:
    """In a BigTIFF the SubIFDs tag's offsets are 8 bytes (LONG8 or IFD8, BigTIFF spec),
    but the C2PA reader (c2pa-python 0.38.1's c2pa-rs, ``map_tiff``) reads them as 4-byte
    ones, as in a classic TIFF: given the file below, whose 4 offsets each lie past the
    file's end read as 8 bytes but name an IFD of 65,535 entries in each 4-byte half, it
    read that IFD 4 times (5.3 s, no error; and with 4 real 8-byte offsets to it, the IFD
    once, then the file's header as an IFD: 2.4 s, "failed to fill whole buffer"). The
    count reads what the reader reads: counted as 8-byte offsets, this file would pass
    the bound and be given to the reader."""
    plain = tiff_ifd_count(_tiff(big=True))
    data = _tiff(subifds=4, sub_entries=65_535, big=True, long8=True)
    assert data[:4] == b"II+\x00"  # a BigTIFF, as Pillow writes one
    # the reader's 4 offsets: the first 16 bytes of the 4 LONG8s; the SubIFDs entry adds 1
    assert tiff_ifd_count(data, limit=10**9) == plain + 1 + 4 * (1 + 65_535)
    result = read_c2pa(data, "image/tiff", pool=pool)
    assert (result.present, result.error_kind, result.error) == (False, "TooLarge", TOO_MANY)
    # one LONG8 offset, in the entry itself: its first 4 bytes, once
    one = _tiff(subifds=1, sub_entries=10, big=True, long8=True)
    assert tiff_ifd_count(one) == plain + 1 + (1 + 10)


def test_a_tiff_over_the_limit_is_not_given_to_the_c2pa_reader(pool: ReaderPool) -> None:
    """A first IFD of 65,535 entries, and 4 SubIFDs naming one IFD of 65,535 entries: the
    C2PA block says TooLarge and why (before: read for 1.3-2.3 s and 5.1-7.5 s, "no
    manifest");
    at the limit a file is still read, and the shared DNG's manifest still is."""
    plain = tiff_ifd_count(_tiff())
    for data in (_tiff(extra=65_535 - 20), _tiff(subifds=4, sub_entries=65_535)):
        result = read_c2pa(data, "image/tiff", pool=pool)
        assert (result.present, result.error_kind, result.error) == (False, "TooLarge", TOO_MANY)
    at_limit = _tiff(extra=MAX_TIFF_IFD_UNITS - plain)
    assert tiff_ifd_count(at_limit) == MAX_TIFF_IFD_UNITS
    assert reader_walk_problem(at_limit, "image/tiff") is None
    assert reader_walk_problem(_tiff(extra=MAX_TIFF_IFD_UNITS - plain + 1), "image/dng")
    read = read_c2pa(at_limit, "image/tiff", pool=pool)
    assert (read.present, read.error_kind) == (False, None)
    dng = read_c2pa(DNG, "image/dng", pool=pool)
    assert dng.present and dng.error_kind is None


def test_a_tiff_over_the_limit_is_verified_with_its_c2pa_block_saying_why(
    server: ServerProc, tmp_path: Path
) -> None:
    """Through a real `prov serve`: the hostile TIFF is verified as any unsigned picture
    (UNSIGNED, as the same picture without the extra entries), its C2PA block TooLarge
    with the reason."""
    hostile, plain = tmp_path / "hostile.tif", tmp_path / "plain.tif"
    hostile.write_bytes(_tiff(extra=65_535 - 20))
    plain.write_bytes(_tiff())
    with ProvenanceClient(server.address, ADMIN_TOKEN) as c:
        report, before = c.verify_file(hostile), c.verify_file(plain)
    assert report.c2pa is not None
    assert (report.c2pa["error_kind"], report.c2pa["error"]) == ("TooLarge", TOO_MANY)
    assert report.status == before.status == Verdict.UNSIGNED
