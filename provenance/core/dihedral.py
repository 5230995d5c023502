"""Soft binding through rotations and mirror images: PDQ's dihedral hashes.

A photo turned by 90, 180 or 270 degrees or mirrored (or whose EXIF orientation tag
alone was changed, which turns the displayed pixels) has an unrelated PDQ hash. PDQ
computes the hashes of all 8 dihedral transforms of an image from one DCT (Meta
ThreatExchange, hashing/hashing.pdf, "Dihedral-transform hashes"; `pdqhash.compute_dihedral`),
so a verifier hashes the file 8 ways and compares each with the claim's one hash. The
transform whose hash matches tells how the file is turned relative to the capture.

Pure: pixels in, hashes and distances out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from provenance.core.binding import (
    PDQ_ALGORITHM,
    PDQ_MIN_QUALITY,
    PerceptualHash,
    check_rgb,
    hamming,
)
from provenance.core.pdq_core import pdq_dihedral256

#: How the file is turned relative to the capture when the file's k-th dihedral hash
#: (pdqhash's order: original, rotate 90, rotate 180, rotate 270, flip x, flip y, flip
#: +1 diagonal, flip -1 diagonal) matches the capture's hash. Index 0 is the file as is.
TRANSFORMS = (
    "identity",
    "rotate_90_cw",
    "rotate_180",
    "rotate_90_ccw",
    "mirror_top_bottom",
    "mirror_left_right",
    "transpose",
    "transverse",
)

#: Dihedral hashes of a file besides its own (the 7 turns after "identity").
DIHEDRAL_TURNS = len(TRANSFORMS) - 1
#: Dihedral hashes of a file, its own included (a Lookup's packed ``pdq_dihedral`` holds
#: at most this many).
DIHEDRAL_HASHES = len(TRANSFORMS)

_WORDS = {
    "rotate_90_cw": "rotated 90 degrees clockwise",
    "rotate_180": "rotated 180 degrees",
    "rotate_90_ccw": "rotated 90 degrees counter-clockwise",
    "mirror_top_bottom": "mirrored top to bottom",
    "mirror_left_right": "mirrored left to right",
    "transpose": "mirrored along its main diagonal (transposed)",
    "transverse": "mirrored along its anti-diagonal (transversed)",
}


def describe(transform: str) -> str:
    """Words for a transform name of `TRANSFORMS` ("" for the identity)."""
    return _WORDS.get(transform, "")


def pdq_dihedral(rgb: np.ndarray) -> tuple[PerceptualHash, ...]:
    """The 8 PDQ hashes of an image's dihedral transforms, in `TRANSFORMS` order (the
    first is the plain `provenance.core.binding.pdq_hash`). One DCT for all 8.

    rgb: (H, W, 3) uint8 RGB pixels as displayed. Raises BindingError on any other shape
    or dtype, or an empty image.
    """
    hashes, quality = pdq_dihedral_bytes(rgb)
    return tuple(
        PerceptualHash(algorithm=PDQ_ALGORITHM, hash=packed, quality=quality) for packed in hashes
    )


def pdq_dihedral_bytes(rgb: np.ndarray) -> tuple[list[bytes], int]:
    """`pdq_dihedral`'s 8 hashes as 32-byte strings, and their quality (0..100), without a
    `PerceptualHash` object each (a scanner sends them packed). Raises as `pdq_dihedral`."""
    check_rgb(rgb)
    return pdq_dihedral256(np.ascontiguousarray(rgb))


def best_dihedral_distance(
    plain: Sequence[PerceptualHash],
    turned: Sequence[PerceptualHash],
    claimed: Sequence[PerceptualHash],
) -> tuple[int, str] | None:
    """Smallest Hamming distance between a file's hashes and a claim's, and the transform
    (a `TRANSFORMS` name) of the file that gives it.

    plain: the file's own hashes (transform "identity"); turned: its 7 other dihedral
    hashes in `TRANSFORMS` order after "identity" (may be empty: then only the identity
    is tried); claimed: the claim's soft bindings. Hashes of quality below
    PDQ_MIN_QUALITY are ignored. The identity wins ties. None when no usable pair.
    """
    usable = [h for h in claimed if h.algorithm == PDQ_ALGORITHM and h.quality >= PDQ_MIN_QUALITY]
    candidates = [(h, TRANSFORMS[0]) for h in plain]
    candidates += [(h, TRANSFORMS[1 + k]) for k, h in enumerate(turned[:DIHEDRAL_TURNS])]
    best: tuple[int, str] | None = None
    for h, name in candidates:
        if h.algorithm != PDQ_ALGORITHM or h.quality < PDQ_MIN_QUALITY:
            continue
        for c in usable:
            d = hamming(h.hash, c.hash)
            if best is None or d < best[0]:
                best = (d, name)
    return best


def turned_note(transform: str) -> str:
    """The reason naming how a copy, as displayed, is turned from the signed capture
    (image or video alike) by ``transform`` (a `TRANSFORMS` name other than the first)."""
    return f"as displayed, this file is the signed capture {describe(transform)}"


def turn_notes(transform: str, file_orientation: int, claimed_orientation: int) -> list[str]:
    """Reasons for a DERIVED verdict found through ``transform`` (a `TRANSFORMS` name):
    how the file is turned, and whether its EXIF orientation tag (1..8, 0 for none)
    differs from the one the claim recorded."""
    notes = []
    if transform != TRANSFORMS[0]:
        notes.append(turned_note(transform))
    if claimed_orientation and file_orientation != claimed_orientation:
        now = str(file_orientation) if file_orientation else "absent"
        notes.append(
            f"the file's EXIF orientation tag is {now} where the signed capture's was"
            f" {claimed_orientation}"
        )
    return notes
