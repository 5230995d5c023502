"""Child process that runs the native C2PA reader on untrusted files.

Run as a script (``python -I worker.py``) by `provenance.c2pa.pool`; it imports nothing
from this project, so a crash, hang or memory blow-up in the native parser is confined
to this process, which the parent kills and replaces.

Protocol on the inherited stdin/stdout pipes, each frame an 8-byte big-endian length and
that many bytes: the worker first sends ``{"ready": true}``. Each request is a JSON
header frame ``{"media_type", "settings", "memory_bytes", "has_data", "has_manifest",
"has_fd", "size"}`` followed by an asset frame (when has_data) and a sidecar-manifest
frame (when has_manifest). When has_fd, the asset is a file the parent opened and
checked: its descriptor comes over the Unix socket whose descriptor number is this
script's argument (one byte with the descriptor as SCM_RIGHTS ancillary data), and only
its first ``size`` bytes are read (`asset_stream`), so a file swapped, grown or cut
after the parent's checks is never read past them; the worker opens no path. The reply
is one JSON frame: ``{"ok": true, "state": str, "json": str}`` or ``{"ok": false,
"kind": str, "message": str}`` (kind ``FileChanged`` when the file held fewer than
``size`` bytes as it was read). File descriptor 1 is pointed at stderr so nothing the
native library prints can corrupt the protocol.
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import signal
import socket
import struct
import sys
from typing import Any, BinaryIO

_LENGTH = struct.Struct(">Q")
#: Bytes of the buffer over a file's descriptor (`asset_stream`). The reader's CPU time
#: on a 2.7 MB JPEG against ``open(path, "rb")`` (c2paopen55): 8 KiB, 1.02-1.03; 64 KiB,
#: 0.98-0.99; on a 66 KB MOV 1.08-1.16 either way (its seeks: 0.1-0.2 ms).
BUFFER_BYTES = 64 * 1024
_KIND = re.compile(r"^([A-Za-z]+):")
#: The native reader's own report of a failed allocation (Rust's io::ErrorKind::
#: OutOfMemory): under the memory limit, the same read gives this, a MemoryError or an
#: abort, depending on what the worker read before. All but the abort are `MemoryLimit`.
_OUT_OF_MEMORY = re.compile(r"^Io: .*out of memory", re.IGNORECASE)


def read_frame(stream: BinaryIO) -> bytes | None:
    """Read one length-prefixed frame; None at a clean end of stream."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    body = stream.read(size)
    if len(body) < size:
        return None
    return body


def write_frame(stream: BinaryIO, body: bytes) -> None:
    """Write one length-prefixed frame and flush."""
    stream.write(_LENGTH.pack(len(body)) + body)
    stream.flush()


def _error_kind(exc: Exception) -> str:
    """The native error's kind: the word before the first colon ("Remote: ...")."""
    match = _KIND.match(str(exc))
    return match.group(1) if match else type(exc).__name__.lstrip("_")


def _error_words(exc: Exception) -> str:
    """The native error's text without its kind before it ("Other: asset could not be
    parsed: ..." -> "asset could not be parsed: ..."): the kind is sent on its own, and
    a report that shows both said it twice."""
    text = str(exc)
    match = _KIND.match(text)
    return text[match.end() :].lstrip() if match else text


class _Asset(io.RawIOBase):
    """The first ``size`` bytes of the open file ``fd``, read by position (``preadv``):
    what lies past ``size`` (bytes appended after the parent checked the size) reads as
    the end, and a seek from the end counts from ``size``. A read that finds fewer bytes
    than ``size`` holds there (the file was cut) ends the stream early and sets
    ``short_at`` to the offset of the end it found; a read that fails keeps its OSError
    in ``failed`` (the native reader, to which it is raised, says only "os error N").
    ``fd`` stays the caller's to close."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__()
        self.fd, self.size, self.at = fd, size, 0
        self.short_at: int | None = None
        self.failed: OSError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        """Up to ``len(buffer)`` bytes from the position, none past ``size``."""
        want = max(0, min(len(buffer), self.size - self.at))
        if want == 0:
            return 0
        try:
            with memoryview(buffer) as view:
                got = os.preadv(self.fd, [view.cast("B")[:want]], self.at)
        except OSError as e:
            self.failed = self.failed or e
            raise
        if got < want and self.short_at is None:
            self.short_at = self.at + got
        self.at += got
        return got

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move to ``offset`` from the start, the position or ``size`` (``whence`` 0, 1,
        2); ValueError for a position before the start."""
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.at, os.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self.at = base + offset
        return self.at

    def tell(self) -> int:
        return self.at


