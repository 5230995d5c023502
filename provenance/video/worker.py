"""Entry point of the sandboxed decoding process: ``python -m provenance.video.worker FD REQUEST``.

FD: a pipe's write end inherited from the parent; REQUEST: JSON with the arguments of
`provenance.video.frames.iter_sampled_frames` and ``max_memory_bytes``. The process limits
its own address space (``RLIMIT_AS``) and disables core dumps before it imports FFmpeg,
decodes, and writes length-prefixed messages to FD: first a JSON header, then the raw
(H, W, 3) uint8 pixels of each kept frame. Every failure becomes an error header, so the
parent sees a message, not a traceback; a crash shows as a closed pipe.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import sys
from typing import Any

#: Length prefix of every message: unsigned 64-bit big-endian byte count.
LENGTH_PREFIX = struct.Struct(">Q")


def _limit_memory(max_memory_bytes: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = max_memory_bytes if hard == resource.RLIM_INFINITY else min(max_memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def _write_message(fd: int, payload: bytes | memoryview) -> None:
    body = memoryview(payload).cast("B")
    _write_all(fd, LENGTH_PREFIX.pack(len(body)))
    _write_all(fd, body)


def _decode(request: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    # Imported here, after the memory limit, so FFmpeg and NumPy start under it.
    from provenance.errors import MediaError, MediaTooLargeError
    from provenance.video.frames import DecodedFrame, StreamFacts, iter_sampled_frames

    try:
        items = list(
            iter_sampled_frames(
                request["path"],
                request["rate_hz"],
                request["max_frames"],
                request["keep_rgb_every"],
                request["max_rgb_frames"],
                request["rgb_max_side"],
                request["strip_bars"],
            )
        )
    except MediaError as e:
        return {"ok": False, "error": str(e), "too_large": isinstance(e, MediaTooLargeError)}, []
    facts = items.pop()  # the generator ends with its StreamFacts
    assert isinstance(facts, StreamFacts)
    rows: list[list[Any]] = []
    kept = []
    for item in items:
        assert isinstance(item, DecodedFrame)
        height, width = item.rgb.shape[:2] if item.rgb is not None else (0, 0)
        if item.rgb is not None:
            kept.append(item.rgb)
        rows.append([item.pdq.timestamp_seconds, item.pdq.hex, item.pdq.quality, height, width])
    reply = {
        "ok": True,
        "frames": rows,
        "width": facts.width,
        "height": facts.height,
        "rotation": facts.rotation,
        "duration_seconds": facts.duration_seconds,
        "frames_decoded": facts.frames_decoded,
        "decode_error": facts.decode_error,
    }
    return reply, kept


def main(argv: list[str]) -> int:
    """Run one decoding request; returns the process exit status (0 once a reply is sent)."""
    fd = int(argv[1])
    request = json.loads(argv[2])
    _limit_memory(int(request["max_memory_bytes"]))
    try:
        reply, kept = _decode(request)
    except ImportError as e:
        reply, kept = (
            {
                "ok": False,
                "error": f"cannot load the decoder under the memory limit of "
                f"{request['max_memory_bytes']} bytes: {e}",
                "too_large": False,
            },
            [],
        )
    except MemoryError:
        reply, kept = (
            {
                "ok": False,
                "error": f"decoding needs more than the memory limit of "
                f"{request['max_memory_bytes']} bytes",
                "too_large": True,
            },
            [],
        )
    except Exception:  # noqa: BLE001 - the process boundary: report, never traceback
        reply, kept = (
            {
                "ok": False,
                "error": "the video could not be decoded: the decoder failed on this file",
                "too_large": False,
            },
            [],
        )
    _write_message(fd, json.dumps(reply).encode())
    for rgb in kept:
        _write_message(fd, rgb.data)
    os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
