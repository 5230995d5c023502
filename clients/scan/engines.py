"""Where `clients.scan.worker.process_batch` runs: in-process, a local process pool, or Ray.

Every engine maps the same function over batches of items and yields each batch's rows as
soon as it is done (completion order), keeping a bounded number of batches in flight so
that reading an archive never runs far ahead of hashing (memory stays at about
``2 x workers`` batches, plus the 2 that the last batches' cut reads ahead, at most 64 MiB
of archive entries: `clients.scan.runs.runs`' ``tail_parts``, which each engine gives as
`Engine.tail_parts`).

- `LocalEngine(workers)`: a `concurrent.futures.ProcessPoolExecutor` with ``workers``
  processes forked from a fork server (a fresh interpreter, not this process: the parent
  may hold gRPC channels, which do not survive a fork). The fork server imports the
  worker's modules and the modules the parent's main script imported (`_main_imports`)
  once, so a worker starts without the 0.8-1.5 s of imports each spawned process would
  repeat, and pays once what each worker paid on its first image and first channel
  (`clients.scan.preload`); ``workers=0`` runs batches in this process.
- `RayEngine(workers)`: Ray tasks (https://docs.ray.io/en/latest/ray-core/tasks.html).
  It joins the cluster that ``RAY_ADDRESS`` names, or one already initialised by the
  caller, or starts a local one with ``workers`` CPUs. Batches travel through Ray's object
  store; folder files are read by path, so every node must see the same paths (a shared
  file system). Ray is optional: ``pip install ray``.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import multiprocessing.forkserver
import multiprocessing.process
import multiprocessing.resource_tracker
import os
import queue
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, Protocol

from clients.interrupt import (
    extend_ctrl_c_deadline,
    handing_over,
    hold_signal,
    raises_keyboard_interrupt,
)
from clients.scan.sources import Item
from clients.scan.worker import ScanConfig, close_clients, process_batch, scan_started
from provenance.core.errors import ConfigError, WorkerError

log = logging.getLogger(__name__)

Rows = list[dict[str, Any]]


class Engine(Protocol):
    """Runs process_batch over batches; yields each batch's rows when done. ``tail_parts``:
    how many batches the scan's last items are cut into (`clients.scan.runs.runs`), twice
    the batches that run at once, so that they end together (0: not cut); or a function
    that gives it once ``map`` has started (asked when the walk ends)."""

    @property
    def tail_parts(self) -> int | Callable[[], int]: ...

    def map(self, batches: Iterable[list[Item]], config: ScanConfig) -> Iterator[Rows]: ...


def _imports_of(module: types.ModuleType) -> set[str]:
    """Names of the modules of ``module``'s global modules, classes and functions."""
    names = set()
    for value in vars(module).values():
        if isinstance(value, types.ModuleType):
            names.add(value.__name__)
        elif isinstance(value, type | types.FunctionType):
            names.add(value.__module__)
    return names


def _folder(module: types.ModuleType | None) -> str:
    file = getattr(module, "__file__", None)
    return os.path.dirname(os.path.realpath(file)) if isinstance(file, str) else ""


def _main_imports() -> list[str]:
    """Names of the modules the main script imported (`_imports_of`; ``prov``'s script:
    clients.launch, which loads clients.cli only when called), and those its sibling
    modules imported.

    Every process a fork server starts runs the main script again (as ``__mp_main__``,
    `multiprocessing.spawn.prepare`) before its first task, and the fork server never
    preloads that script itself although asked to (Python 3.11: ``ensure_running`` looks
    for a ``main_path`` key that ``spawn.get_preparation_data`` calls
    ``init_main_from_path``), so each scan worker spent 0.8-1.5 s CPU importing what the
    script imports. With these modules preloaded, running the script again only defines its
    functions. The fork server does not get the script's folder on its path either (3.11
    ignores its ``sys_path``), so the script's sibling modules cannot be preloaded: what
    they import is.
    """
    main = sys.modules.get("__main__")
    if main is None:
        return []
    names = _imports_of(main)
    folder = _folder(main)
    for name in list(names):
        module = sys.modules.get(name)
        if folder and module is not None and _folder(module) == folder:
            names |= _imports_of(module)
    return sorted(n for n in names if n in sys.modules and n not in ("__main__", "__mp_main__"))


#: What a worker imports only when it needs it, preloaded all the same (a worker that
#: meets a video imports the frame decoder, PyAV and OpenCV: about 50 ms of CPU; they came
#: into the fork server with clients.cli's imports while ``prov``'s script imported it at
#: its top); `clients.scan.preload` last: it freezes what the imports before it made.
WORKER_LAZY_IMPORTS = ["provenance.media.video.decode", "clients.scan.preload"]


