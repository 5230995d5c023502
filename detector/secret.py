"""The server's detector crop secret: 32 bytes in a file beside the database, or in a
shared database's meta table. Apart from `detector.serving` so that `prov serve` reads
and checks it (refusing a damaged one) before it imports torch. Stdlib only."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Protocol

from provenance.cli.atomicfile import create_atomically, remove_leftovers
from provenance.core.errors import DetectorError

#: Bytes of the server's crop secret.
SECRET_BYTES = 32


def load_or_create_secret(path: Path) -> bytes:
    """The server's crop secret (32 bytes) kept in `path`; created on first use with mode
    0600 (os.urandom), read back unchanged on every later start. The file appears whole or
    not at all (written to a temporary file, then linked), so servers starting together
    (several on one PostgreSQL database) or a start killed mid-write never leave or read
    a short one; of two created at once, the first linked is kept and read by both.

    Raises DetectorError if the file cannot be created or read, is not a regular file (a
    folder, a FIFO: opened without waiting for a writer, never read), does not hold
    exactly 32 bytes, or can be read or written by group or others (a leaked secret lets
    an attacker predict the crops). Removes first the temporary copies a start killed
    while creating it left (`_secret_leftovers`).
    """
    remove_leftovers(path.parent, _secret_leftovers(path))
    if not os.path.lexists(path):
        _create_secret(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except IsADirectoryError:
        fd = -1
    except OSError as e:
        raise DetectorError(f"cannot read the detector secret {path}: {e.strerror}") from e
    try:
        st = os.fstat(fd) if fd >= 0 else None
        mode = st.st_mode if st is not None else stat.S_IFDIR
        if not stat.S_ISREG(mode):
            raise DetectorError(
                f"the detector secret {path} is not a regular file; move it away to draw"
                " a new secret (scores of earlier calls will then differ)"
            )
        secret = os.read(fd, SECRET_BYTES + 1)
        size = st.st_size if st is not None else 0
    except OSError as e:
        raise DetectorError(f"cannot read the detector secret {path}: {e.strerror}") from e
    finally:
        if fd >= 0:
            os.close(fd)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise DetectorError(
            f"the detector secret {path} is readable or writable by others "
            f"(mode {stat.S_IMODE(mode):o}); run `chmod 600 {path}`"
        )
    if len(secret) != SECRET_BYTES or size != SECRET_BYTES:
        raise DetectorError(
            f"the detector secret {path} holds {size} bytes, not {SECRET_BYTES}; "
            "delete it to draw a new one (scores of earlier calls will then differ)"
        )
    return secret


def _secret_leftovers(path: Path) -> re.Pattern[str]:
    """The names of `_create_secret`'s temporary copies of ``path``,
    ``.NAME.PID.<8 hex digits>.tmp`` (each a secret: mode 0600), for `remove_leftovers`
    (only a regular file of this user, of a process no longer running, not locked)."""
    return re.compile(rf"\.{re.escape(path.name)}\.(?P<pid>[0-9]+)\.[0-9a-f]{{8}}\.tmp")


def _create_secret(path: Path) -> None:
    """Write a fresh secret to a temporary 0600 file beside path, fsync it, and hard-link
    it to path unless path exists by then (os.link never replaces); on a file system
    without hard links, create path exclusively and write it in place (as before):
    `create_atomically`. Raises DetectorError if the files cannot be written or linked."""
    try:
        create_atomically(
            path,
            os.urandom(SECRET_BYTES),
            temp_name=lambda: f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp",
        )
    except FileExistsError:
        return  # another start made it first: every start reads that one
    except OSError as e:
        raise DetectorError(f"cannot create the detector secret {path}: {e.strerror}") from e


#: The meta key of the crop secret shared by the servers of one database (hex).
SHARED_SECRET_META = "detector_crop_secret"


class SharedMeta(Protocol):
    """The meta table of a shared database (the store's get_meta and setdefault_meta)."""

    def get_meta(self, key: str) -> str | None: ...

    def setdefault_meta(self, key: str, value: str) -> str: ...


def shared_secret(meta: SharedMeta, seed_file: Path | None) -> bytes:
    """The crop secret of every server of a shared (PostgreSQL) database, kept in its meta
    table (SHARED_SECRET_META) so that servers on different machines, behind one load
    balancer, give a file the same crops and score. The first server to start stores it:
    the secret in seed_file where one exists (a server that kept it beside the log key
    before), else a fresh one; meta.setdefault_meta(key, value) stores value unless the
    key has one and returns the stored value (atomic in the database). Once the database
    holds a secret, seed_file is not read (a stale or unusable one does not matter).
    Whoever can read the database can predict the crops (as whoever reads the secret
    file could).

    Raises DetectorError if seed_file is needed and unusable (`load_or_create_secret`)
    or the stored value is not 32 bytes in hex; the store's StorageError if it cannot be
    reached."""
    stored_before = meta.get_meta(SHARED_SECRET_META)
    if stored_before is not None:
        return _stored_secret(stored_before)
    seed = (
        load_or_create_secret(seed_file)
        if seed_file is not None and os.path.lexists(seed_file)
        else os.urandom(SECRET_BYTES)
    )
    return _stored_secret(meta.setdefault_meta(SHARED_SECRET_META, seed.hex()))


def _stored_secret(stored: str) -> bytes:
    """The 32 bytes of a stored hex secret; raises DetectorError otherwise."""
    try:
        secret = bytes.fromhex(stored)
    except ValueError:
        secret = b""
    if len(secret) != SECRET_BYTES:
        raise DetectorError(
            f"the database's detector secret (meta {SHARED_SECRET_META!r}) is not"
            f" {SECRET_BYTES} bytes in hex"
        )
    return secret
