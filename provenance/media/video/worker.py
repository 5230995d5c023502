"""The pre-started decoder process: ``python -m provenance.media.video.worker SOCKET_FD``.

SOCKET_FD: one end of a ``SOCK_SEQPACKET`` Unix socket pair inherited from the parent
(`provenance.media.video.decode`). The process imports NumPy, PyAV (FFmpeg) and the PDQ core
once, says ``ready``, then serves requests: each packet is a JSON request (the arguments
of `provenance.media.video.frames.iter_sampled_frames`, ``max_memory_bytes``,
``timeout_s`` and the caller's ``deadline``, `time.monotonic` seconds) carrying two pipe write ends (SCM_RIGHTS): one for the reply, one for the
exit status. For every request it forks a fresh single-use child, so a hostile file
never shares a process with another request, and answers with the child's pid.

The child closes what it inherited, turns core dumps off, limits its address space
(``RLIMIT_AS``) to ``max_memory_bytes`` and its wall-clock time to ``timeout_s`` (an
interval timer whose SIGALRM ends it), decodes, and writes length-prefixed messages to
the reply pipe: first a JSON header, then the raw (H, W, 3) uint8 pixels of each kept
frame. Every failure becomes an error header, so the parent sees a message, not a
traceback; a crash shows as a closed pipe. This process reaps each child, kills one still
running past its time limit, and writes its wait status (4 bytes, big-endian) to the
status pipe. It exits, killing its children, when the parent's end of the socket closes.
Forking from a single-threaded process that has loaded FFmpeg but decoded nothing costs
a few milliseconds instead of an interpreter start and the imports (about 0.3 s).
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

#: Length prefix of every message: unsigned 64-bit big-endian byte count.
LENGTH_PREFIX = struct.Struct(">Q")
#: The child's wait status on the status pipe, and its pid in answer to a request.
STATUS = struct.Struct(">i")
PID = struct.Struct(">q")
#: The greeting the process sends once its imports are done.
READY = b"ready"
#: Largest request packet, in bytes.
MAX_REQUEST_BYTES = 64 * 1024
#: Grace, in seconds, past a child's own timer before this process kills it.
KILL_GRACE_S = 1.0
#: Seconds before the caller's deadline at which a damaged stream's second decode is
#: given up, so that the refusal saying so reaches the caller before it stops waiting.
REPLY_MARGIN_S = 0.5


@dataclass
class _Child:
    """A forked child: its deadline (monotonic seconds) and the status pipe's write end."""

    deadline: float
    status_fd: int


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def _write_message(fd: int, payload: bytes | memoryview) -> None:
    body = memoryview(payload).cast("B")
    _write_all(fd, LENGTH_PREFIX.pack(len(body)))
    _write_all(fd, body)


def _error(
    message: str, too_large: bool, budget: bool = False, memory: bool = False
) -> dict[str, Any]:
    """An error header; ``budget``: over the decoding budget (a DecodeBudgetError);
    ``memory``: out of the memory limit (a DecoderMemoryError)."""
    return {
        "ok": False,
        "error": message,
        "too_large": too_large,
        "budget": budget,
        "memory": memory,
    }


