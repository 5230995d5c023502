"""Measure an asset: hard binding, media type, dimensions and soft bindings.

The same measurements serve the signer (to build a claim), the server (to verify an
upload) and the scanner (to look hashes up). Input is bytes already read or a
spooled upload; limits protect against oversized files and decompression bombs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from provenance.core.binding import PerceptualHash
from provenance.core.dihedral import pdq_dihedral, pdq_dihedral_bytes
from provenance.core.errors import DecodeBudgetError, MediaError, MediaTooLargeError
from provenance.core.verify import FileFacts
from provenance.media.budget import decode_bytes
from provenance.media.image import (
    DEFAULT_MAX_PIXELS,
    PDQ_MIN_SIDE,
    UNSUPPORTED_FORMAT,
    DecodedImage,
    decode_image,
    sniff_media_type,
)

#: Default largest file accepted for verification or signing, in bytes.
DEFAULT_MAX_BYTES = 2 * 1024**3
#: Default largest image file decoded for perceptual hashing, in bytes.
DEFAULT_MAX_IMAGE_BYTES = 256 * 1024**2


@dataclass(frozen=True)
class AssetLimits:
    """Limits on untrusted input: bytes of any file, bytes of an image, pixels, and the
    memory budget of one image decode in bytes (None: unbounded; the server sets one,
    see `provenance.media.budget`)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_decode_bytes: int | None = None


@dataclass(frozen=True)
class ImageAsset:
    """What is known about an image: its facts, size in pixels as displayed, PDQ hash and
    EXIF orientation tag (1..8, 0 when none). ``facts.dihedral_soft_bindings`` holds the
    PDQ hashes of its 7 other rotations and mirror images (`provenance.core.dihedral`).

    hashed: the pixels PDQ was computed from (a large JPEG decoded at a reduced scale,
    `provenance.media.image.PDQ_MIN_SIDE`); `rgb` gives the full-size pixels.
    """

    facts: FileFacts
    width: int
    height: int
    soft: PerceptualHash
    orientation: int
    hashed: DecodedImage = field(repr=False, compare=False)
    data: bytes = field(repr=False, compare=False)
    limits: AssetLimits = field(repr=False, compare=False)

    @cached_property
    def rgb(self) -> np.ndarray:
        """(height, width, 3) uint8 pixels as displayed at full size (what the detector
        reads): the hashed pixels when they are full size, else a second decode of the
        file within the same limits. Raises DecodeBudgetError when the full-size decode is
        over the decode budget (never smaller pixels: resizing destroys what the detector
        looks for), MediaError as `provenance.media.image.decode_image`."""
        return _native_rgb(self.hashed, self.data, self.limits)


def _native_rgb(hashed: DecodedImage, data: bytes, limits: AssetLimits) -> np.ndarray:
    """The full-size pixels of the image ``data``, decoded for PDQ as ``hashed``: those
    pixels when full size, else a second decode within ``limits`` (`ImageAsset.rgb`)."""
    if hashed.scale == 1:
        return hashed.rgb
    width, height = hashed.display_size
    budget = limits.max_decode_bytes
    need = detector_decode_bytes(width, height, hashed.media_type)
    if budget is not None and need > budget:
        raise DecodeBudgetError(
            f"the detector reads native pixels, and decoding this {width}x"
            f"{height} image at full size needs about {need >> 20} MiB, over the"
            f" decode budget of {budget >> 20} MiB (`prov serve --decode-budget-mb`;"
            " `prov scan` and `prov detect --local` keep its default)"
        )
    # checked above with the detector's own estimate (no PDQ): decode_image's budget
    # counts the PDQ hash too and would hand back reduced pixels
    return decode_image(data, limits.max_pixels, None).rgb


def detector_rgb(data: bytes, limits: AssetLimits) -> np.ndarray:
    """(height, width, 3) uint8 full-size pixels of the image ``data`` for the detector,
    under the server's rule (`ImageAsset.rgb`, without the PDQ hashes): a non-JPEG whose
    decode is over ``limits.max_decode_bytes`` (`provenance.media.budget`) is refused from
    its header, a JPEG whose full-size decode is (`detector_decode_bytes`) after a decode
    at its PDQ scale. What `prov detect --local` scores. Raises DecodeBudgetError over the
    budget, MediaTooLargeError over the byte or pixel limits, MediaError as
    `provenance.media.image.decode_image`."""
    return _native_rgb(_decode_for_pdq(data, limits), data, limits)


