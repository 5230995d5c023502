"""What kind of file a path is, in words, for a message refusing one that is not a
regular file (a FIFO, a device, a folder): pure, on an ``os.stat`` mode. Reading such
files is the edge's job (`provenance.cli.files.read_capped`, `clients.files`).
"""

from __future__ import annotations

import stat


def file_kind(mode: int) -> str:
    """What a path of ``os.stat`` mode ``mode`` is, for a message saying it is not a
    regular file: "a FIFO (named pipe)", "a device", "a socket", "a folder"."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"
