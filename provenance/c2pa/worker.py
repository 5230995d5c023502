"""Child process that runs the native C2PA reader on untrusted files.

Run as a script (``python -I worker.py``) by `provenance.c2pa.pool`; it imports nothing
from this project, so a crash, hang or memory blow-up in the native parser is confined
to this process, which the parent kills and replaces.

Protocol on the inherited stdin/stdout pipes, each frame an 8-byte big-endian length and
that many bytes: the worker first sends ``{"ready": true}``. Each request is a JSON
header frame ``{"path", "media_type", "settings", "memory_bytes", "has_data",
"has_manifest"}`` followed by an asset frame (when has_data) and a sidecar-manifest
frame (when has_manifest). The reply is one JSON frame: ``{"ok": true, "state": str,
"json": str}`` or ``{"ok": false, "kind": str, "message": str}``. File descriptor 1 is
pointed at stderr so nothing the native library prints can corrupt the protocol.
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import signal
import struct
import sys
from typing import Any, BinaryIO

_LENGTH = struct.Struct(">Q")
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


def _read(
    c2pa: Any,
    contexts: dict[str, Any],
    header: dict[str, Any],
    data: bytes | None,
    manifest: bytes | None,
) -> dict[str, Any]:
    settings = header["settings"]
    if settings not in contexts:
        contexts.clear()
        contexts[settings] = c2pa.Context.from_json(settings)
    context = contexts[settings]
    with open(header["path"], "rb") if data is None else io.BytesIO(data) as stream:
        try:
            reader = c2pa.Reader(header["media_type"], stream, manifest, context=context)
            with reader:
                return {"ok": True, "state": reader.get_validation_state(), "json": reader.json()}
        except c2pa.C2paError as e:
            if _OUT_OF_MEMORY.match(str(e)):
                raise MemoryError(str(e)) from e
            return {"ok": False, "kind": _error_kind(e), "message": _error_words(e)}


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

    contexts: dict[str, Any] = {}
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    write_frame(replies, b'{"ready": true}')
    while (frame := read_frame(requests)) is not None:
        header = json.loads(frame)
        data = read_frame(requests) if header["has_data"] else None
        manifest = read_frame(requests) if header["has_manifest"] else None
        limit = header["memory_bytes"]
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        try:
            reply = _read(c2pa, contexts, header, data, manifest)
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
        del data, manifest
        write_frame(replies, json.dumps(reply).encode())


if __name__ == "__main__":
    main()
