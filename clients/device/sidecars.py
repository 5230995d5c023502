"""A sidecar already beside a file being signed: read, compared with the new bytes,
refused in words, or copied aside first; and what `DeviceHome.sign_file` did
(`SignedFile`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clients.device.disk import atomic_write
from clients.device.measuring import ClaimFields
from clients.files import read_bounded
from provenance.core.errors import ConfigError, ProvenanceError
from provenance.media.assets import AssetLimits
from provenance.wire.sidecar import MAX_SIDECAR_BYTES, Sidecar, decode_sidecar


def _binds(
    old: Sidecar,
    path: Path,
    fields: ClaimFields,
    limits: AssetLimits,
    stripped: Callable[[], bytes | None] | None = None,
) -> bool:
    """Whether the claim of ``old`` binds the bytes of ``path`` as `prov verify` checks
    it: the same hard binding, or, for an image since exported with Content Credentials
    (`prov sign --c2pa` embeds a manifest store in place), the SHA-256 of its bytes with
    the store removed (`provenance.c2pa.container.content_sha256`). ``stripped`` gives
    that SHA-256 (`_stripped_sha256` of ``path``, computed once by its caller when many
    claims are compared with one file); read here when None. Raises MediaError as
    `read_bounded` does."""
    bound = old.claim.hard_binding
    if bound == fields["hard_binding"]:
        return True
    if bound.chunk_size or not fields["media_type"].startswith("image/"):
        return False
    content = stripped() if stripped is not None else _stripped_sha256(path, fields, limits)
    return content is not None and content == bound.sha256


def _stripped_sha256(path: Path, fields: ClaimFields, limits: AssetLimits) -> bytes | None:
    """The SHA-256 of the image ``path`` with its Content Credentials manifest store
    removed (`provenance.c2pa.container.content_sha256`); None for a file that is no
    image, holds no store, or one that cannot be removed. Reads the whole image (up to
    ``limits.max_image_bytes``); raises MediaError as `read_bounded` does."""
    media_type = fields["media_type"]
    if not media_type.startswith("image/"):
        return None
    from provenance.c2pa.container import content_sha256, may_hold_manifest_store

    data = read_bounded(path, limits.max_image_bytes, "image")
    if not may_hold_manifest_store(data, media_type):
        return None
    try:
        return content_sha256(data, media_type)
    except ProvenanceError:  # a store that cannot be removed: not what was signed
        return None


class SidecarExistsError(ConfigError):
    """`DeviceHome.sign_file` would replace a sidecar this device keeps no copy of (one
    holding a log receipt, or another device's claim); `prov sign` exits 2."""


def _read_old_sidecar(path: Path) -> Sidecar | None:
    """The sidecar at ``path``; None when there is none or it cannot be read or decoded
    (such a file is no claim, and signing replaces it)."""
    try:
        return decode_sidecar(read_bounded(path, MAX_SIDECAR_BYTES, "sidecar"))
    except (OSError, ProvenanceError):
        return None


def _refusal(side_path: Path, old: Sidecar, same_content: bool) -> str:
    """Why `sign_file` will not replace ``old`` at ``side_path``, and what --force does."""
    device = f"device {old.signed_claim.key_id.hex()[:16]}…"
    content = (
        "this content"
        if same_content
        else "other content (the file changed since, or the sidecar is another file's)"
    )
    if old.receipt is not None:
        what = (
            f"the log receipt (leaf {old.receipt.leaf_index}) of claim #{old.claim.sequence}"
            f" by {device}, for {content}"
        )
    else:
        what = f"claim #{old.claim.sequence} by {device}, for {content}, not queued here"
    return (
        f"{side_path.name} already holds {what}; it is left as it is. `prov sign"
        f" --force` signs it anyway and first copies the old sidecar to"
        f" {_free_backup(side_path).name}"
    )


def _free_backup(side_path: Path) -> Path:
    """The first of ``NAME.bak``, ``NAME.bak2``, ... beside ``side_path`` that does not
    exist: where `_backup` copies the sidecar now, and what the refusals advise."""
    n = 1
    while (target := side_path.with_name(f"{side_path.name}.bak{n if n > 1 else ''}")).exists():
        n += 1
    return target


def _backup(side_path: Path) -> Path:
    """Copy ``side_path`` to `_free_backup`; returns it. Raises OSError (nothing signed
    then)."""
    data = read_bounded(side_path, MAX_SIDECAR_BYTES, "sidecar")
    target = _free_backup(side_path)
    atomic_write(target, data)
    return target


@dataclass(frozen=True)
class SignedFile:
    """What `DeviceHome.sign_file` did: the sidecar, where it was written (beside the
    file, or in the device folder's ``sidecars/`` when that failed, with the reason in
    ``sidecar_problem``), and the queue entry holding the claim. ``already``: the file
    was signed before (``sidecar`` is that claim, logged or still queued; ``queue_file``
    None once logged) and nothing was signed now; ``backup``: where a replaced sidecar
    was copied (with ``force``, or one whose receipt does not verify); ``note``: what
    was found wrong with the sidecar there and done about it ("" when nothing)."""

    sidecar: Sidecar
    sidecar_path: Path
    queue_file: Path | None
    sidecar_problem: str = ""
    already: bool = False
    backup: Path | None = None
    note: str = ""
