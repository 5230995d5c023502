"""A PNG's chunk count bounds its decoding cost (review att35): Pillow reads every chunk
header in Python, so a PNG of a million empty ancillary chunks (11 MiB) took 10.9 s to
decode. Real `prov serve` on loopback, real files made with Pillow."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from provenance.c2pa.container import (
    MAX_PNG_CHUNKS,
    content_sha256,
    manifest_store,
    strip_and_locate,
)
from provenance.core.errors import DecodeBudgetError, MediaError
from provenance.media.image import decode_image, png_chunk_count
from tests.conftest import SAMPLES, Cli, ServerProc
from tests.test_jpeg_scans import refusal


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _with_empty_chunks(n: int) -> bytes:
    """A 64x64 PNG with ``n`` empty ancillary chunks (``abCd``) after IHDR."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "PNG")
    data = buf.getvalue()
    after_ihdr = 8 + 12 + 13
    return data[:after_ihdr] + _chunk(b"abCd", b"") * n + data[after_ihdr:]


def test_png_chunks_are_counted_up_to_iend() -> None:
    plain = _with_empty_chunks(0)
    assert png_chunk_count(plain) == 3  # IHDR, IDAT, IEND
    assert png_chunk_count(plain + _chunk(b"abCd", b"") * 10) == 3  # after IEND: not read
    assert png_chunk_count((SAMPLES / "chelsea.png").read_bytes()) < 100


def test_a_png_over_the_chunk_limit_is_refused_before_decoding() -> None:
    at_limit = _with_empty_chunks(MAX_PNG_CHUNKS - 3)
    assert png_chunk_count(at_limit) == MAX_PNG_CHUNKS
    assert decode_image(at_limit).width == 64
    with pytest.raises(DecodeBudgetError, match="chunks"):
        decode_image(_with_empty_chunks(MAX_PNG_CHUNKS - 2))


def test_server_refuses_a_png_of_a_million_chunks(server: ServerProc, tmp_path: Path) -> None:
    """VerifyFile of an 11 MiB PNG of a million empty chunks: RESOURCE_EXHAUSTED naming
    the chunk limit. Before, the server decoded it (UNSIGNED) after reading each chunk."""
    path = tmp_path / "chunks.png"
    path.write_bytes(_with_empty_chunks(1_000_000))
    assert f"more than {MAX_PNG_CHUNKS:,} chunks" in refusal(server, path)


@pytest.mark.parametrize("walk", [strip_and_locate, content_sha256, manifest_store])
def test_the_c2pa_container_walk_refuses_a_png_over_the_chunk_limit(walk: Any) -> None:
    """The C2PA container's PNG walks (stripping, the content hash, the manifest store)
    stop at the same limit (review rev35: 2 million empty chunks, 22 MiB, took about 2 s
    per walk, so 256 MiB about 25 s); at the limit a PNG is walked as before."""
    at_limit = _with_empty_chunks(MAX_PNG_CHUNKS - 3)
    try:
        walk(at_limit, "image/png")
    except MediaError as e:  # manifest_store: this PNG carries none, which is found
        assert str(e) == "the file carries no C2PA manifest store"
    with pytest.raises(MediaError, match=f"more than {MAX_PNG_CHUNKS:,} chunks"):
        walk(_with_empty_chunks(MAX_PNG_CHUNKS - 2), "image/png")


def _with_chunks(before_idat: bytes = b"", after_idat: bytes = b"") -> bytes:
    """An 8x8 PNG with ``before_idat`` after IHDR and ``after_idat`` before IEND."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    data = buf.getvalue()
    idat, iend = data.index(b"IDAT") - 4, data.index(b"IEND") - 4
    return data[:idat] + before_idat + data[idat:iend] + after_idat + data[iend:]


_TWO_MIB = zlib.compress(b"\0" * (2 << 20))  # over Pillow's 1 MiB a compressed chunk


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (_with_chunks(_chunk(b"zTXt", b"k\0\0" + _TWO_MIB)), "text or colour-profile chunk"),
        (_with_chunks(b"", _chunk(b"zTXt", b"k\0\0" + _TWO_MIB)), "text or colour-profile"),
        (_with_chunks(b"", _chunk(b"iTXt", b"k\0\1\0\0\0" + _TWO_MIB)), "colour-profile"),
        (_with_chunks(_chunk(b"iCCP", b"p\0\0" + _TWO_MIB)), "text or colour-profile chunk"),
        (
            _with_chunks(_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"a" * 10**6)) * 70),
            "text chunks hold more than 64 MiB",
        ),
    ],
)
def test_a_png_chunk_past_the_decompression_limit_is_named(data: bytes, said: str) -> None:
    """A zTXt, iTXt or iCCP chunk that decompresses past Pillow's limit (1 MiB each, 64
    MiB of text in all) was reported as "truncated or corrupt image: the PNG data cannot
    be decoded": the file is whole, and the message says which limit it passed."""
    with pytest.raises(MediaError) as caught:
        decode_image(data)
    message = str(caught.value)
    assert said in message and "limit" in message and "corrupt" not in message, message


