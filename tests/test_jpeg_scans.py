"""A JPEG's layout bounds its decoding cost (review att35): libjpeg decodes every scan
over every block of its components, whatever the output scale, so a progressive JPEG of
thousands of empty scans (10 bytes each) kept a decode slot busy for minutes; Pillow
reads the bytes before the first scan in Python, one at a time where they are fill or
stray bytes, so 20 MiB of them took 31 s. Real `prov serve` on loopback, real files made
with Pillow."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from PIL import Image

from clients.api import ProvenanceClient
from provenance.c2pa.container import MAX_JPEG_SEGMENTS as CONTAINER_MAX_SEGMENTS
from provenance.c2pa.container import strip_manifest_store
from provenance.core.errors import DecodeBudgetError, MediaError, TransportError
from provenance.media.image import (
    MAX_JPEG_METADATA_BYTES,
    MAX_JPEG_SCANS,
    MAX_JPEG_SEGMENTS,
    MAX_JPEG_STRAY_BYTES,
    decode_image,
    jpeg_layout,
)
from tests.conftest import ADMIN_TOKEN, FIXTURES, SAMPLES, ServerProc
from tests.memory import traced_in_child


def _progressive(mode: str = "L", side: int = 1024) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (side, side), 0).save(buf, "JPEG", progressive=True, quality=50)
    return buf.getvalue()


def _sos_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(start, header end, data end) of each SOS segment of a well-formed JPEG."""
    pos, found = 2, []
    while data[pos + 1] != 0xD9:
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if data[pos + 1] != 0xDA:
            pos += 2 + length
            continue
        end = pos + 2 + length
        while data[end] != 0xFF or data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
            end += 1
        found.append((pos, pos + 2 + length, end))
        pos = end
    return found


def _many_scans(extra: int, side: int = 1024) -> bytes:
    """A progressive grey JPEG whose last scan header is repeated ``extra`` more times
    with no data (libjpeg warns, pads with zeros, and decodes each over the picture)."""
    data = _progressive("L", side)
    start, header_end, data_end = _sos_segments(data)[-1]
    return data[:data_end] + data[start:header_end] * extra + b"\xff\xd9"


def refusal(server: ServerProc, path: Path) -> str:
    """The message of the RESOURCE_EXHAUSTED error `VerifyFile` of ``path`` gets from
    ``server`` (fails the test on any other outcome)."""
    with ProvenanceClient(server.address, ADMIN_TOKEN) as c, pytest.raises(TransportError) as e:
        c.verify_file(path)
    assert e.value.code == "RESOURCE_EXHAUSTED", e.value
    return str(e.value)


def test_scans_are_counted_as_encoders_write_them() -> None:
    """Baseline: 1 scan; Pillow's (libjpeg's) progressive script: 10 for colour, 6 for
    grey; a JPEG inside the EXIF block (a thumbnail) is not counted."""
    with Image.open(SAMPLES / "grace_hopper.jpg") as im:
        rgb = im.convert("RGB")
    for kw, want in (({}, 1), ({"progressive": True}, 10)):
        buf = io.BytesIO()
        rgb.save(buf, "JPEG", **kw)
        assert jpeg_layout(buf.getvalue()).scans == want
    assert jpeg_layout(_progressive("L")).scans == 6
    thumb = _many_scans(50, side=64)
    exif = Image.Exif()
    exif[0x010E] = "x"
    app1 = b"Exif\0\0" + exif.tobytes() + thumb  # an APP1 payload that holds 56 scans
    plain = _progressive("L")
    segment = b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1
    assert jpeg_layout(plain[:2] + segment + plain[2:]).scans == 6


def test_a_jpeg_over_the_scan_limit_is_refused_before_decoding() -> None:
    at_limit = _many_scans(MAX_JPEG_SCANS - 6)
    assert jpeg_layout(at_limit).scans == MAX_JPEG_SCANS
    assert decode_image(at_limit).width == 1024
    over = _many_scans(MAX_JPEG_SCANS - 5)
    with pytest.raises(DecodeBudgetError, match=f"more than {MAX_JPEG_SCANS} scans"):
        decode_image(over)
    # counting stops past the limit: a file of 100,000 scans costs no more to refuse
    assert jpeg_layout(_many_scans(100_000)).scans == MAX_JPEG_SCANS + 1


def test_server_refuses_a_jpeg_of_too_many_scans(server: ServerProc, tmp_path: Path) -> None:
    """VerifyFile of a 60 KB JPEG with 5,000 empty scans: RESOURCE_EXHAUSTED naming the
    scan limit. Before, the server decoded it (UNSIGNED), each scan over the whole
    picture: at 8000x8000 pixels such a 300 KB file held a decode slot for 133 s."""
    path = tmp_path / "scans.jpg"
    path.write_bytes(_many_scans(5000))
    assert f"more than {MAX_JPEG_SCANS} scans" in refusal(server, path)


