"""A GIF's blocks before its first image bound its decoding cost (review att35): Pillow
reads them in Python one sub-block at a time, so a million graphic control extensions
(7 MiB) took 1.6 s and 256 MiB of them over a minute. Real `prov serve` on loopback,
real files made with Pillow."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from provenance.core.errors import DecodeBudgetError
from provenance.media.image import MAX_GIF_BLOCKS, decode_image, gif_block_count
from tests.conftest import ServerProc
from tests.test_jpeg_scans import refusal

#: A graphic control extension: introducer, label, one 4-byte sub-block, terminator.
_GCE = b"\x21\xf9\x04\x00\x00\x00\x00\x00"


def _with_blocks(extra: bytes) -> bytes:
    """A 64x64 GIF (global colour table, no extension) with ``extra`` before its image."""
    buf = io.BytesIO()
    Image.new("P", (64, 64), 3).save(buf, "GIF")
    data = buf.getvalue()
    first = 13 + (3 << ((data[10] & 7) + 1))
    assert data[10] & 0x80 and data[first] == 0x2C
    return data[:first] + extra + data[first:]


def test_gif_blocks_are_counted_before_the_first_image() -> None:
    assert gif_block_count(_with_blocks(b"")) == 0
    assert gif_block_count(_with_blocks(_GCE * 3)) == 6  # each: the block and its sub-block
    comment = b"\x21\xfe" + b"\x05hello" + b"\x03abc" + b"\x00"
    assert gif_block_count(_with_blocks(comment)) == 3
    buf = io.BytesIO()
    frames = [Image.new("P", (64, 64), i) for i in range(3)]
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], loop=0)
    assert gif_block_count(buf.getvalue()) < 10  # later frames' blocks are not counted


def test_a_gif_over_the_block_limit_is_refused_before_decoding() -> None:
    at_limit = _with_blocks(_GCE * (MAX_GIF_BLOCKS // 2))
    assert gif_block_count(at_limit) == MAX_GIF_BLOCKS
    assert decode_image(at_limit).width == 64
    with pytest.raises(DecodeBudgetError, match="blocks before its first image"):
        decode_image(_with_blocks(_GCE * (MAX_GIF_BLOCKS // 2 + 1)))


def test_server_refuses_a_gif_of_a_million_extensions(server: ServerProc, tmp_path: Path) -> None:
    """VerifyFile of a 7 MiB GIF of a million graphic control extensions:
    RESOURCE_EXHAUSTED naming the block limit. Before, the server decoded it (UNSIGNED)
    after Pillow had read every block."""
    path = tmp_path / "blocks.gif"
    path.write_bytes(_with_blocks(_GCE * 1_000_000))
    assert f"more than {MAX_GIF_BLOCKS:,} blocks" in refusal(server, path)
