"""Reads never wait behind a write held up by another process: while SQLite's one write
lock is another connection's (a backup tool's BEGIN IMMEDIATE, for up to the 30 s busy
timeout), the log's writer waits for it, and nothing else may wait for the writer. Before:
a thread's first read registered its connection under the writer's lock, and the device
quota held its lock across that read, so the event loop's next quota check waited too and
the server stopped taking calls until the lock was released (CI, 1 December: 6 of 10
submissions never reached a handler within their 3 s deadline)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from provenance.server.limits import DeviceQuota, ServerLimits
from provenance.store.sqlite import SqliteStore

DEV = b"d" * 32


def _run(fn: Callable[[], object]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_a_new_reader_thread_reads_while_the_writer_waits_for_another_process(
    tmp_path: Path,
) -> None:
    """The writer (adding quota counts) waits for a real second connection's write lock;
    a thread that has never read before reads the store meanwhile, and the writer's
    change lands once the lock is released."""
    db = tmp_path / "p.db"
    store = SqliteStore(db, exclusive=True)
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        writer = _run(lambda: store.add_quota_usage(0, [(DEV, 3, 300)], keep_from=0))
        # the writer holds its lock (waiting in BEGIN IMMEDIATE for the blocker's)
        for _ in range(500):
            if not store._write_lock.acquire(blocking=False):
                break
            store._write_lock.release()
            time.sleep(0.01)
        else:
            raise AssertionError("the writer never took its lock")
        got: list[list[tuple[int, int]]] = []
        reader = _run(lambda: got.append(store.quota_usage(DEV, (0, 1))))
        reader.join(10)
        assert not reader.is_alive(), "a new reader waited for the held-up writer"
        assert got == [[(0, 0), (0, 0)]]
        assert writer.is_alive()  # still waiting: the read did not need it
        blocker.execute("ROLLBACK")
        writer.join(30)
        assert not writer.is_alive()
        assert store.quota_usage(DEV, (0, 1)) == [(3, 300), (0, 0)]
    finally:
        blocker.close()
        store.close()


class _SlowStore:
    """Quota counts whose read of one device waits until ``release`` is set."""

    def __init__(self, slow: bytes) -> None:
        self.slow = slow
        self.reading = threading.Event()
        self.release = threading.Event()

    def add_quota_usage(
        self, window: int, usage: Sequence[tuple[bytes, int, int]], keep_from: int
    ) -> None:
        """Counts are not kept."""

    def quota_usage(self, device_id: bytes, windows: Sequence[int]) -> list[tuple[int, int]]:
        if device_id == self.slow:
            self.reading.set()
            assert self.release.wait(30)
        return [(0, 0) for _ in windows]


def test_a_slow_quota_read_of_one_device_does_not_hold_up_the_others() -> None:
    """While one device's stored count is being read (off the event loop, in a pool
    thread), the check and charge of a device whose count is fresh (the event loop's
    path: no store read) answer at once."""
    store = _SlowStore(slow=b"s" * 32)
    quota = DeviceQuota(ServerLimits(quota_claims_per_minute=5), store)
    try:
        quota.admit(DEV, 10)  # its count read and fresh for QUOTA_SYNC_S
        assert not quota.reads_store(DEV)
        slow = _run(lambda: quota.admit(store.slow, 10))
        assert store.reading.wait(10)

        def fresh_device() -> None:
            quota.admit(DEV, 10)
            quota.settle(DEV, 10, logged=True)

        fast = _run(fresh_device)
        fast.join(10)
        assert not fast.is_alive(), "a fresh device's check waited for another's store read"
        store.release.set()
        slow.join(10)
        assert not slow.is_alive()
    finally:
        store.release.set()
        quota.close()
