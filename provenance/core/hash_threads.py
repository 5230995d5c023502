"""Hashing beside the calling thread: a few long-lived helper threads, handed work through
a queue and a lock, so that SHA-256 over large buffers (hashlib releases the GIL above
2 KiB) runs on another core while the caller does something else.

A handoff costs about 25 µs here against about 70 µs for a `ThreadPoolExecutor` future
(measured on this 2-core machine class), which matters when a 1 MiB piece hashes in
about 1 ms: the hard binding of a video hashes every byte twice (whole file and chunk
leaf, `provenance.core.video_binding`), and an upload is hashed while the next message
arrives (`provenance.media.inspect.Upload`).

- `run_beside(fn, own)`: ``fn()`` on a helper while this thread runs ``own()``; returns
  when both are done.
- `start_beside(fn)`: ``fn()`` started on a helper; the returned function waits for its
  result (the video frame loop hashes frame k while FFmpeg decodes frame k + 1).
- `BackgroundFeed`: any stream consumer (the chunk leaves of a video upload) fed with
  immutable bytes on a helper thread, in order, without the caller waiting (at most
  BACKLOG_BYTES behind); `drain` waits; `call_within(n, wake)` has the helper call
  ``wake()`` once it is at most n bytes behind (VerifyFile's event loop awaits that: no
  thread waits, and the helper still has work when the loop reads on). `lend` feeds a
  buffer the caller reuses and returns the wait for that buffer
  (`provenance.core.video_binding.hash_file` reads a pipe into a ring of buffers while
  the helper hashes the chunk leaves of earlier ones).
- `BackgroundSha256`: a `BackgroundFeed` computing a SHA-256; `digest` waits.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import queue
import threading
from collections.abc import Callable
from functools import cache
from typing import TypeVar

T = TypeVar("T")

#: How far a `BackgroundFeed` may fall behind its writer before `update` waits, in bytes:
#: the most an upload holds in memory waiting to be hashed (a few messages: enough for
#: the receiving and the hashing to overlap, small enough for many uploads at once).
BACKLOG_BYTES = 4 << 20

_Job = tuple[Callable[[], object], threading.Lock, list[BaseException]]


class _Helper:
    """One daemon thread running jobs in the order they were put."""

    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        while True:
            fn, done, errors = self.jobs.get()
            try:
                fn()
            except BaseException as e:  # handed to the waiting thread, raised there
                errors.append(e)
            done.release()

    def start(
        self, fn: Callable[[], object], errors: list[BaseException] | None = None
    ) -> tuple[threading.Lock, list[BaseException]]:
        """Queue ``fn``; returns the lock released once it ran and the list its exception
        goes to (``errors`` when given)."""
        done = threading.Lock()
        done.acquire()
        errors = [] if errors is None else errors
        self.jobs.put((fn, done, errors))
        return done, errors


def _wait(done: threading.Lock, errors: list[BaseException]) -> None:
    done.acquire()
    if errors:
        raise errors[0]


#: How many helper threads this process starts: one per CPU unless `limit_helpers` said.
_helper_count: int | None = None


def limit_helpers(count: int) -> None:
    """Start at most ``count`` (>= 1) helper threads in this process, for a process that
    must know its threads before it caps its address space: every thread costs a stack,
    and its first matrix product an OpenBLAS buffer (64 MiB), that a capped process may
    fail to map (`provenance.media.video.worker`). Raises RuntimeError once the helpers
    have started, and ValueError for a count below 1."""
    global _helper_count
    if count < 1:
        raise ValueError(f"at least one helper thread is needed, not {count}")
    if _helpers.cache_info().currsize:
        raise RuntimeError("the hash helper threads have already started")
    _helper_count = count


@cache
def _helpers() -> tuple[_Helper, ...]:
    count = _helper_count or max(1, os.cpu_count() or 1)
    return tuple(_Helper(f"hash-{i}") for i in range(count))


_next = itertools.count()


def _helper() -> _Helper:
    """The helpers in turn (callers spread over them; each helper keeps its order)."""
    helpers = _helpers()
    return helpers[next(_next) % len(helpers)]


def run_beside(fn: Callable[[], object], own: Callable[[], object]) -> None:
    """Run ``fn()`` on a helper thread while this thread runs ``own()``; return once both
    finished. An exception of either is raised here (``own``'s first)."""
    done, errors = _helper().start(fn)
    try:
        own()
    finally:
        done.acquire()
    if errors:
        raise errors[0]


def start_beside(fn: Callable[[], T]) -> Callable[[], T]:
    """Start ``fn()`` on a helper thread and return a function that waits for it and
    returns its result, or raises its exception. Call that function once."""
    out: list[T] = []
    done, errors = _helper().start(lambda: out.append(fn()))

    def result() -> T:
        _wait(done, errors)
        return out[0]

    return result


class BackgroundFeed:
    """Ordered calls of ``feed(data)`` on a helper thread for a stream of immutable bytes.

    `update` takes ``bytes`` or a memoryview of ``bytes`` (the helper reads them later; the
    caller guarantees they do not change) and returns at once unless the helper is more
    than BACKLOG_BYTES behind; `size` counts the bytes given so far; `drain` waits for the
    helper; `call_within` has the helper say when it has caught up to within some bytes,
    so an asyncio caller can wait for it without a thread. ``feed`` must not itself wait
    for a helper (`run_beside`): helpers waiting on each other could deadlock.
    """

    __slots__ = ("_fn", "_helper", "_errors", "_given", "_hashed", "_waiter")

    def __init__(self, feed: Callable[[bytes | memoryview], object]) -> None:
        self._fn = feed
        self._helper = _helper()
        self._errors: list[BaseException] = []
        self._given = 0  # written by the caller's thread only
        self._hashed = 0  # written by the helper only
        # (bytes fed by when to call, the call): set by `call_within`, taken by either thread
        self._waiter: tuple[int, Callable[[], object]] | None = None

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            self._fn(data)
            self._hashed += len(data)
        except BaseException as e:  # seen by the caller `call_within` wakes (and by `drain`)
            self._errors.append(e)
            raise
        finally:
            waiter = self._waiter
            if waiter is not None and (self._hashed >= waiter[0] or self._errors):
                self._take_waiter()

    def _take_waiter(self) -> None:
        """Call the waiter set by `call_within`, if still set (either thread may; a waiter
        may so be called twice, which its caller allows)."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter[1]()

    def update(self, data: bytes | memoryview) -> None:
        """Feed the next bytes of the stream."""
        self._given += len(data)
        if self._given - self._hashed > BACKLOG_BYTES:
            self.drain()
        self._helper.start(lambda: self._feed(data), self._errors)

    def lend(self, data: memoryview) -> Callable[[], None]:
        """Feed bytes that the caller changes afterwards (a read buffer it reuses), without
        waiting: returns a function that waits until the helper has fed them and raises
        what the feeding raised; the caller calls it before changing the bytes."""
        self._given += len(data)
        done, errors = self._helper.start(lambda: self._feed(data), self._errors)
        return lambda: _wait(done, errors)

    def drain(self) -> None:
        """Wait until the helper has fed every byte given; raise what it raised."""
        _wait(*self._helper.start(lambda: None, self._errors))

    def call_within(self, backlog: int, wake: Callable[[], object]) -> None:
        """Call ``wake()`` once at most ``backlog`` bytes given are not fed yet, or the
        feeding has failed (`drain` then raises it): on this thread at once when that is
        so now, else on the helper's thread as soon as it is, so ``wake`` must be quick
        and thread-safe, and may be called twice (an asyncio caller settles a future
        with `loop.call_soon_threadsafe`). Call it from the thread that gives the bytes,
        with no `update` until ``wake`` was called; one waiter at a time."""
        self._waiter = (self._given - backlog, wake)
        if self._hashed >= self._given - backlog or self._errors:
            self._take_waiter()  # caught up meanwhile: the helper may not look again

    @property
    def behind(self) -> int:
        """Bytes given but not fed yet (an asyncio caller that finds this near
        BACKLOG_BYTES waits with `call_within`, so that `update` never waits on its loop)."""
        return self._given - self._hashed

    @property
    def size(self) -> int:
        """Number of bytes given so far."""
        return self._given


class BackgroundSha256(BackgroundFeed):
    """Incremental SHA-256 of a byte stream computed on a helper thread (`BackgroundFeed`);
    `digest` waits for the helper and returns the 32-byte SHA-256 of all bytes given."""

    __slots__ = ("_hash",)

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        super().__init__(self._hash.update)

    def digest(self) -> bytes:
        """The 32-byte SHA-256 of everything fed so far (the stream may continue)."""
        self.drain()
        return self._hash.digest()
