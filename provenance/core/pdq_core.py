"""PDQ through pdqhash's own C++ core with float32 luma, its filter as two matrix products.

`pdqhash.compute` builds the luma plane as float64 in NumPy (0.299 R + 0.587 G + 0.114 B,
three full-size float64 temporaries) before casting it to the float32 the C++ core reads,
which is most of its memory and a large part of its time on big images. Here the luma is
filled by the reference's own `fillFloatLumaFromRGB` (float32, as the C++ PDQ hasher of
facebook/ThreatExchange pdq/cpp does), called through ctypes from pdqhash's extension
module like the C++ steps below, so the GIL is released while an image is hashed.

Measured on the 36 images of the shared PDQ vectors (/work/shared/fixtures/phash/,
README.tsv): the hash equals `pdqhash.compute`'s bit for bit on every one (median and
worst difference 0 bits, same quality); synthetic gradient+noise images stay within 2 bits.
With the banded blur below, a 720p frame hashes in about 10 ms (pdqhash.compute: 85 ms)
and the 8 dihedral hashes of a 12 MP image take 0.27 s (compute_dihedral: 4.3 s).
Float32 rounding may still differ from the float64
path in rare pixels, so other images may differ in a bit whose DCT coefficient sits on
the median; signing and verifying both use this function, so they agree with each other.

The reference then blurs the whole luma plane with a Jarosz filter (two passes of a box
filter along rows and along columns, running sums) and keeps 64 x 64 samples of it. That
filter is linear and separable, so the 64 x 64 samples are ``R @ luma @ C.T`` with R
(64 x height) and C (64 x width) the sampled rows of the two-pass box operators, built once
per size (`_tent`); each row of R or C is a band of about n / 64 weights, so the products
read the plane once instead of blurring all of it four times. The luma is filled and
filtered in strips of rows (`_down_rows`): the same products of the same float32
values, bit for bit, without a fresh full-size plane per image (a 720p frame hashed in
4-6 ms instead of 10-30 ms on this machine, most of the difference page faults). The
64 x 64 result goes to the C++ core's 64 x 64 entry (`pdqFloat256FromFloatLuma` uses it
unfiltered) for the quality, the DCT and the bits, so only the blur's rounding differs
(exact sums instead of running float32 sums): the hashes and qualities of all 36 shared
vectors are unchanged (0 bits).

The hash bits of the 16 x 16 DCT block and its 7 dihedral transforms (rotations and
mirror images: signs and transposition of the coefficients, `_SIGNS`) are set in one NumPy
pass (`_hashes`): a coefficient over the block's median, the lower middle of its 256 values
as the reference's torben search returns it. Bit for bit the C++ core's transforms and
``pdqBuffer16x16ToBits`` (negation and transposition are exact), measured on the 10^4
bench images, the 36 shared vectors, 400 synthetic images and blocks full of ties; a
photo's 8 hashes took about 85 us of C++ median searches and ctypes calls, now about 10.

If a pdqhash build does not export the C++ functions, pdqhash's own are used.
Source: PDQ hashing, facebook/ThreatExchange pdq/README.md and pdq/cpp/hashing/pdqhashing.cpp.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pdqhash

if TYPE_CHECKING:
    from ctypes import _NamedFuncPointer as _Fn

# Itanium C++ ABI names of facebook::pdq::hashing::fillFloatLumaFromRGB(unsigned char* x3,
# int x4, float*), pdqFloat256FromFloatLuma(float*, float*, int, int, float (*)[64],
# float (*)[64], float (*)[16], int&), pdqBuffer16x16ToBits(float (*)[16], Hash256*) and
# the seven dct16OriginalTo*(float (*)[16], float (*)[16]) of the dihedral hashes.
_LUMA_SYMBOL = "_ZN8facebook3pdq7hashing20fillFloatLumaFromRGBEPhS2_S2_iiiiPf"
_FLOAT_SYMBOL = "_ZN8facebook3pdq7hashing24pdqFloat256FromFloatLumaEPfS2_iiPA64_fS4_PA16_fRi"
_BITS_SYMBOL = "_ZN8facebook3pdq7hashing20pdqBuffer16x16ToBitsEPA16_fPNS1_7Hash256E"
#: The 7 other dihedral transforms of the 16 x 16 DCT, in `pdqhash.compute_dihedral`'s order.
_DIHEDRAL_SYMBOLS = tuple(
    f"_ZN8facebook3pdq7hashing{len(name)}{name}EPA16_fS3_"
    for name in (
        "dct16OriginalToRotate90",
        "dct16OriginalToRotate180",
        "dct16OriginalToRotate270",
        "dct16OriginalToFlipX",
        "dct16OriginalToFlipY",
        "dct16OriginalToFlipPlus1",
        "dct16OriginalToFlipMinus1",
    )
)
#: PDQ's downsampled size and smallest hashable side (pdqhashing.cpp MIN_HASHABLE_DIM).
_DOWN = 64
_MIN_DIM = 5

_Words = ctypes.c_uint16 * 16


@dataclass(frozen=True)
class _Core:
    """The C++ functions used, from pdqhash's extension module."""

    luma: _Fn
    float256: _Fn
    bits: _Fn
    dihedral: tuple[_Fn, ...]