def _worker_context() -> (
    multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext
):
    """The fork server context, its server preloading the worker and the main script's
    imports (see the module docstring); spawn where there is no fork server."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["__main__", "clients.scan.worker", *_main_imports(), *WORKER_LAZY_IMPORTS]
    )
    _start_fork_server()
    return ctx


#: The warning filter CPython's resource tracker is started with (``-W``): its warning
#: of the pool's semaphores that a scan ended at once left to it (`_start_fork_server`).
_TRACKER_QUIET = "ignore:resource_tracker:UserWarning"


def _start_fork_server() -> None:
    """Start the fork server (if not running) with SIGINT blocked, so that a Ctrl-C while
    it imports the preload list (1-2 s) does not print its KeyboardInterrupt traceback:
    `clients.scan.preload`, last of that list, makes it ignore SIGINT and unblocks it (in
    a ``finally``, and each worker's initializer `_exit_with_parent` again, for a preload
    that fails to import: the fork server passes over that), and
    the workers it forks inherit that: a Ctrl-C reaches the scan process alone in effect,
    which stops its workers itself (`_stop_workers`). This process blocks SIGINT in its
    main thread only while the fork server is spawned (a fork and exec, milliseconds to
    a second on a loaded machine), and holds a Ctrl-C or SIGTERM that comes then until the
    spawn is done (`_interrupt_after`), then raises it. CPython's resource tracker is
    started first: its own start unblocks SIGINT when it ends.

    Were this process to ignore SIGINT for the spawn (so that the fork server started
    ignoring it), a Ctrl-C then would be lost: the scan went on to its end
    (measured: 6 of 6 Ctrl-Cs sent at that moment; 1 of 150 sent at random moments), which
    a loop of interrupted scans that waited less than a whole scan would count as a hang. A
    blocked signal stays pending where an ignored one is dropped. Outside the main thread
    the spawn runs as is."""
    if threading.current_thread() is not threading.main_thread():
        multiprocessing.forkserver.ensure_running()
        return
    with _interrupt_after():
        # started without its "leaked semaphore objects" warning, which a scan ended at
        # once (a second Ctrl-C, `clients.interrupt`'s deadline, a kill) left under its
        # own last line: the tracker still removes them, the job the warning speaks of
        sys.warnoptions.append(_TRACKER_QUIET)
        try:
            multiprocessing.resource_tracker.ensure_running()
        finally:
            sys.warnoptions.remove(_TRACKER_QUIET)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


@contextmanager
def _interrupt_after() -> Iterator[None]:
    """Holds a Ctrl-C (SIGINT) that arrives in the block until the block ends, then raises
    it (KeyboardInterrupt). Around `ProcessPoolExecutor.submit`, which starts a worker
    when the pool has none idle: interrupted half-way, the pool did not know its worker,
    which then failed at start with a traceback (this process, exiting, had removed its
    semaphores) or waited for ever. Starting a worker waits for the fork server's imports
    the first time (1-2 s), so a Ctrl-C then takes effect that much later. A SIGTERM
    handled in Python (`clients.scan.cli`'s, which stops the scan as Ctrl-C does) is held
    the same way and then handed to that handler, also when SIGINT is ignored (a scan
    started in the background), where it cannot go by SIGINT. Outside the main thread the
    block runs as is, and SIGINT is held only when its handler raises KeyboardInterrupt
    (`clients.interrupt.raises_keyboard_interrupt`), and is then handed to it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, _frame: types.FrameType | None) -> None:
        held.append(signum)
        hold_signal(signum)  # the deadline runs; a second signal ends the scan at once

    previous = {
        signum: signal.signal(signum, hold)
        for signum, handler in (
            (signal.SIGINT, signal.getsignal(signal.SIGINT)),
            (signal.SIGTERM, signal.getsignal(signal.SIGTERM)),
        )
        if raises_keyboard_interrupt(handler) or (signum == signal.SIGTERM and callable(handler))
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if held:
        handing_over()  # the handlers below start the deadline again
    on_term = previous.get(signal.SIGTERM)
    if signal.SIGTERM in held and callable(on_term):
        on_term(signal.SIGTERM, None)  # raises, as it would have in the block
    on_int = previous.get(signal.SIGINT)
    if held and callable(on_int):
        on_int(signal.SIGINT, None)  # raises KeyboardInterrupt (after a deadline's start)
    if held:
        raise KeyboardInterrupt


def _exit_with_parent() -> None:
    """A pool worker's initializer: SIGINT ignored (the scan process stops its workers,
    `_stop_workers`; forked from the fork server a worker ignores it from its start, a
    spawned one from here), and a daemon thread ends the worker (exit 1) once the scan
    process that started it is gone. Without it, a scan killed (or interrupted while its
    pool started a worker) left its workers blocked for ever, in their call and then
    waiting for a batch, and the fork server, which lives while any of them does.
    `multiprocessing.parent_process().sentinel` is a pipe end that the scan process holds
    open: it becomes readable when that process ends.

    SIGINT is also unblocked here (after it is ignored, so one pending is dropped): the
    fork server starts with it blocked and `clients.scan.preload` unblocks it, but the
    fork server passes over an ImportError in its preload, and a preload that did not
    import left it blocked in every worker (tests/test_scan_preload_failure.py)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    parent = multiprocessing.parent_process()
    sentinel = parent.sentinel if parent is not None else None
    if sentinel is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-scan", daemon=True).start()


@contextmanager
def _worker_died() -> Iterator[None]:
    """Raise WorkerError for a pool a worker of which died (BrokenProcessPool), whether
    it shows in a batch's result or in handing the pool the next batch (``submit``: a
    worker killed between two batches gave the user a traceback)."""
    try:
        yield
    except BrokenProcessPool as e:
        raise WorkerError(
            "a scan worker process died (killed, or out of memory on a file); the rows"
            " finished so far are kept: run the same command with --resume to continue"
        ) from e


#: Seconds a stopped scan's workers get to end after SIGTERM, before SIGKILL.
STOP_GRACE_S = 5.0


class _PoolContext(multiprocessing.context.BaseContext):
    """The workers' start method (``base``: `_worker_context`'s) as a ProcessPoolExecutor's
    ``mp_context``, keeping every worker process the pool starts in ``workers``, so that a
    stopped scan can end them (`_stop_workers`). The pool makes its workers with
    ``mp_context.Process`` (what its ``mp_context`` is for: "used to launch the workers");
    its queues and locks come from BaseContext's own methods, on ``base``'s start method.
    Before, `_stop_workers` read the pool's private ``_processes``."""

    def __init__(
        self,
        base: multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext,
    ) -> None:
        self._base = base
        self.workers: list[multiprocessing.process.BaseProcess] = []

    def get_start_method(self, allow_none: bool = False) -> str:
        return self._base.get_start_method()

    def Process(  # noqa: N802  # the name a multiprocessing context gives it
        self, *args: Any, **kwargs: Any
    ) -> multiprocessing.process.BaseProcess:
        """A worker process of ``base``'s kind (not started), kept in ``workers``."""
        proc = self._base.Process(*args, **kwargs)
        self.workers.append(proc)
        return proc