def _with_header_junk(junk: bytes) -> bytes:
    """A small real JPEG with ``junk`` after its first segment (APP0)."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buf, "JPEG")
    data = buf.getvalue()
    assert data[2:4] == b"\xff\xe0"
    cut = 4 + struct.unpack(">H", data[4:6])[0]
    return data[:cut] + junk + data[cut:]


def test_stray_bytes_and_segments_before_the_picture_are_bounded() -> None:
    """Fill bytes or stray bytes before the first scan up to MAX_JPEG_STRAY_BYTES decode
    (libjpeg skips them); past it, refused before Pillow reads them. The same for more
    than MAX_JPEG_SEGMENTS 4-byte COM segments."""
    for byte in (b"\xff", b"\x00"):
        ok = _with_header_junk(byte * 1000)
        assert decode_image(ok).width == 64
        over = _with_header_junk(byte * (MAX_JPEG_STRAY_BYTES + 1))
        with pytest.raises(DecodeBudgetError, match="fill or stray bytes"):
            decode_image(over)
    assert decode_image(_with_header_junk(b"\xff\xfe\x00\x02" * 1000)).width == 64
    many = _with_header_junk(b"\xff\xfe\x00\x02" * MAX_JPEG_SEGMENTS)
    with pytest.raises(DecodeBudgetError, match="marker segments"):
        decode_image(many)


def test_server_refuses_a_jpeg_of_megabytes_of_fill_bytes(
    server: ServerProc, tmp_path: Path
) -> None:
    """VerifyFile of a 20 MiB JPEG that is all fill bytes after SOI: RESOURCE_EXHAUSTED
    at once. Before, Pillow's header parser read it a byte at a time (31 s here) and
    then found it undecodable."""
    path = tmp_path / "fill.jpg"
    path.write_bytes(_with_header_junk(b"\xff" * (20 << 20)))
    assert "fill or stray bytes" in refusal(server, path)


def test_stripping_a_manifest_store_after_megabytes_of_fill_bytes_holds_no_list_of_them(
    tmp_path: Path,
) -> None:
    """`strip_manifest_store` of a C2PA JPEG with 5 MiB of fill bytes before its first
    segment still removes the store, and its walk holds one range for the run: before,
    one (start, end) tuple per fill byte, 2.9 GB for 20 MiB (a `prov scan` worker
    stripping a hostile file). Past MAX_JPEG_SEGMENTS ranges (4-byte COM segments) the
    walk is refused. Measured in a child process (`tests.memory`: tracemalloc counts
    every thread)."""
    path = FIXTURES / "c2pa" / "generated" / "gen_ed25519_capture.jpg"
    signed = path.read_bytes()
    stripped = strip_manifest_store(signed, "image/jpeg")
    assert len(stripped) < len(signed)
    code = """
