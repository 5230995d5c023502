"""Replacing a file atomically and durably: the one writer of every file that must appear
whole or not at all (device state, keys and sidecars, a signed C2PA export, a tiled log's
files, a witness's state, the remembered checkpoint).

`write_atomically` writes a new temporary file beside the target, fsyncs it, renames it
over the target (``rename(2)`` is atomic within a folder) and fsyncs the folder (the
rename is durable only once the folder is). A crash leaves the old file or the new one
whole, never a truncated one; at worst a temporary file (a process killed between the
two), which the writer's next run removes with `remove_leftovers`: its name says whose
it is (`temp_name_for`: the target's and the writer's process id) and the writer holds
a lock on it until it is renamed or removed. `create_atomically` makes a new file
that way (a secret, a key) but never replaces one: a hard link instead of the rename. Here, below the log layer and beside
nothing of clients/, because the pure core opens no file (as `files.open_regular`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from provenance.core.files import naming


def temp_name_for(path: Path) -> str:
    """``.tmp-TAG-PID-RANDOM``: a fresh temporary name for writing ``path``, TAG the first
    8 hex digits of the SHA-256 of ``path``'s name (so `temp_names_of` tells the
    temporary files of one target from those of another in its folder), PID this
    process's id (so `remove_leftovers` tells a live writer's), RANDOM 8 hex digits; as
    short whatever the target's name, so any name the file system accepts can be
    written."""
    return f".tmp-{_tag(path)}-{os.getpid()}-{secrets.token_hex(4)}"


def _tag(path: Path) -> str:
    """The TAG of `temp_name_for`: 8 hex digits of the SHA-256 of ``path``'s name."""
    return hashlib.sha256(os.fsencode(path.name)).hexdigest()[:8]


#: Every name `temp_name_for` gives; the groups ``tag`` and ``pid`` are its TAG and PID.
TEMP_NAMES = re.compile(r"\.tmp-(?P<tag>[0-9a-f]{8})-(?P<pid>[0-9]+)-[0-9a-f]{8}")


def temp_names_of(path: Path) -> re.Pattern[str]:
    """The names `temp_name_for` gives for writing ``path`` (its TAG fixed; groups as
    `TEMP_NAMES`), for `remove_leftovers`."""
    return re.compile(rf"\.tmp-(?P<tag>{_tag(path)})-(?P<pid>[0-9]+)-[0-9a-f]{{8}}")


def process_gone(pid: int) -> bool:
    """Whether no process of id ``pid`` runs on this machine (or ``pid`` is a number no
    process can have). One that runs, or may (another user's: no permission to ask;
    pid 0, which `kill(2)` takes for this process group), is not gone. A killed writer's
    pid taken since by another process reads as running: its leftovers then wait for
    that process's end."""
    if pid == 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return True
    except OSError:  # EPERM: another user's process
        return False
    return False


def _writer_gone(match: re.Match[str], st: os.stat_result) -> bool:
    """Whether the writer of the temporary file whose name matched as ``match`` (its
    group ``pid``) is gone (`process_gone`)."""
    return process_gone(int(match["pid"]))


