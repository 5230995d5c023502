"""`prov scan` decodes images within the server's default decode budget
(`provenance.media.budget.DEFAULT_DECODE_BUDGET_BYTES`): a small file whose header
declares a large picture is looked up by SHA-256 only, with the reason, instead of being
decoded whatever memory it takes (h-media50: the scanner's limits had no budget, so a
44-byte WebP whose canvas is 10000x10000 took 2.2 GB and 5 s in a scan worker, a
292 KB PNG of 10000x10000 1.4 GB, one per worker at once)."""

from __future__ import annotations

import io
import struct
from typing import cast

import pytest
from PIL import Image

from clients.api import ProvenanceClient
from clients.scan.hashing import measure
from clients.scan.sources import EntryItem, ScanLimits
from clients.scan.worker import ScanConfig, _detect
from provenance.media.budget import DEFAULT_DECODE_BUDGET_BYTES


def _webp_with_canvas(width: int, height: int) -> bytes:
    """A lossless animated WebP of two 16x16 frames whose VP8X header declares a canvas
    of ``width`` x ``height`` (what the decoder allocates and composes the frames on)."""
    frames = [Image.new("RGB", (16, 16), (k * 90, 0, 0)) for k in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    data = bytearray(buf.getvalue())
    at = data.find(b"VP8X") + 8 + 4  # the chunk's header, then its flags
    data[at : at + 6] = struct.pack("<I", width - 1)[:3] + struct.pack("<I", height - 1)[:3]
    return bytes(data)


def test_the_scanner_has_the_server_s_default_decode_budget() -> None:
    assert ScanLimits().assets.max_decode_bytes == DEFAULT_DECODE_BUDGET_BYTES == 384 << 20


def test_an_image_over_the_budget_is_looked_up_by_sha256_only_with_the_reason() -> None:
    data = _webp_with_canvas(4800, 3600)  # 17 MP: about 494 MiB to decode and hash
    m = measure(EntryItem("x.zip!big.webp", data, "x.zip"), ScanLimits().assets)
    assert m.kind == "file" and not m.soft, m
    assert m.note is not None
    assert "image is 4800x3600: decoding it needs about 494 MiB" in m.note, m.note
    assert "decode budget of 384 MiB per image" in m.note, m.note
    assert m.note.endswith("looked up by SHA-256 only"), m.note
    small = _webp_with_canvas(2000, 1500)  # within it: hashed as before
    m = measure(EntryItem("x.zip!small.webp", small, "x.zip"), ScanLimits().assets)
    assert m.kind == "media" and len(m.soft) == 1, m


def test_the_local_detector_is_not_given_a_jpeg_over_the_budget_at_full_size() -> None:
    """A JPEG over the budget is hashed at a smaller DCT scale, but the detector reads
    native pixels: as on the server (`ImageAsset.rgb`), it is not scored when its
    full-size decode is over the budget (16 bytes a pixel: 24 MP fits, 30.7 MP does
    not). Before, `prov scan --detect` decoded it at full size whatever its size."""
    pytest.importorskip("torch")
    buf = io.BytesIO()
    Image.new("RGB", (6400, 4800), (90, 120, 150)).save(buf, "JPEG", quality=50)
    item = EntryItem("x.zip!big.jpg", buf.getvalue(), "x.zip")
    config = ScanConfig(server="127.0.0.1:1", detect=True)
    m = measure(item, config.limits.assets)
    assert m.kind == "media", m  # hashed at 1/8 scale
    block = _detect(cast("ProvenanceClient", None), item, m, config)  # no call is made
    assert block["available"] is False, block
    note = block["note"]
    assert "not scored: the detector reads native pixels" in note, note
    assert "6400x4800 image at full size needs about 468 MiB" in note, note
    assert "decode budget of 384 MiB" in note, note


def test_a_phone_sized_webp_is_hashed_under_the_default_budget() -> None:
    """h-revmedia50: WebP was estimated at 34 bytes a pixel, so a 4032x3024 photo (a
    12 MP phone camera's size) saved as WebP was "about 395 MiB" and looked up by SHA-256
    only, by `prov scan` and the server; its decode and PDQ hash peak at 21.8-22.9 bytes a
    pixel here (12 and 24 MP, lossy and lossless, with and without alpha), and it is now
    counted as other formats are, 30 (349 MiB)."""
    data = _webp_with_canvas(4032, 3024)
    m = measure(EntryItem("x.zip!phone.webp", data, "x.zip"), ScanLimits().assets)
    assert m.kind == "media" and len(m.soft) == 1, m


def test_a_progressive_jpeg_counts_its_full_size_coefficients_at_a_reduced_scale() -> None:
    """h-revmedia50: libjpeg keeps every DCT coefficient of a progressive JPEG (2 bytes
    each, 64 a block of each component) until its last scan, whatever scale it outputs,
    so a 1.8 MB progressive 4:4:4 JPEG of 10000x10000, estimated at 1/8 scale (about 45
    MiB), peaked 578 MB over the 384 MiB budget; a baseline one at 21 MB. Its
    coefficients are counted now: 9000x9000 needs about 463 MiB of them and is refused,
    the baseline file of the same picture is still hashed at a smaller scale."""
    picture = Image.new("RGB", (9000, 9000), (90, 120, 150))
    for progressive, hashed in ((False, True), (True, False)):
        buf = io.BytesIO()
        picture.save(buf, "JPEG", quality=90, progressive=progressive, subsampling=0)
        m = measure(EntryItem("x.zip!big.jpg", buf.getvalue(), "x.zip"), ScanLimits().assets)
        assert (m.kind == "media") is hashed, (progressive, m)
        if not hashed:
            assert m.note is not None and "progressive" in m.note, m.note
