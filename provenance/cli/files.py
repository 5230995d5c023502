"""Reading a file an operator names (a token, a bundle of trust anchors) at most up to a
limit, so that a device or a file named by mistake (``/dev/zero``, a disk image) is
refused after ``limit + 1`` bytes instead of being read into memory without end.

Unlike ``clients.files.read_bounded`` (for untrusted paths), a FIFO is read as a file:
a shell's process substitution (``--admin-token-file <(vault read ...)``) hands one over.

`open_regular_fd` is the one open of a path that must be a regular file, never opening
anything else for reading nor blocking on a FIFO: `open_regular` (a file object), and
through them `clients.files` (untrusted media and sidecars), `clients.scan.hashing`'s
small reads, `provenance.c2pa` (the reader's asset, the writer's source),
`provenance.log` (a tiled log's folder, the log key) and the witness, each raising its
own error. Here, below the log layer and beside nothing of clients/, because the pure
core opens no file (tests/test_layers.py).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from provenance.core.errors import ConfigError
from provenance.core.files import file_kind


def read_capped(path: Path, limit: int, what: str) -> bytes:
    """The bytes of ``path`` (a file, FIFO or device; a FIFO blocks until its writer
    writes), at most ``limit`` of them. Reads no more than ``limit + 1`` bytes. Raises
    ConfigError naming ``what`` and the path when it cannot be read or holds more than
    ``limit`` bytes."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from e
    if len(data) > limit:
        raise ConfigError(
            f"{what} {path} is over the {limit:,}-byte limit for such a file: name the file"
            " that holds it alone"
        )
    return data


#: How `open_regular_fd` opens a file to read it: never waiting on a FIFO (``O_NONBLOCK``,
#: cleared once the file is known to be regular), never making a terminal the process's
#: controlling one (``O_NOCTTY``), not inherited by children (``O_CLOEXEC``).
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: Linux's open of a path that only names a file (no read, no driver called); 0 elsewhere.
_O_PATH: int = getattr(os, "O_PATH", 0)


def open_regular_fd(
    path: str | os.PathLike[str], refuse: Callable[[str], BaseException]
) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading if it is a regular file (symbolic links are followed,
    then judged by what they point to): the descriptor, in blocking mode, and its
    ``fstat`` (``st_size``: the size checked; on Linux that of the ``O_PATH`` descriptor
    below, the same inode), the descriptor the caller's to close.

    Nothing else is ever opened for reading, not even for a moment: on Linux the path is
    first opened with ``O_PATH`` (which reads nothing and calls no device driver), the
    file judged by ``fstat`` of that descriptor, and only a regular file opened again
    through it (``/proc/self/fd/N``: the very file judged, whatever is renamed or linked
    to ``path`` meanwhile), with `READ_FLAGS`. Opening some devices acts on them (a
    watchdog starts, a tape rewinds, a modem line is raised) and a FIFO's open wakes a
    writer waiting for a reader; a ``stat`` of the path before its open left a window in
    which a symbolic link swapped in could be opened once. Without ``O_PATH`` or a
    mounted /proc the path is opened with `READ_FLAGS` and judged by ``fstat`` of that
    descriptor (never blocking, never read).

    Raises ``refuse(kind)`` for anything that is not a regular file, ``kind`` being its
    kind in words ("a FIFO (named pipe)", "a device", "a socket", "a folder":
    `provenance.core.files.file_kind`), and OSError naming ``path`` when it cannot be
    opened."""
    judged = False  # whether ``fd`` is the very file ``st`` judged (through /proc)
    if _O_PATH:
        named = os.open(path, _O_PATH | os.O_CLOEXEC)
        try:
            st = os.fstat(named)
            if not stat.S_ISREG(st.st_mode):
                raise refuse(file_kind(st.st_mode))
            try:
                fd = os.open(f"/proc/self/fd/{named}", READ_FLAGS)
                judged = True
            except FileNotFoundError:  # no /proc here: by name, judged below
                fd = os.open(path, READ_FLAGS)
            except OSError as e:  # named by the path asked for, not /proc's
                raise OSError(e.errno, e.strerror, os.fspath(path)) from None
        finally:
            os.close(named)
    else:
        fd = os.open(path, READ_FLAGS)
    try:
        # opened through /proc, ``fd`` is the inode ``st`` was taken of: its ``fstat``
        # again (about 0.7 us, once per file a scan reads) would judge the same file
        if not judged:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise refuse(file_kind(st.st_mode))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_regular(path: str | os.PathLike[str], refuse: type[Exception]) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file (symbolic links are
    followed, then judged by what they point to): `open_regular_fd`, which never opens
    anything else for reading nor blocks, as a file object.

    Raises ``refuse`` (the caller's error class) with "PATH is a FIFO (named pipe), not
    a regular file" (`provenance.core.files.file_kind`) for FIFOs, sockets, devices and
    folders, and OSError when the path cannot be opened."""
    fd, _ = open_regular_fd(
        path, lambda kind: refuse(f"{os.fspath(path)} is {kind}, not a regular file")
    )
    try:
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
