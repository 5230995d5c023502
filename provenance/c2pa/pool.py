"""A pool of reader processes that isolates the native C2PA parser from the caller.

Each worker is a separate Python process running `provenance.c2pa.worker`; a read
that outlives its time limit gets its worker killed (SIGKILL), and a worker that dies
(a native crash, an abort on an allocation failure under its memory limit) is
replaced. Either way the caller gets a `C2paResult` that says so, and the next read
starts a fresh worker. Workers persist between reads, so the per-file cost is one
round trip over a pipe rather than a process start. Safe to share between threads:
at most `workers` reads run at once, the others wait for a free worker.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from provenance import metrics
from provenance.c2pa.result import NOT_PRESENT, C2paResult, failed, result_from_reader
from provenance.core.errors import ConfigError

_WORKER_SCRIPT = str(Path(__file__).with_name("worker.py"))
_LENGTH = struct.Struct(">Q")
#: Largest reply a worker may send, in bytes (the manifest-store JSON of one file).
MAX_REPLY_BYTES = 64 * 1024 * 1024


class _WorkerGone(Exception):
    """The worker closed its pipe, broke the protocol, or did not answer in time."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Worker:
    """One reader process, the pipes to it and the Unix socket that hands it the
    descriptors of the files it reads (`provenance.c2pa.worker`)."""

    def __init__(self, start_timeout_s: float) -> None:
        self._fds, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", _WORKER_SCRIPT, str(theirs.fileno())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
                pass_fds=(theirs.fileno(),),
            )
        except OSError as e:
            self._fds.close()
            raise ConfigError(f"cannot start the C2PA reader process: {e}") from e
        finally:
            theirs.close()
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin = self.process.stdin
        self._stdout_fd = self.process.stdout.fileno()
        try:
            ready = self._receive(time.monotonic() + start_timeout_s)
        except _WorkerGone as e:
            self.kill()
            raise ConfigError(
                f"the C2PA reader process did not start ({e}); is c2pa-python installed?"
            ) from e
        if json.loads(ready) != {"ready": True}:
            self.kill()
            raise ConfigError("the C2PA reader process sent an unexpected greeting")

    def request(
        self, header: dict[str, Any], frames: list[bytes], timeout_s: float, fd: int | None
    ) -> bytes:
        """Send a request (and ``fd``, the open file to read, when not None) and return
        the reply frame; raises _WorkerGone."""
        deadline = time.monotonic() + timeout_s
        try:
            if fd is not None:
                socket.send_fds(self._fds, [b"F"], [fd])
            for body in [json.dumps(header).encode(), *frames]:
                self._stdin.write(_LENGTH.pack(len(body)))
                self._stdin.write(body)
            self._stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise _WorkerGone("Crashed", f"the C2PA reader process is gone: {e}") from e
        return self._receive(deadline, timeout_s)

    def _receive(self, deadline: float, timeout_s: float | None = None) -> bytes:
        head = self._read_exact(_LENGTH.size, deadline, timeout_s)
        (size,) = _LENGTH.unpack(head)
        if size > MAX_REPLY_BYTES:
            raise _WorkerGone("TooLarge", f"the reader's reply is {size} bytes")
        return self._read_exact(size, deadline, timeout_s)

    def _read_exact(self, size: int, deadline: float, timeout_s: float | None) -> bytes:
        chunks: list[bytes] = []
        missing = size
        with selectors.DefaultSelector() as selector:
            selector.register(self._stdout_fd, selectors.EVENT_READ)
            while missing:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    limit = f"{timeout_s:g} s" if timeout_s is not None else "its start-up limit"
                    raise _WorkerGone("Timeout", f"the C2PA reader ran past {limit}; killed")
                chunk = os.read(self._stdout_fd, min(missing, 1 << 20))
                if not chunk:
                    raise _WorkerGone("Crashed", self._death_message())
                chunks.append(chunk)
                missing -= len(chunk)
        return b"".join(chunks)

    def _death_message(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "the C2PA reader process closed its pipe"
        if code < 0:
            return f"the C2PA reader process died of {signal.Signals(-code).name}"
        return f"the C2PA reader process exited with status {code}"

    def stop(self) -> None:
        """Ask the worker to exit (end of its input); kill it if it lingers."""
        try:
            self._stdin.close()
            self.process.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()
        self._close_pipes()

    def kill(self) -> None:
        """Kill the worker at once and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except OSError:
                    pass
        self._fds.close()


class ReaderPool:
    """Up to `workers` persistent reader processes, started on demand.

    start_timeout_s: how long a new worker may take to import the native library.
    Use as a context manager or call `close`.
    """

    def __init__(self, workers: int = 1, start_timeout_s: float = 60.0) -> None:
        if workers < 1:
            raise ConfigError(f"a reader pool needs at least one worker, got {workers}")
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._closed = False
        self._start_timeout_s = start_timeout_s

    def read(
        self,
        *,
        data: bytes | None,
        media_type: str | None,
        settings_json: str,
        manifest: bytes | None,
        timeout_s: float,
        memory_bytes: int,
        fd: int | None = None,
        size: int = 0,
    ) -> C2paResult:
        """Read one asset in a worker: its bytes (``data``), or the first ``size`` bytes
        of the open regular file ``fd`` (``data`` None), whose descriptor the worker is
        handed (SCM_RIGHTS): it opens no path, and reads nothing past ``size`` (the size
        the caller checked) of a file grown since. Never raises for the file: a file that
        held fewer than ``size`` bytes as it was read gives error_kind ``FileChanged``.

        settings_json: c2pa-rs settings; manifest: sidecar manifest-store bytes or None;
        timeout_s: wall-clock limit of the read, seconds; memory_bytes: address-space
        limit of the worker during the read; ``fd`` stays the caller's to close. Raises
        ConfigError if the pool is closed or a worker cannot be started, ValueError
        unless exactly one of ``data`` and ``fd`` is given.
        """
        if (data is None) == (fd is None):
            raise ValueError("give the asset's bytes or its open file, not both or neither")
        header = {
            "media_type": media_type,
            "settings": settings_json,
            "memory_bytes": memory_bytes,
            "has_data": data is not None,
            "has_manifest": manifest is not None,
            "has_fd": fd is not None,
            "size": size,
        }
        frames = [f for f in (data, manifest) if f is not None]
        worker = self._acquire()
        healthy = False
        metrics.C2PA_BUSY.inc()
        try:
            reply = json.loads(worker.request(header, frames, timeout_s, fd))
            if not isinstance(reply, dict):
                raise ValueError(f"a reply of type {type(reply).__name__}")
            healthy = True
        except _WorkerGone as e:
            return failed(e.kind, str(e))
        except ValueError as e:
            return failed("Protocol", f"the C2PA reader process sent a malformed reply: {e}")
        finally:
            metrics.C2PA_BUSY.dec()
            metrics.C2PA_READS.inc()
            self._release(worker, healthy)
        if reply.get("ok"):
            return result_from_reader(reply.get("state"), str(reply.get("json")))
        if reply.get("kind") == "ManifestNotFound":
            return NOT_PRESENT
        return failed(str(reply.get("kind")), str(reply.get("message")))

    def _acquire(self) -> _Worker:
        self._slots.acquire()
        try:
            with self._lock:
                if self._closed:
                    raise ConfigError("the C2PA reader pool is closed")
                worker = self._idle.pop() if self._idle else None
            if worker is not None and worker.process.poll() is not None:
                worker.kill()  # died idle: reaped, its pipes and socket closed now
                worker = None
            if worker is None:
                worker = _Worker(self._start_timeout_s)
            return worker
        except BaseException:
            self._slots.release()
            raise

    def _release(self, worker: _Worker, healthy: bool) -> None:
        try:
            with self._lock:
                keep = healthy and not self._closed
                if keep:
                    self._idle.append(worker)
            if not keep:
                worker.kill()
        finally:
            self._slots.release()

    def close(self) -> None:
        """Stop the idle workers; busy ones are killed when their read returns."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()

    def __enter__(self) -> ReaderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
