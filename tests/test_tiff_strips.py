"""A TIFF's strip and tile count bounds its decoding cost (review att35): Pillow makes a
Python tile per strip and decodes each in turn, so a 61 MiB TIFF of 8 million one-byte
strips of a 64x64 picture took 105 s and 2.4 GB. Real `prov serve` on loopback."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from provenance.core.errors import DecodeBudgetError
from provenance.media.image import MAX_TIFF_STRIPS, decode_image, tiff_problem
from tests.conftest import ServerProc
from tests.test_jpeg_scans import refusal


def _strips(n: int, order: str = "<") -> bytes:
    """A 64x64 8-bit grey TIFF whose first image is cut into ``n`` strips, each one byte
    (all at the same offset)."""

    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        if kind == 3 and count == 1:  # a SHORT sits in the first 2 bytes of the value
            return struct.pack(order + "HHIHH", tag, kind, count, value, 0)
        return struct.pack(order + "HHII", tag, kind, count, value)

    arrays = 8 + 2 + 9 * 12 + 4
    pixels = arrays + 8 * n
    ifd = struct.pack(order + "H", 9) + b"".join(
        [
            entry(256, 4, 1, 64),
            entry(257, 4, 1, 64),
            entry(258, 3, 1, 8),
            entry(259, 3, 1, 1),
            entry(262, 3, 1, 1),
            entry(273, 4, n, arrays),
            entry(277, 3, 1, 1),
            entry(278, 4, 1, 1),
            entry(279, 4, n, arrays + 4 * n),
        ]
    )
    magic = b"II*\x00" if order == "<" else b"MM\x00*"
    offsets = struct.pack(f"{order}{n}I", *([pixels] * n))
    counts = struct.pack(f"{order}{n}I", *([1] * n))
    return magic + struct.pack(order + "I", 8) + ifd + b"\0" * 4 + offsets + counts + b"\x80" * 4096


def test_tiff_strips_within_the_limit_decode_and_past_it_are_refused() -> None:
    for order in "<>":
        assert tiff_problem(_strips(64, order)) is None
        assert decode_image(_strips(64, order)).width == 64
        problem = tiff_problem(_strips(MAX_TIFF_STRIPS + 1, order))
        assert problem is not None and f"{MAX_TIFF_STRIPS + 1:,} strips" in problem
    with pytest.raises(DecodeBudgetError, match="strips or tiles"):
        decode_image(_strips(MAX_TIFF_STRIPS + 1))
    for kw in ({}, {"compression": "tiff_lzw"}, {"big_tiff": True}):
        buf = io.BytesIO()
        Image.fromarray(np.zeros((300, 200, 3), np.uint8)).save(buf, "TIFF", **kw)
        assert tiff_problem(buf.getvalue()) is None, kw


def test_server_refuses_a_tiff_of_a_million_strips(server: ServerProc, tmp_path: Path) -> None:
    """VerifyFile of an 8 MiB TIFF of a million one-byte strips: RESOURCE_EXHAUSTED
    naming the limit. Before, the server decoded it strip by strip (UNSIGNED)."""
    path = tmp_path / "strips.tif"
    path.write_bytes(_strips(1_000_000))
    assert f"over the limit of {MAX_TIFF_STRIPS:,}" in refusal(server, path)
