"""Embed a C2PA manifest, signed with the device key, into one of our captures.

The manifest has a ``c2pa.created`` action with digital source type digitalCapture
(IPTC), and our own assertion `PROVENANCE_ASSERTION_LABEL` whose data is
``{"evidence": <the caller's JSON-able dict: signed claim and receipt>, "checkpoint":
<the log's signed checkpoint or null>}``. c2pa-python's callback signer hands the
to-be-signed bytes to the device key, so the private key never leaves `key`.

The embedded file keeps our hard binding: `strip_manifest_store` of the output gives
back the source bytes exactly (checked before the output is written), so the claim's
SHA-256 of the capture is also the binding of the exported file (docs/c2pa.md).
With a `TimestampAuthority`, the claim signature gets an RFC 3161 timestamp in its
``sigTst2`` header (C2PA 2.1, 10.3.2.5; `provenance.c2pa.timestamp`), so validators judge
the leaf certificate at the signing time instead of the current time. Without one,
signing makes no network call.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Callable, Mapping
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from provenance.c2pa.container import (
    BMFF_TYPES,
    MAX_BMFF_BOXES,
    STRIPPABLE_TYPES,
    bmff_box_problem,
    strip_manifest_store,
)
from provenance.c2pa.reader import reader_settings
from provenance.c2pa.result import PROVENANCE_ASSERTION_LABEL
from provenance.c2pa.timestamp import TimestampAuthority, timestamp_file
from provenance.cli.atomicfile import remove_leftovers, temp_names_of, write_atomically
from provenance.cli.files import open_regular
from provenance.core.errors import (
    BindingError,
    FileChangedError,
    KeyMaterialError,
    MediaError,
    MediaTooLargeError,
    SignatureError,
)
from provenance.core.files import file_identity, holds_sha256

DIGITAL_CAPTURE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
GENERATOR = "media-provenance"
#: Media types `embed_manifest` writes.
WRITABLE_TYPES = STRIPPABLE_TYPES


class SigningKey(Protocol):
    """What the writer needs of a device key (`provenance.core.keys.DeviceKey` fits)."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


