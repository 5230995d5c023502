"""A BMFF file's box count and nesting, and a PNG's or WebP's chunk count, bound the C2PA
reader's and our walks' cost (review att36): c2pa-rs took 26 s over a 466 KB MP4 of 50,000 empty boxes (quadratic or
worse), so two such uploads held both of the server's decode slots past its 30 s reader
limit and an honest upload was refused; our own walks took 1.6 us and 230 bytes a box,
and a chain of 5,000 nested ``trak`` boxes raised RecursionError out of them. Real files
made from the shared C2PA fixtures; the end-to-end test runs a real `prov serve`."""

from __future__ import annotations

import io
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from clients.api import ProvenanceClient
from provenance.c2pa.container import (
    MAX_BMFF_BOXES,
    MAX_BMFF_DEPTH,
    MAX_PNG_CHUNKS,
    MAX_WEBP_CHUNKS,
    bmff_box_count,
    content_sha256,
    manifest_store,
    reader_walk_problem,
    strip_and_locate,
)
from provenance.c2pa.pool import ReaderPool
from provenance.c2pa.reader import C2paLimits, read_c2pa
from provenance.core.errors import MediaError
from provenance.core.verify import VerificationReport
from tests.conftest import ADMIN_TOKEN, SAMPLES, ServerProc, start_server
from tests.test_c2pa_reader import FIXTURES
from tests.test_png_chunks import _with_empty_chunks

CAPTURE = FIXTURES / "generated" / "gen_ed25519_capture.mp4"
EMPTY_BOX = struct.pack(">I4s", 8, b"free")


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _with_boxes(total: int) -> bytes:
    """The generated C2PA capture with empty ``free`` boxes appended, ``total`` boxes in
    all as `bmff_box_count` counts them."""
    data = CAPTURE.read_bytes()
    return data + EMPTY_BOX * (total - bmff_box_count(data))


def _nested_traks(depth: int) -> bytes:
    """A C2PA-marked MP4 layout whose moov holds ``depth`` ``trak`` boxes, each in the
    one before, the innermost holding an empty stco table."""
    inner = _box(b"stco", bytes(8))
    for _ in range(depth):
        inner = _box(b"trak", inner)
    store = CAPTURE.read_bytes()
    uuid_at = store.index(b"uuid") - 4
    (uuid_size,) = struct.unpack_from(">I", store, uuid_at)
    ftyp = _box(b"ftyp", b"isom\x00\x00\x02\x00isom")
    return ftyp + store[uuid_at : uuid_at + uuid_size] + _box(b"moov", inner) + _box(b"mdat", b"")


@pytest.fixture(scope="module")
def pool() -> Any:
    with ReaderPool(workers=1) as p:
        yield p


def test_boxes_are_counted_in_the_containers_the_reader_walks() -> None:
    """The shared MP4 and MOV files hold a few dozen; a box in a ``moov`` or ``udta``
    counts, one in a box the reader does not open (``skip``) does not; the count stops
    past its limit."""
    for path in (CAPTURE, SAMPLES / "fabric_pattern.mp4"):
        assert 20 < bmff_box_count(path.read_bytes()) < 60
    moov = _box(b"moov", _box(b"udta", EMPTY_BOX * 3) + _box(b"skip", EMPTY_BOX * 3))
    assert bmff_box_count(moov) == 1 + 2 + 3
    assert bmff_box_count(EMPTY_BOX * 100, limit=10) == 11


@pytest.mark.parametrize("walk", [strip_and_locate, content_sha256, manifest_store])
def test_the_container_walks_refuse_a_bmff_over_the_box_limit(walk: Any) -> None:
    """At the limit the capture is walked as before; one box more is a MediaError, not
    a walk of every box."""
    walk(_with_boxes(MAX_BMFF_BOXES), "video/mp4")
    with pytest.raises(MediaError, match=f"boxes, over the {MAX_BMFF_BOXES:,} walked here"):
        walk(_with_boxes(MAX_BMFF_BOXES + 1), "video/mp4")


def test_deeply_nested_boxes_are_a_media_error_not_a_recursion_error() -> None:
    """Before: RecursionError (not a ProvenanceError) from the chunk-offset rewrite, so
    `prov scan` reported "cannot measure: RecursionError" for the file."""
    strip_and_locate(_nested_traks(MAX_BMFF_DEPTH - 2), "video/mp4")
    with pytest.raises(MediaError, match=f"nested more than {MAX_BMFF_DEPTH} deep"):
        strip_and_locate(_nested_traks(2_000), "video/mp4")


