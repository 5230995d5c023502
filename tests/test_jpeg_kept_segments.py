"""A JPEG's application and comment segments count in the decode budget (h-files51).

Pillow keeps a copy of every APPn and COM segment before the first scan
(``JpegImageFile.applist``), and its colour profile joined once more, for as long as the
image is open; the budget counted pixels and coefficients only. Measured before
(bench/bench_decode_formats.py): a 12 MP JPEG carrying 4,000 APP1 XMP or APP4 segments
(250 MiB, within the 256 MiB image limit) peaked 261 MiB over its start, where the
budget counted 21 MiB (decoded at 1/4 scale); the same segments on a progressive JPEG
whose coefficients the budget counts near its limit took the decode past the budget.
Real `prov serve` on loopback, real files made with Pillow."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from clients.api import ProvenanceClient
from provenance.core.errors import DecodeBudgetError, TransportError
from provenance.media.image import decode_image, jpeg_layout
from tests.conftest import ADMIN_TOKEN, ServerProc, start_server
from tests.memory import traced_in_child

_MIB = 1 << 20


def _progressive(side: int) -> bytes:
    """A progressive 4:4:4 JPEG of ``side`` x ``side`` (its coefficients: 6 bytes a pixel)."""
    buf = io.BytesIO()
    picture = Image.radial_gradient("L").resize((side, side)).convert("RGB")
    picture.save(buf, "JPEG", quality=90, progressive=True, subsampling=0)
    return buf.getvalue()


def _with_app4(data: bytes, mib: int) -> bytes:
    """``data`` (a JPEG) with at least ``mib`` MiB of full APP4 segments (by their
    lengths) after its SOI."""
    body = bytes(0xFFFF - 2)
    segment = b"\xff\xe4" + struct.pack(">H", len(body) + 2) + body
    count = -(-mib * _MIB // 0xFFFF)
    return data[:2] + segment * count + data[2:]


def test_application_segments_are_counted_as_the_walk_finds_them() -> None:
    plain = _progressive(64)
    assert jpeg_layout(plain).kept_bytes < 100  # a JFIF APP0 of 16 bytes
    layout = jpeg_layout(_with_app4(plain, 2))
    assert 2 * _MIB <= layout.kept_bytes < 2 * _MIB + 0x10000, layout


def test_a_jpeg_s_segments_and_coefficients_together_over_the_budget_are_refused() -> None:
    """1400x1400 progressive 4:4:4: 11 MiB of coefficients and 14 MiB for its decode at
    1/2 scale fit a 32 MiB budget alone (hashed), and with 24 MiB of APP4 segments do not
    at any scale. Before, the segments were not counted and the second file was hashed
    too."""
    plain = _progressive(1400)
    assert decode_image(plain, max_decode_bytes=32 * _MIB, pdq_min_side=512).scale == 2
    with pytest.raises(DecodeBudgetError) as e:
        decode_image(_with_app4(plain, 24), max_decode_bytes=32 * _MIB, pdq_min_side=512)
    assert "application and comment segments" in str(e.value), e.value
    assert "decode budget of 32 MiB" in str(e.value), e.value


def test_segments_alone_over_the_budget_are_refused_before_pillow_copies_them(
    tmp_path: Path,
) -> None:
    """40 MiB of APP4 segments on a 64x64 JPEG under a 16 MiB budget: refused from the
    marker walk, before Pillow reads (and copies) a segment. Measured in a child process
    (`tests.memory`: tracemalloc counts every thread)."""
    (tmp_path / "app4.jpg").write_bytes(_with_app4(_progressive(64), 40))
    code = """
from pathlib import Path
from provenance.media.image import decode_image
data = Path(sys.argv[1]).read_bytes()
e, _, peak = traced(lambda: decode_image(data, max_decode_bytes=16 << 20))
tell(type(e).__name__, str(e), peak)
"""
    (kind, said, peak), _ = traced_in_child(code, ["app4.jpg"], tmp_path)
    assert kind == DecodeBudgetError.__name__, said
    assert "40 MiB of application and comment segments" in said, said
    assert peak < 4 * _MIB, peak


@pytest.fixture
def small_budget(server_db: Path | str) -> Iterator[ServerProc]:
    srv = start_server(server_db, "--decode-budget-mb", "32")
    yield srv
    srv.stop()


def test_server_refuses_a_jpeg_whose_segments_take_it_over_the_budget(
    small_budget: ServerProc, tmp_path: Path
) -> None:
    """VerifyFile under `--decode-budget-mb 32` of the 1400x1400 progressive JPEG with
    24 MiB of APP4 segments: RESOURCE_EXHAUSTED naming them (before: hashed, UNSIGNED)."""
    path = tmp_path / "kept.jpg"
    path.write_bytes(_with_app4(_progressive(1400), 24))
    with (
        ProvenanceClient(small_budget.address, ADMIN_TOKEN) as c,
        pytest.raises(TransportError) as e,
    ):
        c.verify_file(path)
    assert e.value.code == "RESOURCE_EXHAUSTED", e.value
    assert "application and comment segments" in str(e.value), e.value