def remove_leftovers(
    folder: Path,
    names: re.Pattern[str] = TEMP_NAMES,
    stale: Callable[[re.Match[str], os.stat_result], bool] = _writer_gone,
) -> list[Path]:
    """Remove from ``folder`` the temporary files that writers killed between creating
    and renaming them left (`write_atomically`, `create_atomically`); returns those
    removed. For the writer's next run, before or while it writes the same target again:
    ``names`` is the pattern of that target's temporary names (`temp_names_of`;
    `TEMP_NAMES`, of any target, for a folder only that writer writes), whose whole
    must match and whose group ``pid`` is the writer's process id.

    A file is removed only when all hold: its name matches, it is a regular file (not a
    link, which is never followed, nor a FIFO or device, never opened) owned by this
    user, no process of that id runs here (`process_gone`; ``stale(match, lstat)``
    decides instead where given, such as a least age), and no process holds its flock
    (both writers hold it from the file's creation until it is renamed or removed: a
    live writer in another process-id namespace or on another machine of a shared
    folder keeps its file). Anything else is left, as is a file that cannot be examined
    or removed: this is a clean-up, it raises nothing. Source: flock(2), a lock released
    when its holder dies; kill(2) with signal 0."""
    removed: list[Path] = []
    try:
        entries = os.listdir(folder)
    except OSError:  # no such folder (yet), not ours to read
        return removed
    for name in entries:
        match = names.fullmatch(name)
        if match is None:
            continue
        leftover = folder / name
        try:
            st = os.lstat(leftover)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                continue
            if not stale(match, st):
                continue
            fd = os.open(leftover, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # gone meanwhile, not ours to read
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer holds it
            except OSError:  # a file system without flock: the process id alone tells
                pass
            opened = os.fstat(fd)
            if not (os.path.samestat(st, opened) and os.path.samestat(opened, os.lstat(leftover))):
                continue  # replaced meanwhile: not the file examined, or not the one there now
            os.unlink(leftover)
            removed.append(leftover)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def write_atomically(
    path: Path,
    data: bytes,
    *,
    mode: int | None = 0o666,
    sync: bool = True,
    sync_folder: bool = True,
    temp_name: Callable[[], str] | None = None,
    before_replace: Callable[[], None] | None = None,
) -> None:
    """Replace ``path`` with ``data``: a new file named ``temp_name()`` (when None,
    `temp_name_for`) in ``path``'s folder (created exclusively, never through a link,
    flocked until it is renamed or removed: `remove_leftovers` leaves it alone), ``data``
    written in full, the file fsynced, ``before_replace()`` called, the file renamed over
    ``path`` and the folder fsynced. With ``sync`` False neither fsync is made (a caller
    that flushes many files at once with ``os.sync()``); with ``sync_folder`` False not
    the folder's (a file whose older copy after a power cut is harmless; that fsync costs
    4 to 10 ms on ext4). A process killed between the file's creation and its rename
    leaves it: the writer's next run removes it (`remove_leftovers`).

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
    temp_name: Callable[[], str] | None,
    before_replace: Callable[[], None] | None,
) -> None:
    keep: int | None = None
    if mode is None:
        try:
            keep = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o666
    tmp = path.with_name(temp_name_for(path) if temp_name is None else temp_name())
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600 if mode is None else mode)
    try:
        # the lock is the open file's: this copy keeps it while `f` is closed (its errors
        # seen before the rename) until the file is renamed or removed
        hold = os.dup(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:
        with contextlib.suppress(OSError):  # a file system without flock: the pid tells
            fcntl.flock(hold, fcntl.LOCK_EX | fcntl.LOCK_NB)
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
    finally:
        os.close(hold)


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
    path: Path, data: bytes, *, temp_name: Callable[[], str] | None = None
) -> None:
    """Create ``path`` (mode 0600 less the umask) holding ``data``, never replacing a file
    already there, so that a process that finds ``path`` reads it whole: ``data`` is
    written to a new file named ``temp_name()`` (when None, `temp_name_for`) beside it
    (created exclusively, locked with ``flock`` until it is removed, so a clean-up of
    leftovers can tell a live writer: `remove_leftovers`), fsynced and hard-linked to ``path`` (``link(2)`` fails when ``path`` exists); the
    temporary name is then removed and the folder fsynced. On a file system without hard
    links (FAT, some network shares: `NO_HARD_LINKS`) ``path`` is created exclusively and
    written in place instead (a reader meanwhile may see it short). Raises
    FileExistsError when ``path`` exists, OSError otherwise, both with ``path`` as their
    file name; no temporary file is left either way."""
    with naming(path):
        tmp = path.with_name(temp_name_for(path) if temp_name is None else temp_name())
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
