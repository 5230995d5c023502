"""Sample and hash video frames in a separate process under a time and memory limit.

A malformed or hostile container must not hang, crash or exhaust the caller (a server
worker). So FFmpeg runs in a fresh child process for every file, forked by a pre-started
decoder process (`provenance.media.video.worker`, started once with ``subprocess``: safe from a
threaded gRPC server and from any kind of worker process) that has already imported NumPy,
PyAV and the PDQ core, so a call costs a fork (milliseconds) instead of an interpreter start
and those imports (about 0.3 s). The child sets ``RLIMIT_AS`` to the memory limit, turns
core dumps off and ends itself at the deadline; the parent also kills it at the deadline.
The child is treated as untrusted: it hashes frames itself, so only hashes (and, when
asked, a few RGB frames) cross the boundary, as one JSON header and raw pixel buffers that
the parent parses strictly. Nothing from the child is unpickled.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from provenance import metrics
from provenance.cli.files import open_regular
from provenance.core.binding import PDQ_ALGORITHM, PDQ_HASH_SIZE, PerceptualHash
from provenance.core.callstop import CALL_POLL_S, CallStop, call_ended
from provenance.core.claims import MAX_SOFT_BINDINGS
from provenance.core.dihedral import DIHEDRAL_TURNS
from provenance.core.errors import (
    BindingError,
    DeadlineError,
    DecodeBudgetError,
    DecoderCrashError,
    DecoderMemoryError,
    DecoderUnavailableError,
    MediaError,
    MediaTooLargeError,
)
from provenance.media.image import SNIFF_BYTES
from provenance.media.video.frames import MAX_DECODED_PIXELS, MAX_SAMPLED_PIXELS, sniff_container
from provenance.media.video.worker import LENGTH_PREFIX, PID, READY, STATUS

#: Default frame sampling rate for soft bindings, in frames per second.
DEFAULT_RATE_HZ = 1.0
#: Default wall-clock limit for decoding one file, in seconds.
DEFAULT_TIMEOUT_S = 120.0
#: Default address-space limit of the decoding process, in bytes (2 GiB).
DEFAULT_MAX_MEMORY_BYTES = 2 << 30

# The directory that holds the `provenance` package, so the child imports this same code.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_HEADER_BASE_BYTES = 4096
_HEADER_BYTES_PER_FRAME = 160
#: More per frame when the request asks for the 7 turned hashes (``dihedral``): one hex
#: string of them in the frame's row (`provenance.media.video.worker`), and its quotes.
_TURNED_BYTES_PER_FRAME = DIHEDRAL_TURNS * 2 * PDQ_HASH_SIZE + 8
#: How long the decoder process may take to start (imports), and to answer a request, s.
START_TIMEOUT_S = 60.0
_ANSWER_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SampledFrame:
    """One sampled frame of a video.

    timestamp_seconds: presentation time after the first frame; pdq: its PDQ hash (the
    same timestamp); rgb: (H, W, 3) uint8 display-oriented pixels when the caller asked to
    keep this frame, else None; turned: the PDQ hashes of the frame's 7 other rotations and
    mirror images (`provenance.core.dihedral.TRANSFORMS` order, same timestamp) when the
    caller asked for them (`sample_frames` ``dihedral``), else ().
    """

    timestamp_seconds: float
    pdq: PerceptualHash
    rgb: np.ndarray | None = field(default=None, compare=False, repr=False)
    turned: tuple[PerceptualHash, ...] = ()


@dataclass(frozen=True)
class VideoInfo:
    """What sampling a video found.

    width, height: display size in pixels (rotation applied); duration_seconds: from the
    first frame to the end of the last; rotation: counter-clockwise degrees of the display
    matrix (0, 90, 180, 270) that was applied to every frame; media_type: "video/mp4",
    "video/quicktime", "video/webm" or "video/x-matroska"; rate_hz: the sampling rate;
    frames_decoded: all frames decoded; frames: the samples in time order; decode_error:
    why decoding stopped before the end of a damaged or truncated stream ("" if it did not).
    """

    width: int
    height: int
    duration_seconds: float
    rotation: int
    media_type: str
    rate_hz: float
    frames_decoded: int
    frames: tuple[SampledFrame, ...]
    decode_error: str = ""


@dataclass(frozen=True)
class Redecode:
    """A further decode of a video that one request has decoded before, in the words of
    the DecodeBudgetError that refuses it: what it is (a sentence's subject) and what the
    sender can do instead."""

    what: str
    advice: str


#: A further decode that says nothing more of itself.
FURTHER_DECODE = Redecode("a further decode of the video", "verify a shorter clip of it")


@dataclass(frozen=True)
class _Turn:
    """One decode on a `DecodeClock`: when it started and when it must end (CLOCK_MONOTONIC
    seconds), the seconds each earlier decode on the clock took, what it is, the
    caller's own limit in seconds when that ends it before the clock's deadline (None),
    and the call it is for (None: none), whose deadline ends it when ``by_call``."""

    started: float
    deadline: float
    limit_s: float
    earlier: tuple[float, ...]
    again: Redecode
    capped_s: float | None
    call: CallStop | None = None
    by_call: bool = False

    @property
    def limit_ends_s(self) -> float:
        """The limit that ends this decode, seconds: the call's time left, the caller's
        own limit, or the clock's."""
        if self.by_call:
            return self.deadline - self.started
        return self.capped_s or self.limit_s

    @property
    def earlier_s(self) -> float:
        return sum(self.earlier)

    def ended(self) -> DeadlineError | None:
        """The error of a decode whose call has ended (cancelled by its caller); None
        while it has not."""
        if self.call is None or not self.call.ended.is_set():
            return None
        return call_ended(
            f"after {time.monotonic() - self.started:.1f} s of decoding the video",
            "the decoder was stopped",
        )

    def overdue(self) -> MediaError | DeadlineError:
        """The error of a decode stopped at its deadline: a DeadlineError when that was
        the call's, a DecodeBudgetError for a further decode that the clock's one limit
        stopped, else the plain MediaError."""
        if self.by_call:
            return DeadlineError(
                f"the call's deadline passed after {self.deadline - self.started:.1f} s of"
                " decoding the video; the decoder was stopped"
            )
        if self.capped_s is not None or not self.earlier:
            limit = self.limit_s if self.capped_s is None else self.capped_s
            return MediaError(
                f"decoding did not finish within {limit:g} s; the decoder was stopped"
            )
        return DecodeBudgetError(
            f"{self.again.what} did not finish in the {self.deadline - self.started:.1f} s"
            f" left of the {self.limit_s:g} s this request may spend decoding the video"
            f" ({_earlier(self.earlier)}); the decoder was stopped; {self.again.advice}"
        )


def _earlier(earlier: tuple[float, ...]) -> str:
    n = len(earlier)
    return f"its {n} earlier decode{'s' if n > 1 else ''} took {sum(earlier):.1f} s"


class DecodeClock:
    """The one time limit of all the decodes of a video that one request starts (the
    1 Hz decode of its soft bindings, that decode again without kept pixels, the
    detector's decode, the dense pass: `provenance.media.inspect`,
    `provenance.server.pipeline`; and inside each the damaged stream's one-thread pass,
    `provenance.media.video.worker`), so that one VerifyFile or DetectFile spends at most
    ``limit_s`` seconds decoding it. The deadline (CLOCK_MONOTONIC seconds) is fixed when
    the first decode on the clock starts. A request's decodes run one after another: the
    clock is not shared between threads.

    ``call``: the call the decodes are for (None: none): each decode is also stopped at
    its deadline, and as soon as it has ended (`CallStop.end`: its caller cancelled it),
    with a DeadlineError; before, the first decode ran to ``limit_s`` for a caller gone.

    Raises MediaError for a limit that is not a positive number of seconds.
    """

    def __init__(self, limit_s: float, call: CallStop | None = None) -> None:
        if not (math.isfinite(limit_s) and limit_s > 0):
            raise MediaError(f"the decoding time limit must be positive seconds, got {limit_s}")
        self.limit_s = limit_s
        self.call = call
        self.deadline: float | None = None
        self.decodes: list[float] = []  # seconds each decode on the clock took

    def begin(self, again: Redecode | None, timeout_s: float | None) -> _Turn:
        """Start a decode (the first fixes the deadline). A further decode whose time left
        is less than the longest decode before it (a decode of the same file decodes it
        from its start again, at least as far) is refused: DecodeBudgetError, saying
        ``again``'s what and advice, the limit and what was spent; DeadlineError when
        the clock's call has ended or is past its deadline. ``timeout_s``: the caller's
        own limit for this decode, seconds (None: none)."""
        now = time.monotonic()
        call = self.call
        if call is not None and call.over():
            raise call_ended("before the video was decoded")
        if self.deadline is None:
            self.deadline = now + self.limit_s
        left = self.deadline - now
        earlier = tuple(self.decodes)
        again = again or FURTHER_DECODE
        if earlier and (left <= 0 or left < max(earlier)):
            raise DecodeBudgetError(
                f"{again.what} was refused: the {self.limit_s:g} s this request may spend"
                f" decoding the video would run out first ({_earlier(earlier)}, the longest"
                f" {max(earlier):.1f} s, and {max(0.0, left):.1f} s are left); {again.advice}"
            )
        if call is not None and call.deadline is not None:
            if call.deadline < min(self.deadline, now + (timeout_s or left)):
                return _Turn(now, call.deadline, self.limit_s, earlier, again, None, call, True)
        if timeout_s is not None and timeout_s < left:
            return _Turn(now, now + timeout_s, self.limit_s, earlier, again, timeout_s, call)
        return _Turn(now, self.deadline, self.limit_s, earlier, again, None, call)

    def end(self, turn: _Turn) -> None:
        """Record how long the decode begun as ``turn`` took."""
        self.decodes.append(time.monotonic() - turn.started)


def sample_frames(
    path: str | os.PathLike[str],
    rate_hz: float = DEFAULT_RATE_HZ,
    max_frames: int = MAX_SOFT_BINDINGS,
    timeout_s: float | None = None,
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    keep_rgb_every: int = 0,
    max_rgb_frames: int = 16,
    rgb_max_side: int | None = None,
    strip_bars: bool = True,
    max_sampled_pixels: int = MAX_SAMPLED_PIXELS,
    max_decoded_pixels: int = MAX_DECODED_PIXELS,
    keep_rgb_spread: int = 0,
    clock: DecodeClock | None = None,
    again: Redecode | None = None,
    dihedral: bool = False,
) -> VideoInfo:
    """Decode a video file in a sandboxed child and return PDQ hashes of frames sampled at
    rate_hz (by presentation time, so variable frame rate is handled; see
    `provenance.media.video.frames.iter_sampled_frames`), with the display matrix applied.

    keep_rgb_every: also return the pixels of every n-th sample (0: none), at most
    max_rgb_frames of them, shrunk to rgb_max_side pixels on the longer side (None: native
    size, as the detector wants). keep_rgb_spread: instead, keep at most this many, spread
    over the samples the header declares (every ceil(declared / keep_rgb_spread)-th;
    `provenance.media.video.frames.iter_sampled_frames`). strip_bars: hash frames without
    their black bars (the default for soft bindings;
    `provenance.media.video.frames.trim_bars`). timeout_s: wall-clock
    limit in seconds, process start included (None: DEFAULT_TIMEOUT_S, or with a clock,
    the time it has left); clock: the `DecodeClock` of the request this decode is one
    of, whose one limit it draws on (the first decode on it fixes its deadline; a
    ``timeout_s`` that ends sooner still stops it); again: what this decode is, when the
    clock has timed decodes of the file before (`DecodeClock.begin`); max_memory_bytes:
    address-space limit of the child in bytes (the interpreter with NumPy, PyAV and two
    decoder threads needs about 0.5 GiB of it before any frame). max_sampled_pixels, max_decoded_pixels: the decoding
    budget (`provenance.media.video.frames.iter_sampled_frames`), checked against the
    stream header before any frame is decoded and again while decoding; `prov sign`,
    `prov scan` and the server all sample with the defaults, so a video one of them
    hashes the others hash too. dihedral: also hash each sample's 7 other rotations and
    mirror images (`SampledFrame.turned`), for a verifier to match a turned copy; the
    plain hashes are the same either way, so a signer leaves it off.

    Raises MediaError if ``path`` is not a regular file (a FIFO or device is refused
    without being opened for reading: `provenance.cli.files.open_regular`), is not
    MP4/MOV/WebM/Matroska, has no video stream or no frames, cannot be decoded, or the
    child times out or crashes; DecoderMemoryError (a
    MediaTooLargeError) if it runs out of memory; MediaTooLargeError if a frame is over
    the pixel limit or more than max_frames samples would be taken; DecodeBudgetError (a
    MediaTooLargeError) over the decoding budget, or for a further decode on ``clock``
    that its time left does not cover or that runs out of it; DecoderUnavailableError
    (not a MediaError: the server's fault) if the decoder process cannot be started
    or cannot load its libraries.
    """
    if not (math.isfinite(rate_hz) and rate_hz > 0):
        raise MediaError(f"rate_hz must be a positive number, got {rate_hz}")
    if max_frames < 1 or (timeout_s is not None and timeout_s <= 0) or max_memory_bytes <= 0:
        raise MediaError("max_frames, timeout_s and max_memory_bytes must be positive")
    try:  # not by a plain open: a FIFO renamed over the file its caller hashed held it
        with open_regular(path, MediaError) as f:  # for good, a device was acted on
            head = f.read(SNIFF_BYTES)
    except OSError as e:
        raise MediaError(f"cannot read {os.fspath(path)!r}: {e.strerror or e}") from e
    _, media_type = sniff_container(head)
    request = {
        "path": os.path.abspath(path),
        "rate_hz": rate_hz,
        "max_frames": max_frames,
        "keep_rgb_every": keep_rgb_every,
        "max_rgb_frames": max_rgb_frames,
        "rgb_max_side": rgb_max_side,
        "strip_bars": strip_bars,
        "max_sampled_pixels": max_sampled_pixels,
        "max_decoded_pixels": max_decoded_pixels,
        "keep_rgb_spread": keep_rgb_spread,
        "max_memory_bytes": max_memory_bytes,
        "dihedral": dihedral,
    }
    if clock is None:  # a clock of this one decode: its limit is timeout_s
        clock, timeout_s = DecodeClock(timeout_s or DEFAULT_TIMEOUT_S), None
    turn = clock.begin(again, timeout_s)  # raises DecodeBudgetError before any child
    request = {
        **request,
        "timeout_s": turn.deadline - turn.started,
        "deadline": turn.deadline,
        "limit_s": turn.limit_ends_s,
        "earlier_s": turn.earlier_s,
    }
    try:
        return _run(request, turn, max_frames, media_type, rate_hz)
    finally:
        clock.end(turn)


def _run(
    request: dict[str, Any], turn: _Turn, max_frames: int, media_type: str, rate_hz: float
) -> VideoInfo:
    """Fork a decoding child for ``request`` and read its reply until ``turn``'s deadline."""
    metrics.VIDEO_DECODES.inc()
    read_fd, write_fd = os.pipe()
    status_r, status_w = os.pipe()
    try:
        pid = _fork_decoder(request, write_fd, status_w)
    except BaseException:
        for fd in (read_fd, status_r):
            os.close(fd)
        raise
    finally:
        os.close(write_fd)
        os.close(status_w)
    reader = _Reader(read_fd, status_r, turn)
    try:
        per_frame = _HEADER_BYTES_PER_FRAME + (
            _TURNED_BYTES_PER_FRAME if request.get("dihedral") else 0
        )
        header = reader.message(_HEADER_BASE_BYTES + per_frame * max_frames)
        return _parse(header, reader, media_type, rate_hz)
    finally:
        reader.stop(pid)
        os.close(read_fd)
        os.close(status_r)


class _Zygote:
    """The pre-started decoder process and our end of its socket."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "provenance.media.video.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=_child_env(),
                close_fds=True,
            )
        except OSError as e:
            ours.close()
            raise DecoderUnavailableError(f"cannot start the decoder process: {e}") from e
        finally:
            theirs.close()
        self.sock = ours
        self.owner = os.getpid()
        self._ready = False

    def _wait_ready(self) -> None:
        """Wait for the greeting the process sends once its imports are done. Raises
        DecoderUnavailableError when none comes in time or the imports failed."""
        try:
            self.sock.settimeout(START_TIMEOUT_S)
            greeting = self.sock.recv(64)
        except OSError as e:
            raise DecoderUnavailableError(
                f"the decoder process did not start within {START_TIMEOUT_S:g} s"
            ) from e
        if greeting != READY:
            raise DecoderUnavailableError("the decoder process could not load PyAV and NumPy")
        self.sock.settimeout(_ANSWER_TIMEOUT_S)
        self._ready = True

    def fork(self, request: bytes, reply_fd: int, status_fd: int) -> int:
        """Have the process fork a child for ``request``; its pid. Raises OSError, and
        DecoderUnavailableError if the process never became ready."""
        if not self._ready:
            self._wait_ready()
        socket.send_fds(self.sock, [request], [reply_fd, status_fd])
        answer = self.sock.recv(PID.size)
        if len(answer) != PID.size:
            raise ConnectionError("the decoder process closed its socket")
        (pid,) = PID.unpack(answer)
        if pid <= 0:
            raise ConnectionError("the decoder process refused the request")
        return int(pid)

    def close(self) -> None:
        """Close the socket (the process then kills its children and exits) and reap it."""
        self.sock.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_zygote: _Zygote | None = None
_zygote_lock = threading.Lock()


def start_decoder() -> None:
    """Start the decoder process now, in the background (a server calls this at
    start-up), so its imports are done before the first video. Raises
    DecoderUnavailableError if the process cannot be started."""
    with _zygote_lock:
        _running_zygote()


def _running_zygote() -> _Zygote:
    global _zygote
    if _zygote is not None and _zygote.owner != os.getpid():
        _zygote = None  # inherited through a fork: that process and socket are the parent's
    if _zygote is None or _zygote.process.poll() is not None:
        if _zygote is not None:
            _zygote.close()
        _zygote = None
        _zygote = _Zygote()
    return _zygote


def _fork_decoder(request: dict[str, Any], reply_fd: int, status_fd: int) -> int:
    """A fresh decoding child for ``request`` writing to the pipes; its pid. A decoder
    process that has died is started again once. Raises DecoderUnavailableError when
    the process cannot be started or will not fork (the server's fault), MediaError."""
    body = json.dumps(request).encode()
    with _zygote_lock:
        for attempt in (1, 2):
            zygote = _running_zygote()
            try:
                return zygote.fork(body, reply_fd, status_fd)
            except DecoderUnavailableError:
                zygote.close()  # never ready: the next call starts another
                raise
            except OSError as e:
                zygote.close()
                if attempt == 2:
                    raise DecoderUnavailableError(
                        f"the decoder process failed to start a decode: {e}"
                    ) from e
    raise AssertionError("unreachable")


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    # One BLAS thread and few malloc arenas keep the child's address space predictable
    # under RLIMIT_AS.
    env["OPENBLAS_NUM_THREADS"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env["MALLOC_ARENA_MAX"] = "2"
    return env


class _Reader:
    """Reads length-prefixed messages from a decoding child until a deadline."""

    def __init__(self, fd: int, status_fd: int, turn: _Turn) -> None:
        self._fd = fd
        self._status_fd = status_fd
        self._deadline = turn.deadline
        self._turn = turn
        self._eof = False

    def message(self, max_bytes: int) -> bytes:
        (size,) = LENGTH_PREFIX.unpack(self._exactly(LENGTH_PREFIX.size))
        if size > max_bytes:
            raise MediaError(
                f"the decoder sent a {size}-byte message; at most {max_bytes} were expected"
            )
        return self._exactly(size)

    def _exactly(self, n: int) -> bytes:
        buf = bytearray()
        poll = self._turn.call is not None
        while len(buf) < n:
            ended = self._turn.ended()
            if ended is not None:
                raise ended
            remaining = self._deadline - time.monotonic()
            wait = min(remaining, CALL_POLL_S) if poll else remaining
            ready, _, _ = select.select([self._fd], [], [], max(0.0, wait))
            if not ready:
                if remaining <= wait:
                    raise self._overdue()
                continue
            chunk = os.read(self._fd, min(n - len(buf), 1 << 20))
            if not chunk:
                self._eof = True
                how = self._exit(1.0)
                if how == "killed by SIGALRM":  # the child's own timer: the same deadline
                    raise self._overdue()
                if how.startswith("killed by"):
                    raise DecoderCrashError(f"the decoder process died ({how})")
                raise MediaError(f"the decoder process died ({how})")
            buf += chunk
        return bytes(buf)

    def _overdue(self) -> MediaError | DeadlineError:
        return self._turn.overdue()

    def _exit(self, wait_s: float) -> str:
        """How the child ended, from the wait status the decoder process reports."""
        ready, _, _ = select.select([self._status_fd], [], [], wait_s)
        raw = os.read(self._status_fd, STATUS.size) if ready else b""
        if len(raw) != STATUS.size:
            return "its pipe closed early"
        code = os.waitstatus_to_exitcode(STATUS.unpack(raw)[0])
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def stop(self, pid: int) -> None:
        """Make sure the child has ended: kill it unless its reply pipe reached end of file
        (while the pipe is open the child holds it, so it is alive and ``pid`` is still
        its, not yet reaped), then wait briefly until it has been reaped."""
        if not self._eof:
            ready, _, _ = select.select([self._fd], [], [], 0)
            if not (ready and not os.read(self._fd, 1 << 16)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._exit(2.0)


def _parse(header: bytes, reader: _Reader, media_type: str, rate_hz: float) -> VideoInfo:
    try:
        doc: dict[str, Any] = json.loads(header)
        if not doc["ok"]:
            error = str(doc["error"])
            if doc["budget"]:
                raise DecodeBudgetError(error)
            if doc["memory"]:
                raise DecoderMemoryError(error)
            raise MediaTooLargeError(error) if doc["too_large"] else MediaError(error)
        samples = []
        for t, hex_hash, quality, rgb_h, rgb_w, *turns in doc["frames"]:
            pdq = PerceptualHash(PDQ_ALGORITHM, bytes.fromhex(hex_hash), int(quality), float(t))
            turned = _turned(turns[0], pdq) if turns else ()
            rgb = None
            if rgb_h:
                size = int(rgb_h) * int(rgb_w) * 3
                raw = reader.message(size)
                if len(raw) != size:
                    raise MediaError(f"the decoder sent {len(raw)} bytes of pixels, not {size}")
                rgb = np.frombuffer(raw, dtype=np.uint8).reshape(int(rgb_h), int(rgb_w), 3)
            samples.append(SampledFrame(pdq.timestamp_seconds, pdq, rgb, turned))
        return VideoInfo(
            width=int(doc["width"]),
            height=int(doc["height"]),
            duration_seconds=float(doc["duration_seconds"]),
            rotation=int(doc["rotation"]),
            media_type=media_type,
            rate_hz=rate_hz,
            frames_decoded=int(doc["frames_decoded"]),
            frames=tuple(samples),
            decode_error=str(doc["decode_error"]),
        )
    except (ValueError, KeyError, TypeError, BindingError) as e:
        raise MediaError(f"the decoder sent a malformed reply: {e}") from e


def _turned(packed_hex: str, plain: PerceptualHash) -> tuple[PerceptualHash, ...]:
    """A reply row's 7 turned hashes (one hex string, `provenance.media.video.worker`),
    of ``plain``'s quality and timestamp. Raises ValueError when it is not 7 hashes."""
    packed = bytes.fromhex(packed_hex)
    if len(packed) != DIHEDRAL_TURNS * PDQ_HASH_SIZE:
        raise ValueError(f"{len(packed)} bytes of turned hashes, not {DIHEDRAL_TURNS} hashes")
    return tuple(
        PerceptualHash(
            PDQ_ALGORITHM, packed[k : k + PDQ_HASH_SIZE], plain.quality, plain.timestamp_seconds
        )
        for k in range(0, len(packed), PDQ_HASH_SIZE)
    )


def video_turns(info: VideoInfo) -> tuple[PerceptualHash, ...]:
    """A video's ``FileFacts.dihedral_soft_bindings``: for each of the 7 turns after the
    identity (`provenance.core.dihedral.TRANSFORMS` order), the hashes of every sample
    turned so, in time order (7 runs of ``len(info.frames)``; () when the samples carry no
    turned hashes). `provenance.core.verify` matches each run as a turned copy's frames."""
    if not info.frames or not all(f.turned for f in info.frames):
        return ()
    return tuple(f.turned[k] for k in range(DIHEDRAL_TURNS) for f in info.frames)
