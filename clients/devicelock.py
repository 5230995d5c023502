"""Waiting for the device folder's lock (``PROV_HOME/.lock``, `DeviceHome.locked`), and
recording who holds it.

A device command that found the lock held waited for good, saying once "waiting for
another prov command" (a `prov sign` of a thousand files, or one stopped with Ctrl-Z,
holds it as long as it runs). Now the holder writes its PID into the lock file (best
effort: a read-only folder keeps none, nor a ``.lock`` that is a link or holds anything
else, `_record`) and clears it before letting go; a waiter says
once which file it waits for and, when recorded, the PID holding it, and gives up after
``$PROV_LOCK_WAIT`` seconds (`lock_wait_seconds`, default `DEFAULT_LOCK_WAIT_S`) with
`LockWaitError` (exit 1). Ctrl-C stops the wait at once, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from provenance.cli.options import MAX_WAIT_S, UsageError
from provenance.core.errors import LockWaitError

#: The environment variable that sets how long a device command waits for the lock.
LOCK_WAIT_ENV = "PROV_LOCK_WAIT"
#: Seconds a device command waits for the lock when ``$PROV_LOCK_WAIT`` is not set: long
#: enough for another command's batch of files, short enough that a script stops.
DEFAULT_LOCK_WAIT_S = 600.0
#: Seconds between two tries of the lock while waiting.
_POLL_S = 0.1
#: Bytes of the lock file read for the holder's PID.
_PID_BYTES = 24


def lock_wait_seconds() -> float:
    """``$PROV_LOCK_WAIT`` as seconds (0 to a day; unset or empty: the default). Raises
    UsageError (exit 2) for anything else, naming the variable."""
    text = os.environ.get(LOCK_WAIT_ENV, "").strip()
    if not text:
        return DEFAULT_LOCK_WAIT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_WAIT_S:  # NaN too
        raise UsageError(
            f"{LOCK_WAIT_ENV}={text!r} is not a number of seconds from 0 to {MAX_WAIT_S:.0f}"
            f" (how long a device command waits for another holding the device folder;"
            f" unset: {DEFAULT_LOCK_WAIT_S:.0f})"
        )
    return seconds


def take(handle: BinaryIO, path: Path) -> None:
    """Take the lock ``handle`` (the open lock file ``path``) exclusively: at once when
    free, else after saying once on stderr who holds it, within `lock_wait_seconds`;
    then record this process's PID in it. Raises LockWaitError when the wait runs out,
    UsageError for a ``$PROV_LOCK_WAIT`` that is no number of seconds, OSError."""
    wait = lock_wait_seconds()
    if not _try(handle):
        holder = _holder(handle)
        print(
            f"waiting for another prov command holding the device folder's lock {path}"
            f"{holder} (up to {wait:g} s; {LOCK_WAIT_ENV} sets how long) ...",
            file=sys.stderr,
        )
        _wait_for(
            lambda: _try(handle),
            wait,
            lambda: f"folder's lock {path}{_holder(handle)}",
        )
    _record(path, handle, f"{os.getpid()}\n".encode())


def take_folder(folder: int, path: Path) -> None:
    """Take the lock of the device folder ``path`` itself (``folder``, its open
    descriptor) exclusively, within `lock_wait_seconds`, after `take` took ``.lock``: a
    ``.lock`` removed or replaced while a command held it (taken for a stale lock) let
    the next command make a new one and run beside the first, both numbering their
    claims from one last sequence. A file system that cannot lock a folder leaves the
    ``.lock`` alone to do it, as before. Raises LockWaitError when the wait runs out."""
    if try_folder(folder):
        return
    print(
        f"waiting for another prov command holding the device folder {path} (its lock file"
        f" {path / '.lock'} was removed or replaced while that command ran) ...",
        file=sys.stderr,
    )
    _wait_for(
        lambda: _try_fd(folder),
        lock_wait_seconds(),
        lambda: (
            f"folder {path} (its lock file {path / '.lock'} was removed or replaced while"
            " that command ran, which does not stop it: never remove the lock file)"
        ),
    )


def try_folder(folder: int) -> bool:
    """Whether the lock of the device folder ``folder`` (its open descriptor) was taken
    now, without waiting: False while another command holds it. True on a file system
    that cannot lock a folder (a network file system): ``.lock`` alone guards it."""
    try:
        return _try_fd(folder)
    except OSError:  # no flock on a folder here: .lock alone
        return True


def _wait_for(taken: Callable[[], bool], wait: float, held: Callable[[], str]) -> None:
    """Try ``taken`` (a lock, without waiting) every `_POLL_S` until it answers True, for
    ``wait`` seconds at most. Raises LockWaitError then, saying what another command
    still holds: the device ``held()`` (``folder's lock PATH``, say)."""
    deadline = time.monotonic() + wait
    while not taken():
        if time.monotonic() >= deadline:
            raise LockWaitError(
                f"gave up after {wait:g} s: another prov command still holds the device"
                f" {held()}; run this command again once that one is done (or stop it), or"
                f" set {LOCK_WAIT_ENV} to wait longer (seconds)"
            )
        time.sleep(_POLL_S)


def release(handle: BinaryIO, path: Path) -> None:
    """Clear the PID recorded in the lock file ``path`` and let go of the lock."""
    _record(path, handle, b"")
    fcntl.flock(handle, fcntl.LOCK_UN)


def _try(handle: BinaryIO) -> bool:
    """Whether the lock was taken now, without waiting."""
    return _try_fd(handle.fileno())


def _try_fd(fd: int) -> bool:
    """Whether the lock of the open file or folder ``fd`` was taken now, without
    waiting. Raises OSError other than a lock held elsewhere."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(handle: BinaryIO) -> str:
    """`` (PID N)`` when the lock file names the PID of a running process; else ""."""
    with contextlib.suppress(OSError):
        text = os.pread(handle.fileno(), _PID_BYTES, 0).strip()
        if text.isdigit() and 0 < int(text) < 2**31:
            pid = int(text)
            with contextlib.suppress(PermissionError):  # running, as another user
                os.kill(pid, 0)
            return f" (PID {pid})"
    return ""


def _record(path: Path, handle: BinaryIO, data: bytes) -> None:
    """Write ``data`` as the lock file's content, best effort, and only into the lock's
    own file: ``path`` itself (no symbolic link's target), the file ``handle`` locks, of
    one link (no hard link to another file), and empty or holding a PID as `take`
    writes it (no file some other program keeps there). Otherwise nothing is written,
    as in a read-only folder: before, a ``.lock`` that was a link to another file, or
    another program's lock file, lost its content (emptied when the command ended)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            mine, there = os.fstat(handle.fileno()), os.fstat(fd)
            if (
                (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)
                and there.st_nlink == 1
                and _written_here(os.pread(handle.fileno(), _PID_BYTES + 1, 0))
            ):
                os.ftruncate(fd, 0)
                os.write(fd, data)
        finally:
            os.close(fd)


def _written_here(content: bytes) -> bool:
    """Whether ``content`` (the lock file's first bytes) is what `take` writes or
    `release` leaves: nothing, or a PID and a newline."""
    return not content or (
        len(content) <= _PID_BYTES and content.endswith(b"\n") and content[:-1].isdigit()
    )
