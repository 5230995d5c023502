"""A JPEG's scan count bounds its decoding cost (review att35): libjpeg decodes every scan
over every block of its components, whatever the output scale, so a progressive JPEG of
thousands of empty scans (10 bytes each) kept a decode slot busy for minutes. Real
`prov serve` on loopback, real files made with Pillow."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from PIL import Image

from clients.api import ProvenanceClient
from provenance.core.errors import DecodeBudgetError, TransportError
from provenance.media.image import MAX_JPEG_SCANS, decode_image, jpeg_scan_count
from tests.conftest import ADMIN_TOKEN, SAMPLES, ServerProc


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


def test_scans_are_counted_as_encoders_write_them() -> None:
    """Baseline: 1 scan; Pillow's (libjpeg's) progressive script: 10 for colour, 6 for
    grey; a JPEG inside the EXIF block (a thumbnail) is not counted."""
    with Image.open(SAMPLES / "grace_hopper.jpg") as im:
        rgb = im.convert("RGB")
    for kw, want in (({}, 1), ({"progressive": True}, 10)):
        buf = io.BytesIO()
        rgb.save(buf, "JPEG", **kw)
        assert jpeg_scan_count(buf.getvalue()) == want
    assert jpeg_scan_count(_progressive("L")) == 6
    thumb = _many_scans(50, side=64)
    exif = Image.Exif()
    exif[0x010E] = "x"
    app1 = b"Exif\0\0" + exif.tobytes() + thumb  # an APP1 payload that holds 56 scans
    plain = _progressive("L")
    segment = b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1
    assert jpeg_scan_count(plain[:2] + segment + plain[2:]) == 6


def test_a_jpeg_over_the_scan_limit_is_refused_before_decoding() -> None:
    at_limit = _many_scans(MAX_JPEG_SCANS - 6)
    assert jpeg_scan_count(at_limit) == MAX_JPEG_SCANS
    assert decode_image(at_limit).width == 1024
    over = _many_scans(MAX_JPEG_SCANS - 5)
    with pytest.raises(DecodeBudgetError, match=f"more than {MAX_JPEG_SCANS} scans"):
        decode_image(over)
    # counting stops past the limit: a file of 100,000 scans costs no more to refuse
    assert jpeg_scan_count(_many_scans(100_000)) == MAX_JPEG_SCANS + 1


def test_server_refuses_a_jpeg_of_too_many_scans(server: ServerProc, tmp_path: Path) -> None:
    """VerifyFile of a 60 KB JPEG with 5,000 empty scans: RESOURCE_EXHAUSTED naming the
    scan limit. Before, the server decoded it (UNSIGNED), each scan over the whole
    picture: at 8000x8000 pixels such a 300 KB file held a decode slot for 133 s."""
    path = tmp_path / "scans.jpg"
    path.write_bytes(_many_scans(5000))
    with ProvenanceClient(server.address, ADMIN_TOKEN) as c, pytest.raises(TransportError) as e:
        c.verify_file(path)
    assert e.value.code == "RESOURCE_EXHAUSTED", e.value
    assert f"more than {MAX_JPEG_SCANS} scans" in str(e.value)