def _stop_workers(
    pool: ProcessPoolExecutor,
    workers: list[multiprocessing.process.BaseProcess],
    grace: float = STOP_GRACE_S,
) -> None:
    """End a pool whose scan stops early (Ctrl-C, SIGTERM, an error): its ``workers``
    (`_PoolContext.workers`) are terminated (SIGTERM, then SIGKILL past ``grace``
    seconds), without waiting for the batches they run, and its batches not done fail or
    are cancelled; their rows were not recorded, so ``--resume`` scans those files again.
    Returns once every worker started has ended, and then the pool's own threads (they end
    as soon as its workers have: the pool finds them gone). Before, the pool's shutdown waited
    for every running batch, and for ever for a worker blocked on the pool's task-queue
    lock (one killed by the Ctrl-C while holding it); and the
    pool's manager thread could still be closing the pool as the scan process exited,
    when Python's exit hook wakes it through a pipe it was closing: 'Exception ignored ...
    OSError: [Errno 9] Bad file descriptor' under the 'interrupted' line."""
    started = [proc for proc in workers if proc.pid is not None]
    # after a Ctrl-C: the workers' grace, and then some; said, with "Ctrl-C again to stop
    # at once" (which leaves the workers to end with this process: `_exit_with_parent`)
    doing = "stopping the scan's workers" if any(p.is_alive() for p in started) else ""
    extend_ctrl_c_deadline(grace, doing)
    for proc in started:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in started:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in started:
        if proc.is_alive():
            proc.kill()
            proc.join()
    # no worker left to run a batch: the pool finds them gone, fails its batches not
    # done (BrokenProcessPool) and its threads end, which this joins
    pool.shutdown(wait=True, cancel_futures=True)


def _rows(fut: Future[Rows]) -> Rows:
    """A finished batch's rows; raises WorkerError when a worker of the pool died."""
    with _worker_died():
        return fut.result()