from pathlib import Path
from provenance.c2pa.container import strip_manifest_store
signed = Path(sys.argv[1]).read_bytes()
fill = b"\\xff" * (5 << 20)
filled = signed[:2] + fill + signed[2:]
out, _, peak = traced(lambda: strip_manifest_store(filled, "image/jpeg"))
stripped = strip_manifest_store(signed, "image/jpeg")
tell(out == stripped[:2] + fill + stripped[2:], peak)
"""
    (same, peak), _ = traced_in_child(code, [str(path)], tmp_path)
    assert same
    assert peak < 64 << 20, f"{peak >> 20} MiB traced"
    comments = b"\xff\xfe\x00\x02" * (CONTAINER_MAX_SEGMENTS + 1)
    with pytest.raises(MediaError, match="marker segments"):
        strip_manifest_store(signed[:2] + comments + signed[2:], "image/jpeg")


def _with_app_segments(identifier: bytes, payload: bytes, count: int, marker: int) -> bytes:
    """A small real JPEG with ``count`` APPn segments (``marker``) of ``identifier`` +
    ``payload``, each the largest a segment holds (64 KiB), after its APP0."""
    body = identifier + payload * ((0xFFFF - 2 - len(identifier)) // len(payload))
    segment = bytes((0xFF, marker)) + struct.pack(">H", len(body) + 2) + body
    return _with_header_junk(segment * count)


def _exif_segments(count: int) -> bytes:
    return _with_app_segments(b"Exif\x00\x00", b"\x00", count, 0xE1)


def _photoshop_segments(count: int) -> bytes:
    """APP13 segments packed with empty image resources (12 bytes each): Pillow walks
    each resource of each segment in Python."""
    resource = b"8BIM" + b"\x04\x04" + b"\x00\x00" + b"\x00\x00\x00\x00"
    return _with_app_segments(b"Photoshop 3.0\x00", resource, count, 0xED)


def _quantization_segments(count: int) -> bytes:
    """DQT segments each packed with 1,008 8-bit tables (65 bytes each): Pillow reads
    each table in Python, 6 ms a full segment (25 MiB of them: 2.5 s to open)."""
    table = b"\x00" + bytes(range(1, 65))
    return _with_app_segments(b"", table, count, 0xDB)


def test_segments_pillow_parses_in_python_are_bounded_before_it_reads_them() -> None:
    """Pillow joins each EXIF APP1 segment to the ones before (``info["exif"] +=``):
    the copies grow with the square of their number, so 131 MB of 2,000 EXIF segments
    held Image.open for 166 s (review att45); and it walks each APP13 Photoshop
    resource and quantization table in Python, 6 ms a full segment (25 s for a 256 MiB
    file). An encoder writes one EXIF APP1 of at most 64 KiB; past MAX_JPEG_METADATA_BYTES
    of these segments the file is refused before Pillow reads a byte."""
    fits = MAX_JPEG_METADATA_BYTES // 0x10000 - 1  # room for the file's own tables
    assert decode_image(_exif_segments(fits)).width == 64
    assert decode_image(_photoshop_segments(fits)).width == 64
    assert decode_image(_quantization_segments(fits)).width == 64
    for over in (
        _exif_segments(fits + 3),
        _photoshop_segments(fits + 3),
        _quantization_segments(fits + 3),
    ):
        with pytest.raises(DecodeBudgetError, match="EXIF, Photoshop and quantization"):
            decode_image(over)
    # the walk stops counting past the limit
    assert jpeg_layout(_exif_segments(4 * fits)).metadata_bytes < MAX_JPEG_METADATA_BYTES + 0x10000


def test_server_refuses_a_jpeg_of_thousands_of_exif_segments(
    server: ServerProc, tmp_path: Path
) -> None:
    """VerifyFile of a 26 MB JPEG of 400 EXIF segments: RESOURCE_EXHAUSTED naming the
    limit. Before, UNSIGNED after Pillow's quadratic joining of them (a 131 MB file of
    2,000 held a decode slot for 124 s)."""
    path = tmp_path / "exif.jpg"
    path.write_bytes(_exif_segments(400))
    assert "EXIF, Photoshop and quantization" in refusal(server, path)


def _frame_header_segments(count: int, marker: int = 0xC0) -> bytes:
    """Frame headers (SOFn, or DHP, which Pillow reads with the same code) each the
    largest a segment holds, packed with 21,843 component entries: Pillow keeps a tuple
    for each entry of each header in Python (``self.layer``), whatever the header's own
    count of components says."""
    return _with_app_segments(b"\x08\x00\x10\x00\x10\x03", b"\x01\x11\x00", count, marker)


def test_frame_headers_pillow_parses_in_python_are_bounded_too() -> None:
    """Pillow reads each frame header's component list into a list of tuples, about 30
    times the header's bytes in memory: a 64 MiB file of 1,024 of them took 8 s and
    2 GB in Image.open before libjpeg found it undecodable (a 1 GiB upload: 32 GB).
    An encoder writes one frame header of at most 773 bytes (255 components); they count
    with the EXIF, Photoshop and quantization-table segments."""
    fits = MAX_JPEG_METADATA_BYTES // 0x10000 - 1
    for marker in (0xC0, 0xC2, 0xCF, 0xDE):  # baseline, progressive, SOF15, DHP
        assert jpeg_layout(_frame_header_segments(fits, marker)).metadata_bytes > fits << 16
        with pytest.raises(DecodeBudgetError, match="frame headers"):
            decode_image(_frame_header_segments(fits + 3, marker))
    honest = jpeg_layout(_progressive("RGB", 64))
    assert honest.scans == 10 and honest.metadata_bytes < 1000, honest


def test_server_refuses_a_jpeg_of_many_frame_headers(server: ServerProc, tmp_path: Path) -> None:
    """VerifyFile of a 10 MiB JPEG of 160 full frame headers: RESOURCE_EXHAUSTED naming
    the limit (seen failing first: UNSIGNED, after Pillow built 3.5 million tuples)."""
    path = tmp_path / "frames.jpg"
    path.write_bytes(_frame_header_segments(160))
    assert "frame headers" in refusal(server, path)