def embed_manifest(
    src_path: Path,
    dst_path: Path,
    media_type: str,
    key: SigningKey,
    cert_chain_pem: bytes,
    assertion: Mapping[str, Any],
    checkpoint: str | None,
    *,
    title: str | None = None,
    tsa: TimestampAuthority | None = None,
    expected_sha256: bytes | None = None,
) -> bytes:
    """Write src_path with a signed C2PA manifest to dst_path (atomically replaced).

    Returns the 32-byte SHA-256 of the source, which is also `content_sha256` of the
    output: the hard binding the claim in `assertion` must carry.

    media_type: one of WRITABLE_TYPES; cert_chain_pem: the device's leaf certificate
    first, then its issuers (`issue_device_certificate` output); assertion: JSON-able
    dict stored as the assertion's "evidence"; checkpoint: the log checkpoint text;
    title: the manifest's dc:title (default: the destination file name); tsa: the RFC
    3161 timestamp authority to timestamp the claim signature with (None: no timestamp,
    no network call); expected_sha256: the 32-byte SHA-256 the claim in `assertion`
    binds (its hard binding), which src_path's bytes must have (None: not checked).

    The manifest is made of the bytes read once from src_path, and is written only if
    src_path still holds them when the output is about to replace dst_path: the same
    file (device, inode, size and modification time; `file_identity`) with
    the same SHA-256 (`holds_sha256`; a same-size write the timestamps miss). Writing
    in place (dst_path is src_path), a write made meanwhile is thus never undone by the
    rename; the window left is that between the check and the rename (microseconds).

    Raises MediaError for an unsupported media type, a dst_path that is a symbolic link
    or has other hard links (`refuse_links`: nothing is written), an unreadable source or
    one that already carries a manifest store; MediaTooLargeError for an MP4 or MOV of more than
    MAX_BMFF_BOXES boxes (`bmff_box_problem`: the walks that check and remove a manifest
    store stop there); KeyMaterialError if the leaf certificate is not
    for `key`; SignatureError if the key or the C2PA library fails to sign (an expired
    or unacceptable certificate included); TimestampError (nothing written) if the TSA
    cannot be reached within tsa.timeout_s or its answer is not a good token for this
    signature; BindingError if the output would not strip back to the source bytes;
    FileChangedError (nothing written) if src_path's bytes do not hash to
    expected_sha256, or src_path changed after it was read.
    """
    if media_type not in WRITABLE_TYPES:
        raise MediaError(
            f"cannot embed C2PA in {media_type!r}; supported: {', '.join(sorted(WRITABLE_TYPES))}"
        )
    refuse_links(dst_path)  # before the work; again just before the rename
    try:
        with open_regular(src_path, MediaError) as f:  # a FIFO: refused, never waited on
            read_from = os.fstat(f.fileno())
            source = f.read()
    except OSError as e:
        raise MediaError(f"cannot read {str(src_path)!r}: {e.strerror or e}") from e
    digest = hashlib.sha256(source).digest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise FileChangedError(
            f"{src_path.name} changed after it was signed: its bytes no longer have the"
            " SHA-256 its claim binds"
        )
    if media_type in BMFF_TYPES and bmff_box_problem(source) is not None:
        raise MediaTooLargeError(
            f"{src_path.name} has more than {MAX_BMFF_BOXES:,} boxes, the most a C2PA"
            " manifest is embedded in here (a fragmented MP4 holds about 7 per fragment:"
            " a recording in 1-second fragments reaches it in 6 to 10 minutes)"
        )
    if strip_manifest_store(source, media_type) != source:
        raise MediaError(f"{src_path.name} already carries a C2PA manifest store")
    check_leaf_key(cert_chain_pem, key.public_key)

    definition = {
        "claim_generator_info": [{"name": GENERATOR, "version": _version()}],
        "title": title or dst_path.name,
        "assertions": [
            {
                "label": PROVENANCE_ASSERTION_LABEL,
                "data": {"evidence": dict(assertion), "checkpoint": checkpoint},
            }
        ],
    }
    settings = reader_settings(None) | {"builder": {"thumbnail": {"enabled": False}}}
    output = io.BytesIO()
    callback_errors: list[Exception] = []

    def sign(data: bytes) -> bytes:
        try:
            return key.sign(data)
        except Exception as e:
            callback_errors.append(e)
            raise

    try:
        signer = c2pa.Signer.from_callback(
            sign, c2pa.C2paSigningAlg.ED25519, cert_chain_pem.decode("ascii"), None
        )
        with signer, c2pa.Builder(definition, context=c2pa.Context.from_dict(settings)) as b:
            b.add_action({"action": "c2pa.created", "digitalSourceType": DIGITAL_CAPTURE})
            b.sign(signer, media_type, io.BytesIO(source), output)
    except c2pa.C2paError as e:
        if callback_errors:
            raise SignatureError(f"the device key failed to sign: {callback_errors[0]}") from e
        if str(e).startswith("NotSupported"):
            raise MediaError(f"C2PA cannot embed into this {media_type} file: {e}") from e
        raise SignatureError(f"C2PA signing failed: {e}") from e

    embedded = output.getvalue()
    if tsa is not None:
        embedded = timestamp_file(embedded, media_type, tsa)
    if strip_manifest_store(embedded, media_type) != source:
        raise BindingError(
            "the embedded file does not strip back to the source bytes; refusing to write it"
        )
    _write_atomically(dst_path, embedded, partial(_still_holds, src_path, read_from, digest))
    return digest