class LocalEngine:
    """A process pool of ``workers`` processes (0: this process)."""

    def __init__(self, workers: int) -> None:
        if workers < 0:
            raise ConfigError(f"workers must be 0 or more, got {workers}")
        self.workers = workers

    @property
    def tail_parts(self) -> int:
        """Twice the workers (`Engine`): one process (``workers=0``) needs no cut."""
        return 2 * self.workers if self.workers > 1 else 0

    def map(self, batches: Iterable[list[Item]], config: ScanConfig) -> Iterator[Rows]:
        if self.workers == 0:
            stopped = False  # by a signal: its exception may have left a gRPC lock taken
            scan_started()
            try:
                for batch in batches:
                    yield process_batch(batch, config)
            except KeyboardInterrupt:
                stopped = True
                raise
            finally:  # this process's connections end with the scan
                close_clients(wait=not stopped)
            return
        context = _PoolContext(_worker_context())
        pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_exit_with_parent)
        # each batch's future, put there when done (the pool's manager thread calls back):
        # not concurrent.futures.wait, which takes each pending future's lock in turn and,
        # interrupted by a Ctrl-C between two, left one held; the manager thread then
        # waited on it for ever to fail that batch, and `_stop_workers` for that thread
        # (a real SIGINT at that moment hung the scan)
        finished: queue.SimpleQueue[Future[Rows]] = queue.SimpleQueue()
        pending = 0  # batches handed to the pool and not yet taken from ``finished``
        completed = False
        try:
            for batch in batches:
                with _interrupt_after(), _worker_died():  # may start a worker: not cut half-way
                    pool.submit(process_batch, batch, config).add_done_callback(finished.put)
                pending += 1
                while pending >= 2 * self.workers:
                    pending -= 1
                    yield _rows(finished.get())
            while pending:
                pending -= 1
                yield _rows(finished.get())
            completed = True
        finally:
            if completed:  # every batch done: the workers end as soon as they are told
                try:
                    pool.shutdown(wait=True)
                except BaseException:  # a Ctrl-C while they end
                    _stop_workers(pool, context.workers)
                    raise
            else:
                _stop_workers(pool, context.workers)


class RayEngine:
    """Ray tasks on the cluster of RAY_ADDRESS, the caller's, or a local one of
    ``workers`` CPUs (None: all)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers
        self._cpus = 0  # the cluster's, once joined

    @property
    def tail_parts(self) -> Callable[[], int]:
        """Twice the CPUs of the cluster the tasks run on (`Engine`), known once ``map``
        has joined it: a function that gives it then (0 before: not cut). The CPUs are
        the cluster's own, ``workers`` only for a local node this engine starts. Cut for twice
        ``workers`` when given, whatever the cluster of RAY_ADDRESS held, a scan of a
        32-CPU cluster with --workers 2 would cut its last batches in 4."""
        return lambda: 2 * self._cpus

    def map(self, batches: Iterable[list[Item]], config: ScanConfig) -> Iterator[Rows]:
        try:
            import ray
        except ImportError as e:
            raise ConfigError("--engine ray needs Ray: pip install ray") from e
        started = not ray.is_initialized()
        if started:
            _start_ray(ray, self.workers)
        task = ray.remote(process_batch)
        cfg = ray.put(config)
        self._cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))  # type: ignore[no-untyped-call]  # ray leaves it unannotated
        in_flight = 2 * self._cpus
        pending: list[Any] = []
        try:
            for batch in batches:
                pending.append(task.remote(batch, cfg))
                while len(pending) >= in_flight:
                    done, pending = ray.wait(pending, num_returns=1)
                    yield ray.get(done[0])
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])
        finally:
            for ref in pending:
                ray.cancel(ref)
            if started:
                ray.shutdown()


def _start_ray(ray: Any, workers: int | None) -> None:
    """``ray.init``: a new local node of ``workers`` CPUs (None: all), or the cluster of
    RAY_ADDRESS (whose CPUs are its own: Ray refuses ``num_cpus`` there, "When
    connecting to an existing cluster, num_cpus and num_gpus must not be provided", so
    --workers is not passed on). Raises WorkerError saying what failed in words, Ray's
    own text and what to do; the exception goes to the DEBUG log."""
    address = os.environ.get("RAY_ADDRESS", "")
    try:
        if address:
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=workers or None, include_dashboard=False, log_to_driver=False)
    except Exception as e:  # Ray raises bare Exception / ConnectionError / ValueError
        log.debug("ray.init failed", exc_info=True)
        said = " ".join(str(e).split())[:300] or "no reason given"
        if address:
            raise WorkerError(
                f"--engine ray could not reach the Ray cluster at RAY_ADDRESS={address}"
                f" (Ray said: {said}); check that a head node (`ray start --head`) runs"
                " there and RAY_ADDRESS names it as HOST:PORT, unset RAY_ADDRESS for a"
                " local Ray, or scan with --engine local"
            ) from e
        raise WorkerError(
            f"--engine ray could not start a local Ray node (Ray said: {said}); on a busy"
            " host Ray's own start-up deadlines can pass: start one with `ray start"
            " --head` and set RAY_ADDRESS, or scan with --engine local"
        ) from e