#: Peak bytes per pixel of a JPEG's full-size decode for the detector and its scoring
#: (no PDQ hash): measured as peak RSS growth on 24 MP JPEGs (6000x4000, CPU; baseline
#: 4:2:0, EXIF-rotated 6 and 3, progressive 4:4:4, CMYK) and a 20 MP one (5472x3648):
#: the decode peaks at 14.7-14.9 B/px, the detector's JPEG re-encode, crops and batches
#: at 12.8 over the same baseline, the decoded array included (16.8 before
#: `detector.transforms.jpeg_roundtrip` dropped its copy); 16 adds about 7% to the
#: highest. So a 24 MP camera photo (366 MiB) is scored under the default 384 MiB.
DETECTOR_JPEG_BYTES_PER_PIXEL = 16


def detector_decode_bytes(width: int, height: int, media_type: str) -> int:
    """Estimated peak bytes to decode a ``width`` x ``height`` image of ``media_type`` at
    full size and score it with the detector: DETECTOR_JPEG_BYTES_PER_PIXEL for a JPEG
    (the only format decoded a second time for it), else `decode_bytes` (decode + PDQ,
    an over-estimate: not measured without PDQ)."""
    if media_type == "image/jpeg":
        return width * height * DETECTOR_JPEG_BYTES_PER_PIXEL
    return decode_bytes(width, height, media_type)


def check_size(size: int, limits: AssetLimits) -> None:
    """Raises MediaError for an empty file and MediaTooLargeError beyond the limit."""
    if size == 0:
        raise MediaError("empty file: there is nothing to sign or verify")
    if size > limits.max_bytes:
        raise MediaTooLargeError(f"file is {size} bytes; the limit is {limits.max_bytes} bytes")


def check_image_size(size: int, limits: AssetLimits) -> None:
    """Raises MediaTooLargeError when an image of ``size`` bytes is over the image limit
    (check before reading the bytes)."""
    if size > limits.max_image_bytes:
        raise MediaTooLargeError(
            f"image is {size} bytes; the limit for images is {limits.max_image_bytes} bytes"
        )


def media_type_of(head: bytes) -> str:
    """Sniffed media type of a file from its first bytes; raises MediaError if unknown."""
    mt = sniff_media_type(head)
    if mt is None:
        raise MediaError(UNSUPPORTED_FORMAT)
    return mt


def inspect_image(sha256: bytes, data: bytes, limits: AssetLimits) -> ImageAsset:
    """Decode an image's bytes (whose SHA-256 the caller computed) and hash its pixels.

    A JPEG is decoded for PDQ at the smallest DCT scale keeping its shorter side at least
    `provenance.media.image.PDQ_MIN_SIDE` pixels, the same for signer, server and scanner.
    Raises MediaError for corrupt, truncated or wrong-format data and
    MediaTooLargeError beyond the byte or pixel limits.
    """
    img = _decode_for_pdq(data, limits)
    soft, *turned = pdq_dihedral(img.rgb)
    facts = FileFacts(
        sha256=sha256,
        size=len(data),
        media_type=img.media_type,
        soft_bindings=(soft,),
        dihedral_soft_bindings=tuple(turned),
        orientation=img.orientation,
    )
    width, height = img.display_size
    return ImageAsset(facts, width, height, soft, img.orientation, img, data, limits)


def image_pdq(data: bytes, limits: AssetLimits) -> tuple[list[bytes], int]:
    """An image's 8 dihedral PDQ hashes (32 bytes each, `provenance.core.dihedral.TRANSFORMS`
    order: its own first) and their quality, decoded and hashed as `inspect_image` does
    (the same checks, errors and hashes) without the facts and objects it builds around
    them: what a scanner sends, about 12-16 us less per 160x120 photo. Raises as
    `inspect_image`."""
    return pdq_dihedral_bytes(_decode_for_pdq(data, limits).rgb)


def _decode_for_pdq(data: bytes, limits: AssetLimits) -> DecodedImage:
    """An image's bytes checked against the limits and decoded for PDQ (`inspect_image`)."""
    check_size(len(data), limits)
    check_image_size(len(data), limits)
    return decode_image(data, limits.max_pixels, limits.max_decode_bytes, PDQ_MIN_SIDE)
