"""Keyed, per-request choice of crop positions and ensemble members.

An attacker who probes the detector with small edits of one image should not see the
same crops every time, while a test with a fixed secret must see the same result. So the
crops are drawn from HMAC-SHA256(secret, request key) (RFC 2104) in counter mode: each
block HMAC(secret, "prov-detector-crops" || 0x00 || u32be(len(key)) || key || u32be(i))
gives four 64-bit big-endian draws. Pure: bytes in, positions out.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass

_DOMAIN = b"prov-detector-crops\x00"


@dataclass(frozen=True)
class CropPlan:
    """One crop to score: top-left (x, y) and side `size` in pixels, and the index of the
    ensemble member that scores it."""

    x: int
    y: int
    size: int
    member: int


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
    sizes: tuple[int, ...],
    count: int,
) -> list[CropPlan]:
    """`count` crops of an image of width x height pixels.

    sizes: the patch side of each ensemble member (one entry for a single model); each
    crop first draws its member uniformly, then x in [0, width - side] and y in
    [0, height - side] uniformly, with side = min(member's size, width, height). Draws are
    64-bit, reduced modulo the range (bias below 2^-40 for images under 2^24 px a side).
    """
    draws = _draws(secret, request_key)
    plan = []
    for _ in range(count):
        member = next(draws) % len(sizes)
        side = min(sizes[member], width, height)
        x = next(draws) % (width - side + 1)
        y = next(draws) % (height - side + 1)
        plan.append(CropPlan(int(x), int(y), side, int(member)))
    return plan