def _load() -> _Core | None:
    """The C++ functions from pdqhash's extension, or None where not all are exported."""
    lib = ctypes.CDLL(pdqhash.bindings.__file__)
    try:
        luma, float256, bits = (
            getattr(lib, name) for name in (_LUMA_SYMBOL, _FLOAT_SYMBOL, _BITS_SYMBOL)
        )
        dihedral = tuple(getattr(lib, name) for name in _DIHEDRAL_SYMBOLS)
    except AttributeError:
        return None
    luma.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 4 + [ctypes.c_void_p]
    float256.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int] * 2 + [ctypes.c_void_p] * 4
    bits.argtypes = [ctypes.c_void_p] * 2
    for fn in dihedral:
        fn.argtypes = [ctypes.c_void_p] * 2
    for fn in (luma, float256, bits, *dihedral):
        fn.restype = None
    return _Core(luma, float256, bits, dihedral)


_CORE = _load()


#: Output rows of the vertical filter computed per strip of luma (`_down_rows`).
_STRIP_OUTPUTS = 8
#: Images of at most this many pixels get their luma in one piece.
_WHOLE_PLANE_PIXELS = 1 << 18


def _luma_rows(luma_fn: _Fn, rgb: np.ndarray, first: int, out: np.ndarray) -> np.ndarray:
    """Float32 luma of the rows ``first .. first + len(out) - 1`` of a C-contiguous
    (H, W, 3) uint8 array into ``out`` (rows, W), by the reference's fill."""
    rows, width = out.shape
    base = rgb.ctypes.data + first * 3 * width
    luma_fn(base, base + 1, base + 2, rows, width, 3 * width, 3, out.ctypes.data)
    return out


def _down_rows(luma_fn: _Fn, rgb: np.ndarray) -> np.ndarray:
    """(64, W) float32: the luma of an (H, W, 3) uint8 array blurred along its columns and
    sampled (`_tent` of H), strip by strip: the luma of the rows that _STRIP_OUTPUTS output
    rows read goes to one reused buffer, so a large frame never needs a whole float32 plane
    (fresh pages for each frame cost more than the arithmetic) and the strip stays in
    cache. Each output row is the same product of the same float32 values as over the whole
    plane, so the result is bit for bit the one of `_Tent.apply` on the full luma."""
    height, width = rgb.shape[:2]
    tent = _tent(height)
    if height * width <= _WHOLE_PLANE_PIXELS:
        luma = _luma_rows(luma_fn, rgb, 0, np.empty((height, width), dtype=np.float32))
        return tent.apply(luma)
    down = np.empty((_DOWN, width), dtype=np.float32)
    spans = [(r, min(r + _STRIP_OUTPUTS, _DOWN)) for r in range(0, _DOWN, _STRIP_OUTPUTS)]
    rows = [(int(tent.index[a:b].min()), int(tent.index[a:b].max()) + 1) for a, b in spans]
    buffer = np.empty((max(hi - lo for lo, hi in rows), width), dtype=np.float32)
    for (a, b), (lo, hi) in zip(spans, rows, strict=True):
        strip = _luma_rows(luma_fn, rgb, lo, buffer[: hi - lo])
        down[a:b] = np.matmul(tent.weights[a:b, None, :], strip[tent.index[a:b] - lo])[:, 0, :]
    return down


@dataclass(frozen=True)
class _Tent:
    """The two-pass Jarosz box filter of a length-n line, sampled at PDQ's 64 points:
    output r is ``weights[r] @ line[index[r]]`` (float32; a band of consecutive inputs,
    padded with zero weights to one length)."""

    index: np.ndarray
    weights: np.ndarray

    def apply(self, plane: np.ndarray) -> np.ndarray:
        """(64, m) float32: the filter along axis 0 of an (n, m) float32 plane, sampled."""
        bands = plane[self.index]  # (64, band, m): about one copy of the plane
        out: np.ndarray = np.matmul(self.weights[:, None, :], bands)[:, 0, :]
        return out


