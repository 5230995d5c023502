"""Replacing a file atomically and durably: the one writer of every file that must appear
whole or not at all (device state, keys and sidecars, a signed C2PA export, a tiled log's
files, a witness's state, the remembered checkpoint).

`write_atomically` writes a new temporary file beside the target, fsyncs it, renames it
over the target (``rename(2)`` is atomic within a folder) and fsyncs the folder (the
rename is durable only once the folder is). A crash leaves the old file or the new one
whole, never a truncated one; at worst a temporary file, whose name the caller chooses
so that its own start-up can find and remove it. `create_atomically` makes a new file
that way (a secret, a key) but never replaces one: a hard link instead of the rename. Here, below the log layer and beside
nothing of clients/, because the pure core opens no file (as `files.open_regular`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from provenance.core.files import naming


def short_temp_name() -> str:
    """``.tmp-PID-RANDOM`` (8 hex digits): a fresh temporary name as short whatever the
    target's name, so any name the file system accepts can be written."""
    return f".tmp-{os.getpid()}-{secrets.token_hex(4)}"


def write_atomically(
    path: Path,
    data: bytes,
    *,
    mode: int | None = 0o666,
    sync: bool = True,
    sync_folder: bool = True,
    temp_name: Callable[[], str] = short_temp_name,
    before_replace: Callable[[], None] | None = None,
) -> None:
    """Replace ``path`` with ``data``: a new file named ``temp_name()`` in ``path``'s
    folder (created exclusively, never through a link), ``data`` written in full, the file
    fsynced, ``before_replace()`` called, the file renamed over ``path`` and the folder
    fsynced. With ``sync`` False neither fsync is made (a caller that flushes many files
    at once with ``os.sync()``); with ``sync_folder`` False not the folder's (a file
    whose older copy after a power cut is harmless; that fsync costs 4 to 10 ms on
    ext4).

    ``mode``: the permission bits the file is created with, less the umask, as by
    ``open(2)`` (0o600 for a key: never readable by others, not even while written);
    None keeps the bits of the file replaced (exactly: the temporary file is made 0600,
    then given them) and gives a new file 0o666 less the umask.

    On any error, including one ``before_replace`` raises, the temporary file is removed
    and ``path`` is left as it was, unless only the folder's fsync failed (the new file
    is then in place but may not survive a power cut). Raises OSError with ``path`` as
    its file name (`provenance.core.files.naming`: a full disk's write names no file, a
    temporary file's open names that), or what ``before_replace`` raises.
    """
    with naming(path):
        _write_then_rename(path, data, mode, sync, temp_name, before_replace)
        if sync and sync_folder:
            fsync_folder(path.parent)


def _write_then_rename(
    path: Path,
    data: bytes,
    mode: int | None,
    sync: bool,
    temp_name: Callable[[], str],
    before_replace: Callable[[], None] | None,
) -> None:
    keep: int | None = None
    if mode is None:
        try:
            keep = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o666
    tmp = path.with_name(temp_name())
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as f:
            if keep is not None:
                os.fchmod(f.fileno(), keep)
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fsync_folder(folder: Path) -> None:
    """fsync the folder ``folder``, making the renames and new entries in it durable.
    Raises OSError."""
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: errno values of a ``link(2)`` refused because the file system has no hard links
#: (vfat and CIFS answer EPERM; others ENOTSUP or ENOSYS).
NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})


def create_atomically(
    path: Path, data: bytes, *, temp_name: Callable[[], str] = short_temp_name
) -> None:
    """Create ``path`` (mode 0600 less the umask) holding ``data``, never replacing a file
    already there, so that a process that finds ``path`` reads it whole: ``data`` is
    written to a new file named ``temp_name()`` beside it (created exclusively, locked
    with ``flock`` until it is removed, so a clean-up of leftovers can tell a live writer),
    fsynced and hard-linked to ``path`` (``link(2)`` fails when ``path`` exists); the
    temporary name is then removed and the folder fsynced. On a file system without hard
    links (FAT, some network shares: `NO_HARD_LINKS`) ``path`` is created exclusively and
    written in place instead (a reader meanwhile may see it short). Raises
    FileExistsError when ``path`` exists, OSError otherwise, both with ``path`` as their
    file name; no temporary file is left either way."""
    with naming(path):
        tmp = path.with_name(temp_name())
        hold = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(hold, fcntl.LOCK_EX)
            _write_all(hold, data)
            os.fsync(hold)
            try:
                os.link(tmp, path)
            except OSError as e:
                if e.errno not in NO_HARD_LINKS:
                    raise
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            os.close(hold)
        fsync_folder(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the descriptor ``fd`` (``write(2)`` may write less)."""
    left = memoryview(data)
    while left:
        left = left[os.write(fd, left) :]
