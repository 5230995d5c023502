"""Exporting a logged capture with Content Credentials: a C2PA manifest embedded in
place, signed with the device key, carrying the sidecar; refused for links, and never
over another manifest."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from clients.device.sidecars import _free_backup
from clients.files import open_regular, read_bounded
from provenance.core.claims import SignedClaim
from provenance.core.errors import ConfigError, FileChangedError, MediaError
from provenance.core.keys import DeviceKey
from provenance.wire.sidecar import (
    MAX_SIDECAR_BYTES,
    decode_sidecar,
    embedded_sidecar,
    encode_sidecar,
)

if TYPE_CHECKING:
    from provenance.c2pa.result import C2paResult
    from provenance.c2pa.timestamp import TimestampAuthority


def check_embeddable(path: Path) -> None:
    """Refuse to embed a C2PA manifest into ``path`` when the export, a new file renamed
    over the name given (a crash leaves the old file or the new one whole), would not
    update every name of the file: a symbolic link (the link itself would become a
    regular file holding the manifest, the file it points to left without it) or a file
    with other hard links (they would keep the old bytes). Writing through instead would
    change bytes under a name the user did not give, or rewrite the file in place, where
    a crash leaves a truncated capture. Raises MediaError saying why and what to do (a
    path that cannot be examined is left to the read that follows, which says why).
    Source: rename(2), symlink(7), link(2). `embed_manifest` refuses both too
    (`provenance.c2pa.writer.refuse_links`); this says so in the words of `prov sign`."""
    from provenance.c2pa.writer import link_state

    target, names = link_state(path)
    if target is not None:
        raise MediaError(
            f"{path.name} is a symbolic link (to {target}): --c2pa writes the manifest into a"
            " new file renamed over the name given, which would replace the link with a"
            f" regular file and leave {target.name} without it; sign the file it points to"
            f" (`prov sign --c2pa {target}`), or a copy of it"
        )
    if names > 1:
        others = names - 1
        raise MediaError(
            f"{path.name} has {names} hard links: --c2pa writes the manifest into a new"
            " file renamed over this name, so the other"
            f" {'name' if others == 1 else f'{others} names'} would keep the bytes without"
            f" it; sign a copy (`cp {path} COPY`, then `prov sign --c2pa COPY`), or remove"
            " the other links first"
        )


def _own_manifest(
    path: Path, media_type: str, signed: SignedClaim, chain: bytes
) -> C2paResult | None:
    """The C2PA manifest ``path`` already carries when it is valid, holds ``signed`` and
    is signed by this device (the one `DeviceHome.embed_c2pa` wrote for this claim); None
    when it carries none (or its type takes none). This device's signer: the manifest's
    chains to a certificate of ``chain`` (the device's PEM chain, leaf first) and bears
    the leaf's common name, the device id its authority certified; a sidecar is public,
    so its claim alone proves nothing of who signed the manifest. Raises MediaError when
    the file carries another manifest store: another claim's, another signer's, another
    tool's, or one that does not validate (never replaced); ConfigError when ``chain``
    holds no certificate. The file is read here and let go before the export reads it
    again."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from provenance.c2pa.container import may_hold_manifest_store, strip_manifest_store
    from provenance.c2pa.reader import C2paTrust, read_c2pa
    from provenance.c2pa.writer import WRITABLE_TYPES

    if media_type not in WRITABLE_TYPES:
        return None  # `embed_manifest` refuses the type, saying which it takes
    try:
        with open_regular(path) as f:  # a FIFO or device swapped in: refused, never waited on
            data = f.read()
    except OSError as e:
        raise MediaError(f"cannot read {path.name}: {e.strerror or e}") from e
    if not may_hold_manifest_store(data, media_type):
        return None
    if strip_manifest_store(data, media_type) == data:
        return None
    del data
    trust = C2paTrust(chain)  # ConfigError: no certificate
    leaf = x509.load_pem_x509_certificates(chain)[0]
    names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    found = read_c2pa(path, media_type, trust=trust)
    valid = found.present and found.validation_state in ("Valid", "Trusted")
    ours = found.trusted_anchor and [str(n.value) for n in names] == [found.signer]
    if valid and ours and _holds_claim(found.provenance_assertion, signed):
        return found
    if not found.present:
        what = f"a C2PA manifest store that cannot be read ({found.error})"
    elif not valid:
        codes = ", ".join(found.validation_codes) or found.validation_state
        what = f"a C2PA manifest store that does not validate ({codes})"
    elif not _holds_claim(found.provenance_assertion, signed):
        what = "another C2PA manifest store (not this claim's)"
    else:
        what = (
            f"a C2PA manifest store with this claim not signed by this device (its signer"
            f" {found.signer!r} does not chain to this device's certificate)"
        )
    raise MediaError(
        f"{path.name} already carries {what}; it is never replaced, so the file is left"
        " as it is (its sidecar still proves the capture)"
    )


def _holds_claim(assertion: Mapping[str, object] | None, signed: SignedClaim) -> bool:
    """Whether a C2PA manifest's provenance assertion (`C2paResult.provenance_assertion`)
    carries ``signed`` as its evidence: the manifest `DeviceHome.embed_c2pa` wrote for
    this claim (its receipt may be older than the sidecar's)."""
    found = embedded_sidecar(assertion)
    return found is not None and found.signed_claim == signed


class C2paExport:
    """Embedding a C2PA manifest into a logged capture (`DeviceHome.embed_c2pa`)."""

    def embed_c2pa(
        self,
        key: DeviceKey,
        path: Path,
        side_path: Path,
        chain: bytes,
        tsa: TimestampAuthority | None = None,
    ) -> C2paResult | None:
        """Embed a C2PA manifest into ``path`` in place, signed with the device key, with
        our sidecar (claim and receipt) as a custom assertion and the log checkpoint, and
        with an RFC 3161 timestamp from ``tsa`` when given. Returns None when embedded;
        writing nothing, the manifest as read when ``path`` already carries a valid one
        holding this sidecar's signed claim, signed by this device's certificate (a
        second ``prov sign --c2pa`` of the file; its ``signed_at`` is None when it has no
        timestamp, whatever ``tsa`` is now).

        The claim's SHA-256 stays valid: it covers the bytes with the manifest store
        removed (docs/c2pa.md). Raises FileChangedError (nothing written; the sidecar and
        the log entry stay) when ``path`` no longer holds the bytes the claim binds, or
        changed while the manifest was made; ConfigError if the claim is not yet logged,
        MediaError when the file carries another manifest store (another claim's,
        another signer's, or one that does not validate: it is never replaced),
        ConfigError when ``chain`` holds no certificate, TimestampError (file untouched)
        when the TSA fails, MediaError for a symbolic link or a file with other hard
        links (`check_embeddable`), NotRegularFileError (a MediaError) when ``side_path``
        is a FIFO, device or folder, MediaTooLargeError when it is over MAX_SIDECAR_BYTES
        (not read), MediaError when it cannot be read, ClaimError when it is no sidecar;
        otherwise as `embed_manifest`.
        """
        from provenance.c2pa.writer import embed_manifest

        check_embeddable(path)
        try:  # a FIFO or device swapped in: refused, never waited on; a huge one unread
            data = read_bounded(side_path, MAX_SIDECAR_BYTES, "sidecar")
        except OSError as e:
            raise MediaError(f"cannot read {side_path.name}: {e.strerror or e}") from e
        sidecar = decode_sidecar(data)
        if sidecar.receipt is None:
            raise ConfigError(
                f"{path.name}: the claim is not logged yet; C2PA export needs the receipt"
            )
        found = _own_manifest(path, sidecar.claim.media_type, sidecar.signed_claim, chain)
        if found is not None:
            return found
        try:
            embed_manifest(
                path,
                path,
                sidecar.claim.media_type,
                key,
                chain,
                json.loads(encode_sidecar(sidecar)),
                sidecar.receipt.checkpoint,
                title=path.name,
                tsa=tsa,
                expected_sha256=sidecar.claim.hard_binding.sha256,
            )
        except FileChangedError as e:
            raise FileChangedError(
                f"{e}; the claim is logged at leaf {sidecar.receipt.leaf_index} for the"
                f" earlier bytes, and {side_path.name} holds it with its receipt; no manifest"
                f" was written and {path.name} is left as it is now. `prov sign --force"
                f" --c2pa` on it signs what it holds now (the old sidecar kept as"
                f" {_free_backup(side_path).name})"
            ) from e
        return None