@lru_cache(maxsize=32)
def _tent(n: int) -> _Tent:
    """The sampled two-pass filter of a length-n line (downscaling.cpp: box1DFloat,
    jaroszFilterFloat, decimateFloat).

    box1DFloat with window w averages output i over [i - (w - h), i + h - 1] clipped to
    the line, h = (w + 2) // 2, dividing by the clipped count; w = ceil(n / 128)
    (computeJaroszFilterWindowSize(n, 64)); sample r is output int((r + 0.5) * n / 64).
    Each sample reads about n / 64 inputs, so applying it reads the plane once.
    """
    window = (n + 2 * _DOWN - 1) // (2 * _DOWN)
    half = (window + 2) // 2
    index = np.arange(n)
    first = np.maximum(0, index - (window - half))
    last = np.minimum(n - 1, index + half - 1)
    count = (last - first + 1).astype(np.float64)
    bands = []
    for r in range(_DOWN):
        i = int(((r + 0.5) * n) / _DOWN)
        lo, hi = int(first[first[i]]), int(last[last[i]]) + 1
        row = np.zeros(hi - lo)
        for k in range(first[i], last[i] + 1):
            row[first[k] - lo : last[k] + 1 - lo] += 1.0 / count[k]
        bands.append((lo, row / count[i]))
    width = max(len(row) for _, row in bands)
    index = np.zeros((_DOWN, width), dtype=np.intp)
    weights = np.zeros((_DOWN, width), dtype=np.float32)
    for r, (lo, row) in enumerate(bands):
        index[r] = np.minimum(np.arange(lo, lo + width), n - 1)
        weights[r, : len(row)] = row
    index.flags.writeable = False
    weights.flags.writeable = False
    return _Tent(index, weights)


class _Workspace(threading.local):
    """One thread's fixed-size buffers for the C++ core, with their addresses found once
    (numpy's ``.ctypes.data`` costs about 1 us a call, and a hash made about 25 calls)."""

    def __init__(self) -> None:
        self.small = np.empty((_DOWN, _DOWN), dtype=np.float32)
        self.scratch = np.empty((_DOWN, _DOWN), dtype=np.float32)  # the C++ signature wants one
        self.b64 = np.empty((_DOWN, _DOWN), dtype=np.float32)
        self.b16x64 = np.empty((16, _DOWN), dtype=np.float32)
        self.b16 = np.empty((16, 16), dtype=np.float32)
        self.quality = ctypes.c_int()
        self.quality_ref = ctypes.byref(self.quality)
        self.args = tuple(
            a.ctypes.data for a in (self.small, self.scratch, self.b64, self.b16x64, self.b16)
        )


_WORK = _Workspace()


def _dct16(core: _Core, rgb: np.ndarray) -> tuple[np.ndarray, int] | None:
    """The 16 x 16 float32 DCT block (a fresh array) and quality of an (H, W, 3) uint8
    array, or None when a side is under the reference's minimum of 5 pixels (hash all
    zeros, quality 0)."""
    height, width = rgb.shape[:2]
    if height < _MIN_DIM or width < _MIN_DIM:
        return None
    down = _down_rows(core.luma, rgb)  # (64, width): blurred along columns, sampled
    work = _WORK
    np.copyto(work.small, _tent(width).apply(np.ascontiguousarray(down.T)).T)
    small, scratch, b64, b16x64, b16 = work.args
    core.float256(small, scratch, _DOWN, _DOWN, b64, b16x64, b16, work.quality_ref)
    return work.b16.copy(), work.quality.value


def _hash_bytes(words: ctypes.Array[ctypes.c_uint16]) -> bytes:
    """Hash256 keeps bit k in words[k // 16] at (k % 16); the bytes put bit 255 first."""
    return np.frombuffer(memoryview(words).cast("B"), dtype=np.uint16)[::-1].astype(">u2").tobytes()


def _bits(core: _Core, block: np.ndarray) -> bytes:
    """The C++ core's hash of a 16 x 16 DCT block (`pdqBuffer16x16ToBits`)."""
    words = _Words()
    core.bits(block.ctypes.data, ctypes.byref(words))
    return _hash_bytes(words)


def _negated_where(negate: np.ndarray) -> np.ndarray:
    return np.where(negate, np.float32(-1), np.float32(1)).astype(np.float32)


