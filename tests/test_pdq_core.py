"""The float32-luma PDQ path gives pdqhash.compute's hash on the shared PDQ vectors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pdqhash
import pytest
from PIL import Image

from provenance.core.binding import PDQ_MIN_QUALITY, hamming
from provenance.core.pdq_core import (
    _CORE,
    _bits,
    _dct16,
    _down_rows,
    _hashes,
    _luma_rows,
    _tent,
    pdq_dihedral256,
    pdq_hash256,
)

PHASH = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "phash"
with (PHASH / "README.tsv").open(newline="") as f:
    IMAGES = sorted(
        {
            r["file"]
            for r in csv.DictReader(f, delimiter="\t")
            if r["file"].lower().endswith((".jpg", ".jpeg", ".png"))
        }
    )


def _float64_path(rgb: np.ndarray) -> tuple[bytes, int]:
    bits, quality = pdqhash.compute(rgb)
    return np.packbits(bits.astype(np.uint8)).tobytes(), int(quality)


def test_the_cpp_core_is_loaded() -> None:
    # pdqhash 0.2.8 exports the functions; if this fails the fallback is in use.
    assert _CORE is not None


def test_equal_to_pdqhash_on_every_shared_vector() -> None:
    assert len(IMAGES) >= 30
    for name in IMAGES:
        with Image.open(PHASH / name) as im:
            rgb = np.ascontiguousarray(np.asarray(im.convert("RGB")))
        assert pdq_hash256(rgb) == _float64_path(rgb), name
        vectors, quality = pdqhash.compute_dihedral(rgb)
        hashes, our_quality = pdq_dihedral256(rgb)
        reference = [np.packbits(np.asarray(v).astype(np.uint8)).tobytes() for v in vectors]
        assert our_quality == quality, name
        assert hashes[0] == pdq_hash256(rgb)[0]
        # The blur's rounding (matrix products, not running sums) may move a coefficient
        # of a near-flat picture across the median: measured, 2 bits in 2 of the 8
        # dihedral hashes of one quality-3 image, below the matching floor.
        bound = 0 if quality >= PDQ_MIN_QUALITY else 2
        assert max(hamming(a, b) for a, b in zip(hashes, reference, strict=True)) <= bound, name


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (63, 65), (480, 640), (1000, 37)])
def test_within_two_bits_of_pdqhash_on_other_images(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 7919 + shape[1])
    # smooth gradients plus noise: the kind of content where a DCT coefficient can sit
    # on the median and float32 rounding could flip it
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    base = (np.sin(x / 9.0) + np.cos(y / 13.0)) * 60 + 128
    rgb = np.clip(base[..., None] + rng.normal(0, 20, (*shape, 3)), 0, 255).astype(np.uint8)
    ours, q_ours = pdq_hash256(rgb)
    theirs, q_theirs = _float64_path(rgb)
    assert hamming(ours, theirs) <= 2
    assert q_ours == q_theirs


@pytest.mark.parametrize("shape", [(720, 1280), (1080, 1920), (3000, 400), (600, 450)])
def test_strips_give_the_whole_plane_filter_bit_for_bit(shape: tuple[int, int]) -> None:
    """The luma computed strip by strip and blurred along columns equals the blur of the
    whole float32 luma plane exactly (the per-frame speed-up changes no hash)."""
    assert _CORE is not None
    rng = np.random.default_rng(sum(shape))
    coarse = rng.integers(0, 256, (shape[0] // 40, shape[1] // 40, 3), dtype=np.uint8)
    rgb = np.asarray(Image.fromarray(coarse).resize(shape[::-1], Image.Resampling.BILINEAR))
    rgb = np.ascontiguousarray(rgb)
    whole = _luma_rows(_CORE.luma, rgb, 0, np.empty(shape, dtype=np.float32))
    assert np.array_equal(_down_rows(_CORE.luma, rgb), _tent(shape[0]).apply(whole))


def _cpp_hashes(block: np.ndarray) -> list[bytes]:
    """The 8 dihedral hashes of a 16 x 16 DCT block by the C++ core's own transforms and
    `pdqBuffer16x16ToBits` (torben's median)."""
    assert _CORE is not None
    block = np.ascontiguousarray(block, dtype=np.float32)
    turned = np.empty_like(block)
    out = [_bits(_CORE, block)]
    for transform in _CORE.dihedral:
        transform(block.ctypes.data, turned.ctypes.data)
        out.append(_bits(_CORE, turned))
    return out


def test_numpy_bits_equal_the_cpp_transforms_and_median() -> None:
    """The 8 hashes of a DCT block made in one NumPy pass equal the C++ core's, bit for
    bit: on random blocks, blocks full of ties at the median (few distinct values, zeros of
    both signs), constant blocks and real images' blocks."""
    rng = np.random.default_rng(11)
    blocks = [rng.normal(0, 50, (16, 16)).astype(np.float32) for _ in range(300)]
    blocks += [rng.integers(-3, 4, (16, 16)).astype(np.float32) for _ in range(300)]
    blocks += [np.where(rng.random((16, 16)) < 0.5, -0.0, 0.0).astype(np.float32)]
    blocks += [np.full((16, 16), v, dtype=np.float32) for v in (0.0, -1.5, 7.0)]
    assert _CORE is not None
    for name in IMAGES[:10]:
        with Image.open(PHASH / name) as im:
            found = _dct16(_CORE, np.ascontiguousarray(np.asarray(im.convert("RGB"))))
        assert found is not None
        blocks.append(found[0])
    for block in blocks:
        assert _hashes(block, 8) == _cpp_hashes(block)
        assert _hashes(block, 1) == _cpp_hashes(block)[:1]


def test_a_block_that_is_not_finite_goes_through_the_cpp_core() -> None:
    block = np.random.default_rng(3).normal(0, 9, (16, 16)).astype(np.float32)
    block[2, 5] = np.nan
    block[7, 1] = np.inf
    assert _hashes(block, 8) == _cpp_hashes(block)