def link_state(path: Path) -> tuple[Path | None, int]:
    """(the file a symbolic link ``path`` points to, fully resolved, else None; the number
    of hard links of ``path`` itself, not followed). (None, 1) when ``path`` does not
    exist or cannot be examined (`os.lstat` fails)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None, 1
    target = Path(os.path.realpath(path)) if stat.S_ISLNK(st.st_mode) else None
    return target, st.st_nlink


def refuse_links(path: Path) -> None:
    """Raise MediaError when a new file renamed over ``path`` (as `embed_manifest` writes)
    would not update every name of the file: a symbolic link (the link itself would become
    a regular file, the file it points to left as it was) or a file with other hard links
    (they would keep the old bytes). A path that does not exist, or cannot be examined, is
    left to the write. Source: rename(2), symlink(7), link(2)."""
    target, names = link_state(path)
    if target is not None:
        raise MediaError(
            f"{path.name} is a symbolic link (to {target}): the manifest is written into a"
            " new file renamed over that name, which would replace the link with a regular"
            f" file and leave {target.name} as it was; write to the file it points to, or"
            " to a copy"
        )
    if names > 1:
        raise MediaError(
            f"{path.name} has {names} hard links: the manifest is written into a new"
            " file renamed over that name, so its other names would keep the old bytes;"
            " write to a copy, or remove the other links first"
        )


def _still_holds(path: Path, read_from: os.stat_result, sha256: bytes) -> None:
    """Check that ``path`` still names the file ``read_from`` (its ``fstat`` when it was
    read) describes, by `file_identity`, and that it holds bytes of SHA-256 ``sha256``
    (`holds_sha256`: a same-size write the timestamps miss). Raises FileChangedError."""
    try:  # a FIFO renamed over it: refused, never waited on (before revc2pa55: open())
        with open_regular(path, MediaError) as f:
            same = file_identity(os.fstat(f.fileno())) == file_identity(read_from)
            same = same and holds_sha256(f, sha256)
    except (OSError, MediaError):
        same = False
    if not same:
        raise FileChangedError(
            f"{path.name} changed while its C2PA manifest was being made (replaced or"
            " written to after its bytes were read)"
        )


def check_leaf_key(cert_chain_pem: bytes, public_key: bytes) -> None:
    """Check that the PEM chain ``cert_chain_pem`` (leaf first) reads and that its leaf
    certifies the raw Ed25519 key ``public_key``. Raises KeyMaterialError when not."""
    try:
        leaf = x509.load_pem_x509_certificates(cert_chain_pem)[0]
    except (ValueError, IndexError) as e:
        raise KeyMaterialError(f"the certificate chain is not PEM: {e}") from e
    leaf_key = leaf.public_key()
    if (
        not isinstance(leaf_key, Ed25519PublicKey)
        or leaf_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        != public_key
    ):
        raise KeyMaterialError("the leaf certificate does not certify this device key")


def _write_atomically(path: Path, data: bytes, check: Callable[[], None]) -> None:
    """Replace ``path`` with ``data`` (`write_atomically`): a temporary file beside it
    (`temp_name_for`; those a signing killed mid-write left there, each a whole or
    partial copy of the file, are removed first: `remove_leftovers`), given the mode of
    the file it replaces (made 0600, then given that mode: a capture others could read
    must not become readable by its owner alone), written and fsynced, ``check()`` called (what it raises is raised,
    the temporary file removed and ``path`` untouched), renamed over it, and the folder
    fsynced, so a crash leaves the old file or the new one whole, never a truncated
    capture. A new ``path`` gets 0666 less the umask. Raises MediaError, also when
    ``path`` is by then a symbolic link or has other hard links (`refuse_links`)."""

    def before_replace() -> None:
        check()
        refuse_links(path)  # made a link while the manifest was made

    remove_leftovers(path.parent, temp_names_of(path))
    try:
        write_atomically(path, data, mode=None, before_replace=before_replace)
    except OSError as e:
        raise MediaError(f"cannot write {str(path)!r}: {e.strerror or e}") from e


def _version() -> str:
    try:
        return metadata.version(GENERATOR)
    except metadata.PackageNotFoundError:
        return "0+unknown"