def test_the_reader_is_not_given_a_bmff_over_the_box_limit(
    pool: ReaderPool, tmp_path: Path
) -> None:
    """Before, the reader ran past the 5 s limit over 50,000 boxes and was killed
    (Timeout); now the file is refused unread, from its bytes or its path (mapped),
    saying its box count, the limit, how a long fragmented recording reaches it and
    what can check its Content Credentials instead (before: 'a BMFF file of more than
    4,096 boxes, the limit here: not given to the C2PA reader')."""
    limits = C2paLimits(timeout_s=5.0)
    path = tmp_path / "boxes.mp4"
    path.write_bytes(_with_boxes(50_000))
    for source in (path, path.read_bytes()):
        result = read_c2pa(source, "video/mp4", limits=limits, pool=pool)
        assert (result.present, result.error_kind) == (False, "TooLarge")
        assert result.error == (
            f"a BMFF file of more than {4 * MAX_BMFF_BOXES:,} boxes, over the {MAX_BMFF_BOXES:,} walked here (a"
            " fragmented MP4 holds about 7 a fragment: a recording in 1-second fragments"
            " passes it after 6 to 10 minutes): not given to the C2PA reader, so its"
            " Content Credentials were not checked (another C2PA validator, such as"
            " c2patool, can check them)"
        )
    counted = read_c2pa(_with_boxes(5_000), "video/mp4", limits=limits, pool=pool)
    assert str(counted.error).startswith("a BMFF file of 5,000 boxes, over the 4,096 walked here")
    at_limit = read_c2pa(_with_boxes(MAX_BMFF_BOXES), "video/mp4", limits=limits, pool=pool)
    assert at_limit.present and at_limit.error_kind is None


def test_uploads_of_many_boxes_leave_the_decode_slots_to_others(tmp_path: Path) -> None:
    """Two uploads of 50,000 boxes (466 KB each) and then an honest C2PA capture, on a
    server of two decode slots that waits 10 s for one: the capture is read (Valid), the
    others say why they were not. Before, each held a slot until the reader was killed
    at 30 s and the capture was refused (RESOURCE_EXHAUSTED, "none finished"). The wait
    for a slot is 10 s (was 3): a loaded machine walks the boxes slower, and 30 s is far
    over it still."""
    hostile = tmp_path / "boxes.mp4"
    hostile.write_bytes(_with_boxes(50_000))
    server: ServerProc = start_server(tmp_path / "prov.db", "--decode-wait-seconds", "10")
    reports: list[VerificationReport] = []

    def upload() -> None:
        with ProvenanceClient(server.address, ADMIN_TOKEN) as c:
            reports.append(c.verify_file(hostile))

    try:
        threads = [threading.Thread(target=upload) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(2.0)  # the two small uploads arrive and take the decode slots first
        with ProvenanceClient(server.address, ADMIN_TOKEN) as c:
            honest = c.verify_file(CAPTURE)
        for t in threads:
            t.join(timeout=120)
    finally:
        server.stop()
    assert honest.c2pa is not None and honest.c2pa["validation_state"] == "Valid"
    assert [r.c2pa and r.c2pa["error_kind"] for r in reports] == ["TooLarge", "TooLarge"]
    assert f"more than 16,384 boxes, over the {MAX_BMFF_BOXES:,} walked here" in str(
        reports[0].c2pa
    )


def _webp_with_chunks(n: int) -> bytes:
    """A 64x64 WebP with ``n`` empty ``JUNK`` chunks after its image chunk."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "WEBP")
    body = buf.getvalue()[12:] + struct.pack("<4sI", b"JUNK", 0) * n
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def test_the_reader_is_not_given_a_png_or_webp_over_the_chunk_limit(pool: ReaderPool) -> None:
    """c2pa-rs took 31 s over a PNG of 500,000 empty chunks (6 MB) and 26 s over a WebP
    of a million (8 MB): before, both ran past this 3 s limit (Timeout). Now they are
    refused unread; the generated PNG capture and a plain WebP are read as before."""
    limits = C2paLimits(timeout_s=3.0)
    png = read_c2pa(_with_empty_chunks(500_000), "image/png", limits=limits, pool=pool)
    assert (png.error_kind, png.error) == (
        "TooLarge",
        f"a PNG of more than {MAX_PNG_CHUNKS:,} chunks, the limit here:"
        " not given to the C2PA reader, so its Content Credentials were not checked"
        " (another C2PA validator, such as c2patool, can check them)",
    )
    webp = read_c2pa(_webp_with_chunks(1_000_000), "image/webp", limits=limits, pool=pool)
    assert (webp.error_kind, webp.error) == (
        "TooLarge",
        f"a WebP of more than {MAX_WEBP_CHUNKS:,} chunks, the limit here:"
        " not given to the C2PA reader, so its Content Credentials were not checked"
        " (another C2PA validator, such as c2patool, can check them)",
    )
    capture = FIXTURES / "generated" / "gen_ed25519_capture.png"
    assert read_c2pa(capture, "image/png", pool=pool).validation_state == "Valid"
    plain = read_c2pa(_webp_with_chunks(3), "image/webp", limits=limits, pool=pool)
    assert (plain.present, plain.error_kind) == (False, None)
    assert reader_walk_problem(_webp_with_chunks(MAX_WEBP_CHUNKS - 1), "image/webp") is None
    assert reader_walk_problem(_with_empty_chunks(MAX_PNG_CHUNKS - 3), "image/png") is None
