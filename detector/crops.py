"""Keyed, per-request choice of crop positions.

An attacker who probes the detector with small edits of one image should not see the
same crops every time, while a test with a fixed secret must see the same result. So the
crops are drawn from HMAC-SHA256(secret, request key) (RFC 2104) in counter mode: each
block HMAC(secret, "prov-detector-crops" || 0x00 || u32be(len(key)) || key || u32be(i))
gives four 64-bit big-endian draws. Pure: bytes in, positions out.

Positions are stratified (jittered grid sampling): the range of top-left corners is cut
into a grid of about `count` cells of the image's aspect ratio, `count` distinct cells are
chosen, and each crop lands uniformly inside its cell. The crops therefore cover the
whole image for every key, so the score moves far less between secrets than with
independent uniform draws, while each position stays keyed.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterator
from dataclasses import dataclass

_DOMAIN = b"prov-detector-crops\x00"


@dataclass(frozen=True)
class CropPlan:
    """One crop to score: top-left (x, y) and side `size` in pixels."""

    x: int
    y: int
    size: int


def _draws(secret: bytes, key: bytes) -> Iterator[int]:
    prefix = _DOMAIN + len(key).to_bytes(4, "big") + key
    counter = 0
    while True:
        block = hmac.new(secret, prefix + counter.to_bytes(4, "big"), hashlib.sha256).digest()
        for i in range(0, 32, 8):
            yield int.from_bytes(block[i : i + 8], "big")
        counter += 1


def plan_crops(
    secret: bytes,
    request_key: bytes,
    width: int,
    height: int,
    size: int,
    count: int,
) -> list[CropPlan]:
    """`count` crops of an image of width x height pixels.

    size: the model's patch side in pixels. The grid has `rows` x `cols` >= count cells,
    rows / cols close to height / width; a keyed shuffle picks `count` distinct cells.
    Each crop lands uniformly inside its cell's share of [0, width - side] and
    [0, height - side], with side = min(size, width, height). Draws are 64-bit, reduced
    modulo the range (bias below 2^-40 for images under 2^24 px a side).
    """
    draws = _draws(secret, request_key)
    rows = min(count, max(1, round(math.sqrt(count * height / width))))
    cols = -(-count // rows)
    cells = list(range(rows * cols))
    for i in range(len(cells) - 1, 0, -1):  # Fisher-Yates with keyed draws
        j = next(draws) % (i + 1)
        cells[i], cells[j] = cells[j], cells[i]
    side = min(size, width, height)
    plan = []
    for cell in sorted(cells[:count]):
        # One draw per crop is skipped: it chose an ensemble member before the ensemble
        # was retired, and skipping it keeps every file's crops (so its score) as before.
        next(draws)
        x = _in_cell(next(draws), cell % cols, cols, width - side + 1)
        y = _in_cell(next(draws), cell // cols, rows, height - side + 1)
        plan.append(CropPlan(x, y, side))
    return plan


def _in_cell(draw: int, index: int, cells: int, span: int) -> int:
    """A position in [0, span) inside cell `index` of `cells` equal shares of the span
    (a share under one position collapses onto its start)."""
    lo = index * span // cells
    hi = max(lo + 1, (index + 1) * span // cells)
    return lo + draw % (hi - lo)