_I, _J = np.indices((16, 16))
#: Signs and transposition of the 8 dihedral transforms of the 16 x 16 DCT in
#: `pdqhash.compute_dihedral`'s order (identity first), as pdqhashing.cpp's
#: dct16OriginalTo* make them: each transform is coefficient (i, j) negated where its
#: pattern says, and put at (j, i) when the transform transposes.
_SIGNS = np.stack(
    [
        _negated_where(np.zeros((16, 16), dtype=bool)),  # identity
        _negated_where(_J % 2 == 0),  # rotate 90 (transposed)
        _negated_where((_I + _J) % 2 == 1),  # rotate 180
        _negated_where(_I % 2 == 0),  # rotate 270 (transposed)
        _negated_where(_I % 2 == 0),  # flip x
        _negated_where(_J % 2 == 0),  # flip y
        _negated_where(np.zeros((16, 16), dtype=bool)),  # flip +1 (transposed)
        _negated_where((_I + _J) % 2 == 1),  # flip -1 (transposed)
    ]
)
_TRANSPOSED = (False, True, False, True, False, False, True, True)


def _order(transposed: bool) -> np.ndarray:
    """For each position p of the hash's 256 bits as `_hash_bytes` writes them (bit 255
    first), the index in the untransposed block of the coefficient that sets it."""
    k = 255 - np.arange(256)  # the Hash256 bit at position p
    row, col = k // 16, k % 16  # its coefficient in the transformed block
    return col * 16 + row if transposed else k


#: (8, 256): `_order` of each dihedral transform.
_ORDERS = np.stack([_order(t) for t in _TRANSPOSED])
#: The median's index among a block's 256 coefficients sorted: torben's median of an even
#: count is the lower middle element (Devillard, "Fast median search", torben.cpp).
_MEDIAN_RANK = 127


def _hashes(block: np.ndarray, count: int) -> list[bytes]:
    """The hashes of the first ``count`` (1 or 8) dihedral transforms of a 16 x 16 float32
    DCT block, bit for bit those of the C++ core's transforms and `pdqBuffer16x16ToBits`
    (bit set where a coefficient is over the block's median, torben's lower middle
    element; negation and transposition are exact, so no float differs), in one NumPy
    pass instead of a C++ median per hash. A block with a NaN or an infinity goes through
    the C++ core itself (its median search is defined for finite values only)."""
    if _CORE is not None and not np.isfinite(block).all():
        turned = np.empty_like(block)
        out = [_bits(_CORE, block)]
        for transform in _CORE.dihedral[: count - 1]:
            transform(block.ctypes.data, turned.ctypes.data)
            out.append(_bits(_CORE, turned))
        return out
    signed = (block[None] * _SIGNS[:count]).reshape(count, 256)
    median = np.partition(signed, _MEDIAN_RANK, axis=1)[:, _MEDIAN_RANK : _MEDIAN_RANK + 1]
    above = np.take_along_axis(signed > median, _ORDERS[:count], axis=1)
    packed = np.packbits(above, axis=1).tobytes()
    return [packed[32 * k : 32 * k + 32] for k in range(count)]


def pdq_hash256(rgb: np.ndarray) -> tuple[bytes, int]:
    """PDQ of a C-contiguous (H, W, 3) uint8 RGB array: (32-byte hash, quality 0..100).

    The hash bytes are in the order `np.packbits(pdqhash.compute(rgb)[0])` gives (bit 255
    first). The caller checks shape, dtype and contiguity (`provenance.core.binding.pdq_hash`).
    Memory: float32 luma of the rows that 8 of the 64 filtered rows read (about H / 4 x
    W for a large image; the whole H x W plane for one of at most 2^18 pixels).
    """
    if _CORE is None:
        bits, quality = pdqhash.compute(rgb)
        return np.packbits(bits.astype(np.uint8)).tobytes(), int(quality)
    found = _dct16(_CORE, rgb)
    if found is None:
        return bytes(32), 0
    block, quality = found
    return _hashes(block, 1)[0], quality


def pdq_dihedral256(rgb: np.ndarray) -> tuple[list[bytes], int]:
    """The 8 dihedral PDQ hashes of rgb, as `pdq_hash256` makes one: (hashes, quality).

    Order as `pdqhash.compute_dihedral`: original, rotate 90, 180, 270, flip X, flip Y,
    flip +1, flip -1; the first is exactly `pdq_hash256(rgb)`'s hash (same DCT block).
    """
    if _CORE is None:
        vectors, quality = pdqhash.compute_dihedral(rgb)
        return [np.packbits(np.asarray(v).astype(np.uint8)).tobytes() for v in vectors], int(
            quality
        )
    found = _dct16(_CORE, rgb)
    if found is None:
        return [bytes(32)] * 8, 0
    block, quality = found
    return _hashes(block, 8), quality