def _address_space_bytes() -> int:
    """This process's mapped address space (VmSize), in bytes."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _no_time_to_decode_again(
    damaged: int, first_s: float, limit_s: float, earlier_s: float
) -> dict[str, Any]:
    """The error header (a DecodeBudgetError's) for a damaged stream whose second decode,
    on one thread, does not fit in what is left of ``limit_s`` (seconds, the request's
    one limit) after the first took ``first_s`` and the request's earlier decodes of the
    file ``earlier_s`` (`provenance.media.video.decode.DecodeClock`)."""
    earlier = f", earlier decodes of the file {earlier_s:.1f} s" if earlier_s else ""
    return _error(
        f"the video stream is damaged ({damaged:,} frames the decoder marked corrupt), and"
        " a damaged stream is decoded a second time, on one thread, so that it hashes the"
        f" same on every call; that second decode does not fit in the {limit_s:g} s limit"
        f" (the first took {first_s:.1f} s{earlier}): repair or re-encode the file (for example"
        " `ffmpeg -i damaged.mp4 -c:v libx264 repaired.mp4`), or verify a shorter clip of it",
        True,
        budget=True,
    )


def _decode(request: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    from provenance.core.errors import (
        DecodeBudgetError,
        DecoderMemoryError,
        MediaError,
        MediaTooLargeError,
    )
    from provenance.media.video.frames import (
        DECODER_THREADS,
        DecodedFrame,
        StreamFacts,
        iter_sampled_frames,
    )

    def sampled(threads: int) -> Iterator[DecodedFrame | StreamFacts]:
        return iter_sampled_frames(
            request["path"],
            request["rate_hz"],
            request["max_frames"],
            request["keep_rgb_every"],
            request["max_rgb_frames"],
            request["rgb_max_side"],
            request["strip_bars"],
            request["max_sampled_pixels"],
            request["max_decoded_pixels"],
            request["keep_rgb_spread"],
            threads,
            bool(request.get("dihedral", False)),
        )

    # the caller's deadline (CLOCK_MONOTONIC, one clock for every process): both decodes
    # share its one time limit
    stop_at = float(request["deadline"]) - REPLY_MARGIN_S
    try:
        started = time.monotonic()
        items = list(sampled(DECODER_THREADS))
        last = items[-1]
        if isinstance(last, StreamFacts) and last.damaged_frames and DECODER_THREADS > 1:
            # frame threads conceal a damaged stream's errors differently from run to run:
            # decoded again on one thread, the same file hashes the same on every call.
            # One thread decodes no faster than several: a second decode that would take
            # longer than the first did is refused at once, one that runs out is stopped
            first_s = time.monotonic() - started
            late = _no_time_to_decode_again(
                last.damaged_frames,
                first_s,
                float(request["limit_s"]),
                float(request["earlier_s"]),
            )
            if time.monotonic() + first_s > stop_at:
                return late, []
            items = []
            for item in sampled(1):
                items.append(item)
                if not isinstance(item, StreamFacts) and time.monotonic() > stop_at:
                    return late, []
    except MediaError as e:
        too_large = isinstance(e, MediaTooLargeError)
        budget = isinstance(e, DecodeBudgetError)
        return _error(str(e), too_large, budget, isinstance(e, DecoderMemoryError)), []
    facts = items.pop()  # the generator ends with its StreamFacts
    assert isinstance(facts, StreamFacts)
    rows: list[list[Any]] = []
    kept = []
    for item in items:
        assert isinstance(item, DecodedFrame)
        height, width = item.rgb.shape[:2] if item.rgb is not None else (0, 0)
        if item.rgb is not None:
            kept.append(item.rgb)
        row = [item.pdq.timestamp_seconds, item.pdq.hex, item.pdq.quality, height, width]
        if item.turned:  # the 7 turns' hashes, one hex string (asked for with "dihedral")
            row.append("".join(h.hex for h in item.turned))
        rows.append(row)
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


def _start_hashing_thread() -> None:
    """Start this child's one hashing thread (`provenance.core.hash_threads`, limited to
    one by `main`) and have it compute a PDQ hash, before the address space is capped:
    the thread's stack and the OpenBLAS buffer its first matrix product maps (64 MiB)
    then count in what the loaded decoder maps. Mapped under the cap instead, they could
    fail: a thread that cannot start read as "the decoder failed on this file", and
    OpenBLAS, out of memory, ends the process itself (exit status 1, "Memory allocation
    still failed after 10 retries": a 4K video under a 1.1 GB limit, about 1 in 100)."""
    import numpy as np

    from provenance.core.binding import pdq_hash
    from provenance.core.hash_threads import run_beside

    run_beside(lambda: pdq_hash(np.zeros((64, 64, 3), np.uint8)), lambda: None)


def _run_child(request: dict[str, Any], fd: int) -> None:
    """Decode one request under its limits and write the reply to fd."""
    limit = int(request["max_memory_bytes"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.setitimer(signal.ITIMER_REAL, float(request["timeout_s"]))
    _start_hashing_thread()
    in_use = _address_space_bytes()
    kept: list[Any]
    if in_use >= limit:
        reply, kept = (
            _error(
                f"cannot load the decoder under the memory limit of {limit} bytes: "
                f"the loaded decoder alone maps {in_use} bytes",
                False,
            ),
            [],
        )
    else:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        out_of_memory = False
        try:
            reply, kept = _decode(request)
        except MemoryError:
            # nothing allocated here: until this clause ends, the exception's traceback
            # keeps the decode's frames (and the pixels they hold) alive, so building the
            # reply here could run out again and end the child without one
            out_of_memory = True
        except Exception:  # noqa: BLE001 - the process boundary: report, never traceback
            reply, kept = (
                _error("the video could not be decoded: the decoder failed on this file", False),
                [],
            )
        if out_of_memory:
            reply, kept = (
                _error(
                    f"decoding needs more than the memory limit of {limit} bytes", True, memory=True
                ),
                [],
            )
    _write_message(fd, json.dumps(reply).encode())
    for rgb in kept:
        _write_message(fd, rgb.data)


def _child(request: dict[str, Any], fd: int, inherited: list[int]) -> NoReturn:
    """The forked child: never returns into the serving loop."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGALRM, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        for other in inherited:
            os.close(other)
        _run_child(request, fd)
    except BaseException:  # noqa: BLE001 - a closed pipe or a broken request: just exit
        code = 1
    finally:
        os._exit(code)


class _Server:
    """The serving loop: fork on request, reap, kill at deadlines, report statuses."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.children: dict[int, _Child] = {}
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def run(self) -> None:
        while True:
            now = time.monotonic()
            deadlines = [c.deadline for c in self.children.values()]
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            ready, _, _ = select.select([self.sock.fileno(), self.wake_r], [], [], timeout)
            if self.wake_r in ready:
                while True:
                    try:
                        if not os.read(self.wake_r, 4096):
                            break
                    except BlockingIOError:
                        break
            self._reap()
            self._kill_late()
            if self.sock.fileno() in ready and not self._accept():
                return

    def _accept(self) -> bool:
        """Fork a child for one request; False when the parent has gone."""
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, MAX_REQUEST_BYTES, 2)
        except OSError:
            return False
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            self.sock.send(PID.pack(-1))
            return True
        reply_fd, status_fd = fds
        request = json.loads(data)
        inherited = [
            self.sock.fileno(),
            self.wake_r,
            self.wake_w,
            status_fd,
            *(c.status_fd for c in self.children.values()),
        ]
        pid = os.fork()
        if pid == 0:
            _child(request, reply_fd, inherited)
        os.close(reply_fd)
        deadline = time.monotonic() + float(request["timeout_s"]) + KILL_GRACE_S
        self.children[pid] = _Child(deadline, status_fd)
        self.sock.send(PID.pack(pid))
        return True

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            try:
                os.write(child.status_fd, STATUS.pack(status))
            except OSError:  # the parent stopped listening
                pass
            os.close(child.status_fd)

    def _kill_late(self) -> None:
        now = time.monotonic()
        for pid, child in self.children.items():
            if child.deadline <= now:
                os.kill(pid, signal.SIGKILL)  # not reaped yet: the pid is still this child

    def stop(self) -> None:
        for pid in self.children:
            os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            os.waitpid(pid, 0)


def main(argv: list[str]) -> int:
    """Serve decoding requests on the inherited socket until the parent closes it."""
    sock = socket.socket(fileno=int(argv[1]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Everything a request needs is loaded once, here, before the first fork.
    import provenance.media.video.frames  # noqa: F401
    from provenance.core.hash_threads import limit_helpers

    # A child hashes one frame while FFmpeg decodes the next: one helper thread is enough,
    # and each more would map a stack and an OpenBLAS buffer out of its memory limit.
    limit_helpers(1)

    server = _Server(sock)
    sock.send(READY)
    try:
        server.run()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
