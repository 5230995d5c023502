"""Whether an MP4 or MOV file ends before its top-level boxes do, in words.

FFmpeg reports a recording cut short (an interrupted camera, a partial download) as
"Invalid data found when processing input" or as a file with no video stream: its index
(the ``moov`` box, which most recorders write last) is missing or incomplete. Walking the
top-level box headers (ISO/IEC 14496-12, 4.2: a 32-bit size, a 4-byte type, a 64-bit
size when the first is 1, to the end of the file when it is 0) tells that apart from a
damaged file, so the refusal can say so. Reads only box headers, at most `MAX_BOXES`.
"""

from __future__ import annotations

import os
import struct

#: Top-level boxes read at most (a real file has a handful; a hostile one is not walked).
MAX_BOXES = 1024

#: What a box is, for the boxes a person is likely to meet in a cut-short file.
_WHAT = {
    b"moov": "its index",
    b"mdat": "its media data",
    b"moof": "a fragment's index",
    b"free": "padding",
    b"ftyp": "its file type",
}


def cut_short(path: str | os.PathLike[str]) -> str:
    """A sentence saying how the MP4/MOV file at ``path`` is cut short, or "" when its
    top-level boxes end where the file does (or it cannot be read). E.g. "the file is cut
    short: it ends 32,916 bytes into a 64,927-byte 'mdat' box (its media data) and has no
    'moov' box (the index most recorders write last), so its frames cannot be found"."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            at, seen = 0, set[bytes]()
            for _ in range(MAX_BOXES):
                if at >= size:
                    return ""
                f.seek(at)
                head = f.read(16)
                if len(head) < 8:
                    return _say(f"it ends {len(head)} bytes into a box header", seen)
                length, kind = struct.unpack(">I4s", head[:8])
                if length == 1 and len(head) == 16:
                    length = struct.unpack(">Q", head[8:16])[0]
                elif length == 0:
                    length = size - at
                if length < 8:
                    return ""  # not a box structure: damaged, not cut short
                seen.add(kind)
                if at + length > size:
                    name = kind.decode("latin-1")
                    what = f" ({_WHAT[kind]})" if kind in _WHAT else ""
                    where = f"it ends {size - at:,} bytes into a {length:,}-byte '{name}' box{what}"
                    return _say(where, seen)
                at += length
    except OSError:
        return ""
    return ""


def _say(where: str, seen: set[bytes]) -> str:
    """The sentence: where the file ends, and whether its index is missing."""
    if b"moov" not in seen:
        where += " and has no 'moov' box (the index most recorders write last)"
    if b"moov" not in seen or where.endswith("(its index)"):
        where += ", so its frames cannot be found"
    return f"the file is cut short: {where}"
