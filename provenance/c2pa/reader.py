"""Read and validate the C2PA manifest store of an incoming file, safely.

The native reader (c2pa-rs through c2pa-python) runs in a separate process from a
`ReaderPool`, under a size limit, a wall-clock limit and an address-space limit, with
remote-manifest fetching and OCSP fetching always off: reading a file never makes a
network call, whatever URL the file names. Trust is what the operator configures
(`C2paTrust`); without it every signer reads as untrusted.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509

from provenance.c2pa.container import STRIPPABLE_TYPES, reader_walk_problem
from provenance.c2pa.pool import ReaderPool
from provenance.c2pa.result import C2paResult, failed
from provenance.c2pa.signing_time import (
    SIGNING_TIME_MAX_BYTES,
    SigningTimePolicy,
    with_signing_time,
)
from provenance.c2pa.timestamp import MAX_ANCHORS_BYTES, NOT_PEM, TsaTrust
from provenance.cli.files import open_regular_fd, read_capped
from provenance.core.errors import ConfigError, FileChangedError, MediaError
from provenance.core.files import FileView


@dataclass(frozen=True)
class C2paTrust:
    """Trust anchors for C2PA signers, as the operator configures them.

    anchors_pem: one or more PEM root certificates (c2pa-rs ``trust.trust_anchors``);
    trust_config: the extended key usages a signer may carry, one OID per line with
    ``//`` comments (c2pa-rs ``trust.trust_config``, the ``store.cfg`` format), or None
    for the reader's default list. Raises ConfigError on construction if anchors_pem
    holds no parsable certificate.
    """

    anchors_pem: bytes
    trust_config: str | None = None

    def __post_init__(self) -> None:
        try:
            certificates = x509.load_pem_x509_certificates(self.anchors_pem)
        except ValueError as e:  # not the parser's words: "MalformedFraming", a FAQ URL
            raise ConfigError(f"C2PA trust anchors are not PEM certificates: {NOT_PEM}") from e
        if not certificates:
            raise ConfigError("C2PA trust anchors hold no certificate")

    @classmethod
    def from_files(cls, anchors: Path, trust_config: Path | None = None) -> C2paTrust:
        """Load anchors (PEM bundle) and an optional EKU list (`read_trust_config`);
        ConfigError, naming the file, if either cannot be read or the anchors hold no PEM
        certificate."""
        anchors_pem = read_capped(anchors, MAX_ANCHORS_BYTES, "C2PA trust anchors")
        config = read_trust_config(trust_config)
        try:
            return cls(anchors_pem=anchors_pem, trust_config=config)
        except ConfigError as e:
            raise ConfigError(f"{e} in {anchors}") from e


def read_trust_config(path: Path | None) -> str | None:
    """The text of a C2PA EKU list file (`C2paTrust.trust_config`; None: none given).
    Raises ConfigError, naming the file, when it cannot be read, is larger than
    `MAX_ANCHORS_BYTES` or is not UTF-8 text."""
    if path is None:
        return None
    data = read_capped(path, MAX_ANCHORS_BYTES, "C2PA trust settings")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"cannot read C2PA trust settings {path}: {e}") from e


def with_tsa_roots(trust: C2paTrust | None, tsa: TsaTrust | None) -> C2paTrust | None:
    """The trust c2pa-rs reads with when TSA roots are configured: the signer anchors
    plus the TSA roots. c2pa-rs checks a timestamp's chain against its one anchor list,
    and judges an expired signer at the timestamp's time only for a TSA on it (measured
    with c2pa-rs 0.91.3: otherwise ``signingCredential.expired``). The TSA roots then
    also anchor signers, subject to the EKU list (a TSA leaf carries only
    id-kp-timeStamping). Raises nothing."""
    if tsa is None:
        return trust
    if trust is None:
        return C2paTrust(tsa.roots_pem)
    return replace(trust, anchors_pem=trust.anchors_pem.rstrip(b"\n") + b"\n" + tsa.roots_pem)


@dataclass(frozen=True)
class C2paLimits:
    """Limits on reading one untrusted file.

    max_bytes: largest asset (and largest sidecar manifest) read, bytes; timeout_s:
    wall-clock limit of one read, seconds, after which the worker is killed;
    memory_bytes: address-space limit of the worker process during the read, bytes.
    """

    max_bytes: int = 1 << 30
    timeout_s: float = 30.0
    memory_bytes: int = 4 << 30


DEFAULT_LIMITS = C2paLimits()


def reader_settings(trust: C2paTrust | None) -> dict[str, Any]:
    """c2pa-rs settings for reading: no remote manifests, no OCSP, the given trust."""
    settings: dict[str, Any] = {
        "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
    }
    if trust is not None:
        settings["trust"] = {"trust_anchors": trust.anchors_pem.decode("ascii")}
        if trust.trust_config is not None:
            settings["trust"]["trust_config"] = trust.trust_config
    return settings


def read_c2pa(
    source: str | os.PathLike[str] | bytes,
    media_type: str | None = None,
    trust: C2paTrust | None = None,
    limits: C2paLimits = DEFAULT_LIMITS,
    *,
    manifest_data: bytes | None = None,
    pool: ReaderPool | None = None,
    signing_time: SigningTimePolicy | None = None,
) -> C2paResult:
    """Read and validate the C2PA manifest store of a file.

    source: a file path or the file's bytes; media_type: e.g. "image/jpeg", or None to
    let the reader detect it from the bytes; manifest_data: a sidecar manifest store
    (``.c2pa`` bytes) to validate against the asset instead of an embedded one; pool:
    the worker pool to use (a shared one-worker pool by default); signing_time: judge the
    signer's certificate at the time an RFC 3161 timestamp or our log receipt proves
    (`provenance.c2pa.signing_time`, JPEG/PNG/MP4/MOV up to SIGNING_TIME_MAX_BYTES: the
    file is read into memory) instead of leaving the reader's current-time verdict; None
    keeps the reader's result as it is.

    A path is opened once (`_opened`: never waiting on a FIFO) and must be a regular
    file; its size is that of the open descriptor (``fstat``), and every read of it (the
    walk, the worker's, the signing time's) goes through that descriptor and stops at
    that size: a file swapped after the open is not read, and bytes appended to it are
    not read past the limit checked.

    Returns a C2paResult: present=False with no error when the file carries no
    manifest; present=False with error_kind/error when the manifest cannot be read
    (a remote-only manifest, a malformed or hostile file, TooLarge, Timeout, Crashed);
    otherwise the validation state, codes and manifest summary. A BMFF file, PNG, WebP or
    TIFF of more boxes, chunks or IFD entries than the reader reads in bounded time is
    not given to it (TooLarge, `provenance.c2pa.container.reader_walk_problem`). Raises
    MediaError if a path cannot be opened or is not a regular file (a FIFO, a device, a
    folder: "cannot read PATH: it is a FIFO (named pipe), not a regular file"),
    FileChangedError if the file got shorter while it was read, and ConfigError if no
    worker can be started. Their ``public`` text names no path (a server's upload file).
    """
    if isinstance(source, bytes):
        return _read(source, media_type, trust, limits, manifest_data, pool, signing_time)
    with _opened(os.path.abspath(source)) as view:
        return _read(view, media_type, trust, limits, manifest_data, pool, signing_time)


def _read(
    asset: bytes | FileView,
    media_type: str | None,
    trust: C2paTrust | None,
    limits: C2paLimits,
    manifest_data: bytes | None,
    pool: ReaderPool | None,
    signing_time: SigningTimePolicy | None,
) -> C2paResult:
    """`read_c2pa` of the asset's bytes or of a `FileView` of its open file (`_opened`),
    whose size is the one checked against the limit and the most read of it."""
    size = len(asset)
    for what, length in (("asset", size), ("sidecar manifest", len(manifest_data or b""))):
        if length > limits.max_bytes:
            return failed(
                "TooLarge",
                f"the {what} is {length} bytes, over the C2PA limit of {limits.max_bytes}",
            )
    if media_type is not None and (problem := _walk_problem(asset, media_type)):
        return failed(
            "TooLarge",
            f"{problem}: not given to the C2PA reader, so its Content Credentials were not"
            " checked (another C2PA validator, such as c2patool, can check them)",
        )
    data, view = (None, asset) if isinstance(asset, FileView) else (asset, None)
    result = (pool or _shared_pool()).read(
        data=data,
        fd=None if view is None else view.fd,
        size=size,
        media_type=media_type,
        settings_json=json.dumps(reader_settings(trust)),
        manifest=manifest_data,
        timeout_s=limits.timeout_s,
        memory_bytes=limits.memory_bytes,
    )
    if result.error_kind == "FileChanged" and view is not None:  # cut as the worker read it
        said = (result.error or "").removeprefix("the asset ")
        raise _cut(FileChangedError(f"{view.name} {said}"))
    if signing_time is None or not result.present or media_type not in STRIPPABLE_TYPES:
        return result
    if size > SIGNING_TIME_MAX_BYTES:
        return replace(
            result,
            signing_time_error=f"signing time not assessed: the file is over"
            f" {SIGNING_TIME_MAX_BYTES >> 20} MiB",
        )
    if data is None:
        assert view is not None  # one of the two is the asset
        try:
            data = view[0:size]  # the bytes checked, through the one descriptor
        except FileChangedError as e:
            raise _cut(e) from e
        except OSError as e:
            raise _unreadable(view.name, e) from e
    return with_signing_time(result, data, media_type, signing_time)


@contextmanager
def _opened(path: str) -> Iterator[FileView]:
    """The regular file at ``path`` (symbolic links followed), opened once for reading
    as a `FileView` of the size ``fstat`` gives its descriptor, closed on leaving.

    A path that is not a regular file is refused without being opened for reading
    (`provenance.cli.files.open_regular_fd`: judged on a descriptor that reads nothing,
    for opening some devices acts on them, and the file judged is the file read, so a
    symbolic link swapped in meanwhile is never opened); the open never waits (a FIFO
    with no writer would hold open() for good). Raises MediaError "cannot read PATH: it
    is a FIFO (named pipe), not a regular file" (`provenance.core.files.file_kind`), or
    the system's reason when it cannot be opened; its public text names no path."""
    try:
        fd, st = open_regular_fd(path, lambda kind: _not_regular(path, kind))
    except OSError as e:
        raise _unreadable(path, e) from e
    try:
        yield FileView(fd, st.st_size, path)
    finally:
        os.close(fd)


def _not_regular(path: str, kind: str) -> MediaError:
    """MediaError for ``path``, which is ``kind`` (`provenance.core.files.file_kind`),
    not a regular file."""
    why = f"it is {kind}, not a regular file"
    return MediaError(f"cannot read {path!r}: {why}", public=f"cannot read the asset: {why}")


def _unreadable(path: str, e: OSError) -> MediaError:
    """MediaError for ``path`` that cannot be read: the path is the user's own to a
    command, a server's upload file to a caller (its public text names none)."""
    why = e.strerror or type(e).__name__
    return MediaError(f"cannot read {path!r}: {why}", public=f"cannot read the asset: {why}")


def _cut(e: FileChangedError) -> FileChangedError:
    """``e`` (a file cut short while it was read, its message naming the path) with a
    public text that names none: a server's upload file."""
    return FileChangedError(
        str(e),
        public="the asset got shorter while it was read (cut or rewritten by another program)",
    )


def _walk_problem(asset: bytes | FileView, media_type: str) -> str | None:
    """`reader_walk_problem` of the asset's bytes or of its open file (a `FileView` of
    `_opened`, read by position as it is walked: only its box, chunk or IFD headers are
    read). Raises MediaError if the file cannot be read, and FileChangedError if it got
    shorter while it was walked (its public text names no path: a server's upload file).
    The file is not mapped (``mmap``): a mapped file cut short meanwhile would kill the
    process with SIGBUS."""
    if not isinstance(asset, FileView):
        return reader_walk_problem(asset, media_type)
    try:
        return reader_walk_problem(asset, media_type)
    except FileChangedError as e:
        raise _cut(e) from e
    except OSError as e:
        raise _unreadable(asset.name, e) from e


_shared: ReaderPool | None = None
_shared_lock = threading.Lock()


def _shared_pool() -> ReaderPool:
    """The process-wide one-worker pool, created on first use and closed at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ReaderPool(workers=1)
            atexit.register(_shared.close)
        return _shared
