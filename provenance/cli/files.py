"""Reading a file an operator names (a token, a bundle of trust anchors) at most up to a
limit, so that a device or a file named by mistake (``/dev/zero``, a disk image) is
refused after ``limit + 1`` bytes instead of being read into memory without end.

Unlike ``clients.files.read_bounded`` (for untrusted paths), a FIFO is read as a file:
a shell's process substitution (``--admin-token-file <(vault read ...)``) hands one over.

`open_regular` is the one open of a path that must be a regular file, never blocking on
a FIFO: `clients.files` (untrusted media and sidecars) and `provenance.log.tiledir` (a
tiled log's folder) both open through it, each raising its own error. Here, below the
log layer and beside nothing of clients/, because the pure core opens no file.
"""

from __future__ import annotations

import os
import stat
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


def open_regular(path: str | os.PathLike[str], refuse: type[Exception]) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file (symbolic links are
    followed, then judged by what they point to).

    The open never blocks (``O_NONBLOCK``: a FIFO would hold its reader in open() until
    a writer came); the descriptor is switched back to blocking reads once ``fstat`` of
    the opened descriptor shows a regular file, so a rename between a check and the open
    cannot swap the file. Raises ``refuse`` (the caller's error class) with "PATH is a
    FIFO (named pipe), not a regular file" (`provenance.core.files.file_kind`) for FIFOs,
    sockets, devices and folders, and OSError when the path cannot be opened."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise refuse(f"{os.fspath(path)} is {file_kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
