"""Small photos for device tests, each different (a seed), and the sequence of the claim
a sidecar holds: helpers the device tests share."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from provenance.wire.sidecar import decode_sidecar


def noise_photo(folder: Path, name: str, seed: int, size: int = 96) -> Path:
    """Write a ``size`` x ``size`` RGB noise image ``folder/name`` (its format from the
    name's suffix), different for each ``seed``; returns its path."""
    path = folder / name
    Image.effect_noise((size, size), 40 + seed).convert("RGB").save(path)
    return path


def sidecar_sequence(photo: Path) -> int:
    """The sequence of the claim in ``photo``'s sidecar (``PHOTO.prov`` beside it)."""
    return decode_sidecar(photo.with_name(photo.name + ".prov").read_bytes()).claim.sequence
