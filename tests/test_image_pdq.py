"""`provenance.media.assets.image_pdq`, the scanner's decode and hashes without
`inspect_image`'s facts and objects: the same 8 hashes, the same quality and the same
errors as `inspect_image` on the same bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from provenance.core.errors import MediaError
from provenance.media.assets import AssetLimits, image_pdq, inspect_image
from tests.conftest import SAMPLES


def _jpeg(seed: int, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _flat_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 90, 90)).save(buf, "PNG")  # PDQ quality 0
    return buf.getvalue()


CASES = [
    *[(SAMPLES / n).read_bytes() for n in ("grace_hopper.jpg", "chelsea.png", "rocket.jpg")],
    _jpeg(1, (160, 120)),
    _jpeg(2, (2000, 1500)),  # decoded at a reduced DCT scale for PDQ
    _flat_png(),
]


@pytest.mark.parametrize("data", CASES)
def test_image_pdq_gives_inspect_images_hashes(data: bytes) -> None:
    limits = AssetLimits()
    asset = inspect_image(bytes(32), data, limits)
    hashes, quality = image_pdq(data, limits)
    assert hashes == [asset.soft.hash, *[h.hash for h in asset.facts.dihedral_soft_bindings]]
    assert quality == asset.soft.quality
    assert all(h.quality == quality for h in asset.facts.dihedral_soft_bindings)


@pytest.mark.parametrize(
    ("data", "limits"),
    [
        (b"", AssetLimits()),
        (b"\xff\xd8\xff\xe0 not a JPEG", AssetLimits()),
        (CASES[0][: len(CASES[0]) // 2], AssetLimits()),
        (CASES[0], AssetLimits(max_image_bytes=100)),
        (CASES[0], AssetLimits(max_pixels=100)),
    ],
)
def test_image_pdq_refuses_as_inspect_image(data: bytes, limits: AssetLimits) -> None:
    with pytest.raises(MediaError) as want:
        inspect_image(bytes(32), data, limits)
    with pytest.raises(MediaError) as got:
        image_pdq(data, limits)
    assert type(got.value) is type(want.value)
    assert str(got.value) == str(want.value)
