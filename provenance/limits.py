"""Bounded cost per request: the server's limits in one dataclass, and the machinery that
enforces them in the gRPC shell.

`ServerLimits` holds every limit `prov serve` exposes as a flag (the README's "Limits
and errors" table lists them). `UploadGate` admits upload streams (`VerifyFile`,
`DetectFile`) into a fixed number of slots, below the RPC thread pool's size, so uploads
can never hold every thread and cheap calls (checkpoints, proofs, health, submissions)
always find one; it cancels a stream that goes idle or runs past its deadline, and admits
decodes into a smaller number of slots. `DeviceQuota` meters each device's accepted
submissions (token buckets for claims and bytes per minute).

Refusals are `LimitError` (gRPC RESOURCE_EXHAUSTED) and `UploadTimeoutError`
(DEADLINE_EXCEEDED), decided before the expensive work starts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from provenance.contract import MAX_LOOKUP_HASHES, MAX_LOOKUP_QUERIES
from provenance.errors import ConfigError, LimitError, UploadTimeoutError

#: RPC threads kept free of uploads whatever the configuration, so cheap calls always run.
MIN_FREE_THREADS = 4


@dataclass(frozen=True)
class ServerLimits:
    """Limits of the gRPC shell (`prov serve` flags in brackets).

    rpc_threads: size of the RPC thread pool [--rpc-threads]; max_uploads: upload streams
    (VerifyFile, DetectFile) served at once, the rest refused [--max-uploads]; max_decodes:
    uploads decoded (pixels, frames, C2PA) at once [--max-decodes]; decode_wait_s: how long
    an upload waits for a decode slot before it is refused, seconds
    [--decode-wait-seconds]; upload_idle_s: seconds
    an upload stream may go without a message [--upload-idle-seconds]; upload_deadline_s:
    seconds from the call's start to its last message [--upload-deadline-seconds];
    min_chunk_bytes: smallest upload message except the last, and smallest chunk size of a
    sidecar's chunked binding the server hashes chunk by chunk [--min-chunk-kb];
    max_lookup_queries: files in one Lookup [--max-lookup-queries]; max_lookup_hashes:
    perceptual hashes (video frames) in one Lookup [--max-lookup-hashes];
    quota_claims_per_minute, quota_bytes_per_minute: accepted submissions and signed-claim
    bytes per device per minute, bursts up to one minute's worth
    [--quota-claims-per-minute, --quota-claim-kb-per-minute]; 0 turns a quota off.

    Raises ConfigError when a value is out of range or uploads could take every thread.
    """

    rpc_threads: int = 32
    max_uploads: int = 8
    max_decodes: int = 2
    decode_wait_s: float = 10.0
    upload_idle_s: float = 30.0
    upload_deadline_s: float = 600.0
    min_chunk_bytes: int = 64 * 1024
    max_lookup_queries: int = MAX_LOOKUP_QUERIES
    max_lookup_hashes: int = MAX_LOOKUP_HASHES
    quota_claims_per_minute: int = 600
    quota_bytes_per_minute: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_uploads", "max_decodes", "max_lookup_queries", "max_lookup_hashes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_uploads > self.rpc_threads - MIN_FREE_THREADS:
            raise ConfigError(
                f"{self.max_uploads} concurrent uploads need at least"
                f" {self.max_uploads + MIN_FREE_THREADS} RPC threads (got {self.rpc_threads}):"
                f" {MIN_FREE_THREADS} are kept for other calls"
            )
        for name in ("upload_idle_s", "upload_deadline_s", "decode_wait_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("min_chunk_bytes", "quota_claims_per_minute", "quota_bytes_per_minute"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} cannot be negative, got {getattr(self, name)}")


def _cancel(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> None:
    """Cancel a call from another thread with a status the client sees (details included).

    grpc's public `cancel()` sends a bare CANCELLED; the core call under the context can
    cancel with a status, which tells the client why. Falls back to `cancel()` where that
    object is missing (another grpc implementation)."""
    # the only way to give a cancelled call a status
    from grpc._cython import cygrpc  # type: ignore[attr-defined]  # private; grpc stubs omit it

    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    if call is None:
        context.cancel()
        return
    call.cancel(cygrpc.StatusCode(code.value[0]), details)


class UploadStream:
    """One admitted upload: when it started, when its last message came, why it was cut."""

    __slots__ = ("context", "last", "reason", "receiving", "start")

    def __init__(self, context: grpc.ServicerContext, now: float) -> None:
        self.context = context
        self.start = now
        self.last = now
        self.receiving = True
        self.reason = ""


class UploadGate:
    """Admission, idle timeout and deadline of upload streams; slots for decodes.

    One watchdog thread runs while any admitted stream is still receiving, waking every
    quarter of the idle timeout (at most each second). ``clock`` returns monotonic seconds.
    """

    def __init__(self, limits: ServerLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._uploads = threading.BoundedSemaphore(limits.max_uploads)
        self._decodes = threading.BoundedSemaphore(limits.max_decodes)
        self._lock = threading.Lock()
        self._active: set[UploadStream] = set()
        self._watchdog: threading.Thread | None = None
        self._tick = min(1.0, limits.upload_idle_s / 4)

    @contextmanager
    def upload(self, context: grpc.ServicerContext) -> Iterator[UploadStream]:
        """Hold an upload slot for the block; raises LimitError when all are taken."""
        if not self._uploads.acquire(blocking=False):
            raise LimitError(
                f"the server is already receiving {self.limits.max_uploads} uploads, its limit"
                " (--max-uploads): try again shortly"
            )
        stream = UploadStream(context, self._clock())
        try:
            with self._lock:
                self._active.add(stream)
                if self._watchdog is None:
                    self._watchdog = threading.Thread(
                        target=self._watch, name="upload-watchdog", daemon=True
                    )
                    self._watchdog.start()
            yield stream
        finally:
            with self._lock:
                self._active.discard(stream)
            self._uploads.release()

    def messages(self, stream: UploadStream, request_iterator: Iterator[Any]) -> Iterator[Any]:
        """The stream's messages, each one resetting its idle timer. Raises
        UploadTimeoutError when the watchdog cut the stream."""
        it = iter(request_iterator)
        try:
            while True:
                try:
                    msg = next(it)
                except StopIteration:
                    return
                except grpc.RpcError as e:
                    why = stream.reason or "the client cancelled the upload"
                    raise UploadTimeoutError(why) from e
                stream.last = self._clock()
                yield msg
        finally:
            stream.receiving = False

    def _watch(self) -> None:
        while True:
            time.sleep(self._tick)
            now = self._clock()
            with self._lock:
                if not self._active:
                    self._watchdog = None
                    return
                late = [s for s in self._active if s.receiving and not s.reason]
            for s in late:
                if now - s.last > self.limits.upload_idle_s:
                    s.reason = (
                        f"upload idle for more than {self.limits.upload_idle_s:g} s"
                        " (--upload-idle-seconds): send the file without pauses"
                    )
                elif now - s.start > self.limits.upload_deadline_s:
                    s.reason = (
                        f"upload still arriving after {self.limits.upload_deadline_s:g} s,"
                        " the server's limit per upload (--upload-deadline-seconds)"
                    )
                else:
                    continue
                _cancel(s.context, grpc.StatusCode.DEADLINE_EXCEEDED, s.reason)

    @contextmanager
    def decode(self, context: grpc.ServicerContext) -> Iterator[None]:
        """Hold a decode slot for the block, waiting up to ``decode_wait_s`` (or what is
        left of the call's deadline, if less); raises LimitError when none frees up."""
        left = context.time_remaining()
        wait = self.limits.decode_wait_s if left is None else min(left, self.limits.decode_wait_s)
        if not self._decodes.acquire(timeout=max(0.0, wait)):
            raise LimitError(
                f"the server is decoding {self.limits.max_decodes} files, its limit"
                f" (--max-decodes), and none finished within {wait:.0f} s: try again shortly"
            )
        try:
            yield
        finally:
            self._decodes.release()


class DeviceQuota:
    """Per-device token buckets: claims and signed-claim bytes per minute.

    `check` refuses a device whose bucket is empty; `charge` takes an accepted submission
    out of it. Only verified submissions are charged, so nobody can spend another
    device's quota with forged requests. ``clock`` returns monotonic seconds.
    """

    def __init__(self, limits: ServerLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_min = (
            float(limits.quota_claims_per_minute),
            float(limits.quota_bytes_per_minute),
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[bytes, tuple[float, float, float]] = {}

    def _level(self, device_id: bytes, now: float) -> tuple[float, float]:
        claims, nbytes, then = self._buckets.get(device_id, (*self._per_min, now))
        refill = (now - then) / 60.0
        return (
            min(self._per_min[0], claims + refill * self._per_min[0]),
            min(self._per_min[1], nbytes + refill * self._per_min[1]),
        )

    def check(self, device_id: bytes, size: int) -> None:
        """Raises LimitError when the device has used up a quota for now."""
        with self._lock:
            claims, nbytes = self._level(device_id, self._clock())
        per_claims, per_bytes = self._per_min
        if per_claims and claims < 1:
            raise LimitError(
                f"device {device_id.hex()[:16]} sent more than {per_claims:.0f} claims in a"
                " minute, its quota (--quota-claims-per-minute): retry later"
            )
        if per_bytes and nbytes < min(size, per_bytes):
            raise LimitError(
                f"device {device_id.hex()[:16]} sent more than {per_bytes / 1024:.0f} KiB of"
                " claims in a minute, its quota (--quota-claim-kb-per-minute): retry later"
            )

    def charge(self, device_id: bytes, size: int) -> None:
        """Take one claim of ``size`` bytes out of the device's buckets."""
        with self._lock:
            now = self._clock()
            claims, nbytes = self._level(device_id, now)
            self._buckets[device_id] = (claims - 1, nbytes - size, now)