def asset_stream(fd: int, size: int) -> tuple[io.BufferedReader, _Asset]:
    """What the reader is given of the open file ``fd`` whose size the parent checked,
    ``size`` bytes: a buffered stream (of `BUFFER_BYTES`) over `_Asset`, and the
    `_Asset`, whose ``short_at`` and ``failed`` say whether the file was cut or failed."""
    raw = _Asset(fd, size)
    return io.BufferedReader(raw, BUFFER_BYTES), raw


def _receive_fd(channel: socket.socket | None) -> int:
    """The descriptor the parent sent for this request (SCM_RIGHTS); OSError when none
    came (no channel, or the parent's end closed)."""
    if channel is None:
        raise OSError("no descriptor channel: the worker was started without one")
    _, fds, _, _ = socket.recv_fds(channel, 1, 1)
    if not fds:
        raise OSError("the parent sent no descriptor")
    return fds[0]


def _read(
    c2pa: Any,
    contexts: dict[str, Any],
    header: dict[str, Any],
    data: bytes | None,
    manifest: bytes | None,
    fd: int | None,
) -> dict[str, Any]:
    settings = header["settings"]
    if settings not in contexts:
        contexts.clear()
        contexts[settings] = c2pa.Context.from_json(settings)
    context = contexts[settings]
    raw = None
    stream: io.BufferedIOBase = io.BytesIO(data or b"")
    if fd is not None:
        stream, raw = asset_stream(fd, header["size"])
    with stream:
        try:
            reader = c2pa.Reader(header["media_type"], stream, manifest, context=context)
            with reader:
                reply = {"ok": True, "state": reader.get_validation_state(), "json": reader.json()}
        except c2pa.C2paError as e:
            if _OUT_OF_MEMORY.match(str(e)):
                raise MemoryError(str(e)) from e
            reply = {"ok": False, "kind": _error_kind(e), "message": _error_words(e)}
    if raw is not None and raw.failed is not None:
        raise raw.failed  # said as any OSError of the read (main)
    if raw is not None and raw.short_at is not None:
        return {
            "ok": False,
            "kind": "FileChanged",
            "message": f"the asset got shorter while it was read: {raw.short_at:,} of its"
            f" {raw.size:,} bytes were there (cut or rewritten by another program)",
        }
    return reply


def main() -> None:
    """Serve read requests until stdin closes."""
    # The parent ends this worker by closing stdin (or SIGKILL); Ctrl-C at a terminal
    # reaches the whole process group, and must not print a KeyboardInterrupt traceback
    # here while `prov serve` shuts down cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import c2pa  # the native library loads here, after the pipes are set up

    # the Unix socket the parent sends checked files' descriptors over (none: bytes only)
    channel = socket.socket(fileno=int(sys.argv[1])) if len(sys.argv) > 1 else None
    contexts: dict[str, Any] = {}
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    write_frame(replies, b'{"ready": true}')
    while (frame := read_frame(requests)) is not None:
        header = json.loads(frame)
        data = read_frame(requests) if header["has_data"] else None
        manifest = read_frame(requests) if header["has_manifest"] else None
        fd = _receive_fd(channel) if header.get("has_fd") else None
        limit = header["memory_bytes"]
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        try:
            reply = _read(c2pa, contexts, header, data, manifest, fd)
        except MemoryError:
            reply = {
                "ok": False,
                "kind": "MemoryLimit",
                "message": f"the reader needed more than {header['memory_bytes']} bytes",
            }
        except OSError as e:  # the reply reaches the caller's report: no server path in it
            print(f"C2PA reader: cannot read the asset: {e}", file=sys.stderr, flush=True)
            why = e.strerror or type(e).__name__
            reply = {"ok": False, "kind": "Io", "message": f"cannot read the asset: {why}"}
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
            if fd is not None:
                os.close(fd)
        del data, manifest
        write_frame(replies, json.dumps(reply).encode())


if __name__ == "__main__":
    main()
