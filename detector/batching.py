"""A micro-batching queue: concurrent requests share one forward pass.

Callers `submit` arrays of patches from any thread and get a Future. One worker thread
takes the oldest request, keeps collecting until the queued patches reach `max_batch` or
`max_wait_s` has passed since it took the first, runs them as one batch (several if one
request alone is larger), and resolves each Future with its slice of the output. On a GPU
this turns many small requests into few large kernels; on a CPU (max_wait_s = 0) it runs
whatever is already queued, through the same code.

A caller that stops waiting (its deadline passed) cancels its Futures: a request not yet
taken into a batch is then dropped, never run; `running_for` says how long the batch in
hand has been running, so callers can tell a stuck worker from a busy one.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from provenance import metrics
from provenance.core.errors import DetectorError

_Job = tuple[np.ndarray, Future[np.ndarray]]


class BatchQueue:
    """Collects (N_i, ...) arrays into batches for run, which maps (N, ...) to (N,).

    run: called only on the worker thread with the concatenation of up to max_batch
    rows of one shape (more only when a single request is larger; run must chunk that
    itself); requests whose rows differ in shape are run separately.
    Exceptions from run fail every Future of that batch.
    """

    def __init__(
        self, run: Callable[[np.ndarray], np.ndarray], max_batch: int, max_wait_s: float
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queue: queue.Queue[_Job | None] = queue.Queue()  # None: stop
        self._closed = False
        self._lock = threading.Lock()
        self._running_since: float | None = None  # time.monotonic() of the batch in hand
        self._worker = threading.Thread(target=self._loop, name="detector-batch", daemon=True)
        self._worker.start()

    def submit(self, rows: np.ndarray) -> Future[np.ndarray]:
        """Queue rows (N, ...) for scoring; the Future yields (N,) outputs.

        Raises DetectorError if the queue is closed.
        """
        fut: Future[np.ndarray] = Future()
        with self._lock:
            if self._closed:
                raise DetectorError("the detector has been closed")
            self._queue.put((rows, fut))
            metrics.DETECTOR_QUEUE.set(self._queue.qsize())
        return fut

    def running_for(self) -> float:
        """Seconds the batch in hand has been running (0 when the worker is idle or
        collecting a batch)."""
        since = self._running_since
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    def close(self) -> None:
        """Finish queued work, then stop the worker thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._worker.join()

    def _loop(self) -> None:
        pending: list[_Job] = []
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            pending = [item]
            rows = len(pending[0][0])
            deadline = time.monotonic() + self._max_wait_s
            while rows < self._max_batch:
                timeout = deadline - time.monotonic()
                try:
                    item = (
                        self._queue.get(timeout=timeout)
                        if timeout > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                pending.append(item)
                rows += len(item[0])
            metrics.DETECTOR_QUEUE.set(self._queue.qsize())
            self._run_batch(pending)

    def _run_batch(self, pending: list[tuple[np.ndarray, Future[np.ndarray]]]) -> None:
        live = [(rows, fut) for rows, fut in pending if fut.set_running_or_notify_cancel()]
        groups: dict[tuple[int, ...], list[tuple[np.ndarray, Future[np.ndarray]]]] = {}
        for rows, fut in live:
            groups.setdefault(rows.shape[1:], []).append((rows, fut))
        for group in groups.values():  # one run per row shape (crops of small images differ)
            batch = np.concatenate([rows for rows, _ in group])
            metrics.DETECTOR_BATCH.observe(len(batch))  # cancelled requests not counted
            self._running_since = time.monotonic()
            try:
                out = self._run(batch)
            except Exception as e:  # the batch's callers get the failure, the worker lives on
                for _, fut in group:
                    fut.set_exception(e)
                continue
            finally:
                self._running_since = None
            start = 0
            for rows, fut in group:
                fut.set_result(out[start : start + len(rows)])
                start += len(rows)
