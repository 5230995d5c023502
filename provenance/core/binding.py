"""Hard and soft bindings of an asset to its claim.

Hard binding: SHA-256 of the exact bytes, computed incrementally so a file of any size is
hashed in fixed-size chunks. Soft binding: the PDQ perceptual hash of the pixels (Meta
ThreatExchange, "The TMK+PDQF Video-Hashing Algorithm and the PDQ Image Similarity
Algorithm", hashing/hashing.pdf; thresholds from pdq/README.md in
https://github.com/facebook/ThreatExchange), computed by the `pdqhash` package, so that
a re-encoded or resized copy can still be traced to the capture it came from.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from provenance.core.errors import BindingError
from provenance.core.pdq_core import pdq_hash256

PDQ_ALGORITHM = "pdq"
#: Size of a PDQ hash in bytes (256 bits).
PDQ_HASH_SIZE = 32
#: Two PDQ hashes match when their Hamming distance is at most this many of 256 bits
#: (inclusive): ThreatExchange pdq/README.md, "Matching", "Distance Threshold ... <=31".
PDQ_MATCH_THRESHOLD = 31
#: Hashes of lower quality come from images with too little structure (flat, near-uniform)
#: and are not matched: the same section recommends discarding quality "<=49".
PDQ_MIN_QUALITY = 50


class Sha256Stream:
    """Incremental SHA-256 of a byte stream, counting the bytes seen."""

    __slots__ = ("_hash", "_size")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed the next bytes of the stream."""
        self._hash.update(data)
        self._size += len(data)

    def digest(self) -> bytes:
        """The 32-byte SHA-256 of everything fed so far (the stream may continue)."""
        return self._hash.digest()

    @property
    def size(self) -> int:
        """Number of bytes fed so far."""
        return self._size


@dataclass(frozen=True)
class PerceptualHash:
    """A soft binding: a perceptual hash of an image or of one video frame.

    algorithm: "pdq"; hash: 32 bytes, the 256 PDQ bits most significant first (the hex
    form is the one the PDQ reference tools print); quality: 0..100 (PDQ's measure of how
    much gradient the image has); timestamp_seconds: presentation time of a video frame,
    0.0 for a still image. Raises BindingError on construction if a field is out of range.
    """

    algorithm: str
    hash: bytes
    quality: int
    timestamp_seconds: float = 0.0

    def __post_init__(self) -> None:
        _check_soft(self.algorithm, self.hash, self.quality, self.timestamp_seconds)

    @property
    def hex(self) -> str:
        """The hash as 64 lowercase hex digits."""
        return self.hash.hex()


def _check_soft(algorithm: str, hash: bytes, quality: int, timestamp_seconds: float) -> None:
    """The checks of `PerceptualHash`'s fields; raises BindingError."""
    if algorithm != PDQ_ALGORITHM:
        raise BindingError(f"unsupported perceptual hash algorithm {algorithm!r}")
    if len(hash) != PDQ_HASH_SIZE:
        raise BindingError(f"a PDQ hash is {PDQ_HASH_SIZE} bytes, got {len(hash)}")
    if not 0 <= quality <= 100:
        raise BindingError(f"PDQ quality must be in 0..100, got {quality}")
    if not (math.isfinite(timestamp_seconds) and timestamp_seconds >= 0):
        raise BindingError(f"timestamp_seconds must be finite and >= 0, got {timestamp_seconds}")


_new_object = object.__new__


def perceptual_hash(
    algorithm: str, hash: bytes, quality: int, timestamp_seconds: float = 0.0
) -> PerceptualHash:
    """``PerceptualHash(algorithm, hash, quality, timestamp_seconds)``, the same checks
    and the same object (equal, same hash and repr), built without the frozen dataclass's
    ``__init__``, which sets each field through ``object.__setattr__``: about two thirds
    of its cost (0.99 against 1.46 us, measured 4 December), for the server's Lookup, which
    builds 8 from the wire for each photo. Raises BindingError as the constructor does."""
    if (
        algorithm != PDQ_ALGORITHM
        or len(hash) != PDQ_HASH_SIZE
        or not 0 <= quality <= 100
        or not (math.isfinite(timestamp_seconds) and timestamp_seconds >= 0)
    ):
        _check_soft(algorithm, hash, quality, timestamp_seconds)  # raises, saying which
    h: PerceptualHash = _new_object(PerceptualHash)
    h.__dict__.update(
        algorithm=algorithm, hash=hash, quality=quality, timestamp_seconds=timestamp_seconds
    )
    return h


def pdq_hashes(packed: bytes, quality: int) -> tuple[PerceptualHash, ...]:
    """The PDQ hashes packed 32 bytes each in ``packed`` (an image's dihedral hashes as a
    Lookup carries them), in order, all of ``quality`` and timestamp 0, as
    `perceptual_hash` builds them, the length and quality checked once, not per hash (the
    server's Lookup builds a photo's 8 from one packed field). Raises BindingError when
    the length is not a multiple of PDQ_HASH_SIZE or the quality is outside 0..100."""
    if len(packed) % PDQ_HASH_SIZE:
        raise BindingError(
            f"packed PDQ hashes are {PDQ_HASH_SIZE} bytes each, got {len(packed)} bytes"
        )
    if not 0 <= quality <= 100:
        _check_soft(PDQ_ALGORITHM, bytes(PDQ_HASH_SIZE), quality, 0.0)  # raises, saying why
    out = []
    for k in range(0, len(packed), PDQ_HASH_SIZE):
        h: PerceptualHash = _new_object(PerceptualHash)
        h.__dict__.update(
            algorithm=PDQ_ALGORITHM,
            hash=packed[k : k + PDQ_HASH_SIZE],
            quality=quality,
            timestamp_seconds=0.0,
        )
        out.append(h)
    return tuple(out)


def check_rgb(rgb: np.ndarray) -> None:
    """Raises BindingError unless ``rgb`` is a non-empty (H, W, 3) uint8 array."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise BindingError(
            f"expected an (H, W, 3) uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}"
        )
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise BindingError(f"cannot hash an empty image of shape {rgb.shape}")


def pdq_hash(rgb: np.ndarray, timestamp_seconds: float = 0.0) -> PerceptualHash:
    """Compute the PDQ hash of an image.

    rgb: (H, W, 3) uint8 array of RGB pixels as displayed (orientation applied).
    timestamp_seconds: the frame time for video frames. Raises BindingError on any other
    shape or dtype. About 20-30 one-megapixel images/s per core.
    """
    check_rgb(rgb)
    packed, quality = pdq_hash256(np.ascontiguousarray(rgb))
    return PerceptualHash(
        algorithm=PDQ_ALGORITHM,
        hash=packed,
        quality=quality,
        timestamp_seconds=timestamp_seconds,
    )


def hamming(a: bytes, b: bytes) -> int:
    """Number of differing bits between two equal-length byte strings; BindingError if not."""
    if len(a) != len(b):
        raise BindingError(f"cannot compare hashes of {len(a)} and {len(b)} bytes")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def pdq_match(a: PerceptualHash, b: PerceptualHash) -> bool:
    """True if both hashes have quality >= PDQ_MIN_QUALITY and differ in at most
    PDQ_MATCH_THRESHOLD bits."""
    return (
        a.quality >= PDQ_MIN_QUALITY
        and b.quality >= PDQ_MIN_QUALITY
        and hamming(a.hash, b.hash) <= PDQ_MATCH_THRESHOLD
    )