def test_sign_and_verify_refuse_a_png_past_the_text_chunk_limit_alike(
    enrolled: Cli, tmp_path: Path
) -> None:
    """A PNG whose zTXt chunk inflates past the 1 MiB a chunk may (Pillow's
    `PngImagePlugin.MAX_TEXT_CHUNK`, on both sides) is over a decoding limit, not
    damaged: `prov sign` refuses it naming the limit, and `prov verify` of the same file,
    unlogged, is refused naming it too (RESOURCE_EXHAUSTED, as for a PNG past the chunk
    count: no pixels, so no search for near copies), not answered UNSIGNED as if its
    copies had been looked for. Before: sign "not signed: ... the limit for one chunk
    here" (exit 1), verify UNSIGNED (exit 11), "could not decode the image: ..."."""
    path = tmp_path / "text.png"
    path.write_bytes(_with_chunks(b"", _chunk(b"zTXt", b"k\0\0" + _TWO_MIB)))
    limit = "decompresses to more than 1 MiB, the limit for one chunk here"
    rc, _, err = enrolled("sign", str(path))
    assert rc == 1 and "not signed:" in err and limit in err, (rc, err)
    rc, out, err = enrolled("verify", str(path))
    assert rc == 1 and "UNSIGNED" not in out, (rc, out, err)
    assert limit in err and "[RESOURCE_EXHAUSTED]" in err, err
    assert "was not compared with signed captures as a re-encoded copy" in err, err


#: A child that sets Pillow's PNG text limits as another Pillow release might (1 KiB a
#: chunk, and a much higher one) before our modules load, then decodes two PNGs: one with
#: a zTXt chunk of 4 KiB decompressed, one of 2 MiB.
_OTHER_PILLOW = """
import io, struct, sys, zlib
from PIL import Image, PngImagePlugin
PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY = int(sys.argv[1]), int(sys.argv[2])
from provenance.core.errors import DecodeBudgetError
from provenance.media.image import decode_image
def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
buf = io.BytesIO()
Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
data = buf.getvalue()
idat = data.index(b"IDAT") - 4
for size in (4 << 10, 2 << 20):
    png = data[:idat] + chunk(b"zTXt", b"k\\0\\0" + zlib.compress(b"a" * size)) + data[idat:]
    try:
        print(size, decode_image(png).width)
    except DecodeBudgetError as e:
        print(size, "refused:", e)
"""


@pytest.mark.parametrize("pillows", [(1 << 10, 64 << 10), (1 << 30, 1 << 34)])
def test_the_png_text_limits_are_ours_whatever_pillows_defaults(
    pillows: tuple[int, int],
) -> None:
    """`prov sign` and the server refuse a PNG whose compressed text chunk inflates past
    1 MiB because both apply the same limit; that limit is set by our code at import
    (`provenance.media.image.PNG_MAX_TEXT_CHUNK`, `PNG_MAX_TEXT_MEMORY`), not left to
    Pillow's defaults, which a client and a server on other Pillow releases could hold
    differently: in a child whose Pillow held other limits before our modules loaded, a
    4 KiB text chunk is decoded and a 2 MiB one refused naming 1 MiB. Before (Pillow's
    defaults relied on), the child with 1 KiB refused the 4 KiB chunk and the one with
    1 GiB decoded the 2 MiB chunk."""
    out = subprocess.run(
        [sys.executable, "-c", _OTHER_PILLOW, *map(str, pillows)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    small, big = out.stdout.splitlines()
    assert small == "4096 8", out.stdout
    assert big.startswith("2097152 refused:") and "more than 1 MiB" in big, out.stdout
