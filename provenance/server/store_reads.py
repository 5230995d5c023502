"""Whether the log database answers reads now, and the newest signed checkpoint the server
holds: what the health check reports (`provenance.server.rpc`) and what `GetCheckpoint`
serves while the database cannot answer.

The database is probed off the callers' paths: one small read (the newest checkpoint) in
a thread of its own, at most one at a time and at most once every `PROBE_EVERY_S`
seconds whoever asks, so health checks never flood the database. A probe not answered in
`PROBE_WAIT_S` seconds counts as a database that does not answer (it goes on alone: a
stopped PostgreSQL holds it until the store's own bound, ``--db-answer-wait`` + 2 s).

The newest checkpoint held is the newest of those this server signed (each commit) and
those it read from the database (each probe and each `GetCheckpoint`). With several
servers over one PostgreSQL it can be older than the newest one another server signed
since: it is still signed by the log's key and consistent with every later one (the log
is append-only), so a caller can check it and prove consistency from it later; it is only
not the newest. So it is served only while the database cannot answer; otherwise
`GetCheckpoint` reads the database, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from provenance.core.errors import ProvenanceError, StorageError, StoreUnavailableError

log = logging.getLogger(__name__)

#: Seconds a known state of the database stands before the next probe may be sent.
PROBE_EVERY_S = 1.0
#: Seconds a caller of `StoreReads.answers` waits at most for a probe's answer; a probe
#: out for longer counts as a database that does not answer.
PROBE_WAIT_S = 2.0

#: Threads that read the newest checkpoint for `StoreReads.latest` (its callers wait on
#: them, so that a read the database leaves unanswered does not hold the caller).
READERS = 4
#: Seconds between two looks, while such a read waits, at whether the database is known
#: not to answer.
LOOK_EVERY_S = 0.1

#: What a caller of a read refused by `StoreReads.refuse_unanswered` is told.
PUBLIC_NOT_ANSWERING = "the log database is not answering now; try again"

#: (tree size, signed note) of a checkpoint, as `Store.latest_checkpoint` gives it.
Latest = tuple[int, str] | None


def _head(note: str) -> str:
    """A checkpoint note's first three lines: origin, tree size, root hash (base64); not
    its time line nor its signatures, which a re-signing changes."""
    return "\n".join(note.split("\n", 3)[:3])


def _differs(held: tuple[int, str], latest: tuple[int, str]) -> bool:
    """Whether ``latest`` is of another history than ``held``: another origin, or the
    same tree size with another root."""
    mine, theirs = _head(held[1]).split("\n"), _head(latest[1]).split("\n")
    return mine[0] != theirs[0] or (held[0] == latest[0] and mine != theirs)


class StoreReads:
    """See module docstring. ``read_latest``: the store's `latest_checkpoint` (raises
    StorageError while the database cannot answer)."""

    def __init__(self, read_latest: Callable[[], Latest]) -> None:
        self._read_latest = read_latest
        self._lock = threading.Lock()
        self._newest: Latest = None
        # heads (`_head`) of checkpoints of another history, already logged
        self._told: set[str] = set()
        # the last probe's or read's word, and when it came (monotonic; -inf: none yet)
        self._answers = True
        self._learned = -float("inf")
        # monotonic time since which the database does not answer (for the log's lines)
        self._down_since: float | None = None
        # the last read's error while the database does not answer (None: a probe's bug)
        self._error: StorageError | None = None
        self._probe: Future[None] | None = None
        self._probe_sent = 0.0
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-probe")
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="checkpoint-read")

    @property
    def newest(self) -> Latest:
        """The newest checkpoint this server holds (None: none yet)."""
        return self._newest

    def saw(self, latest: Latest) -> None:
        """``latest`` was signed or read: held if it is of a larger tree than the one
        held and of the same log (origin). One of the tree size held with another root
        hash, or of another origin, is of another history than the one held (the
        database restored from another backup, failed over to a replica that had not the
        last commits, another log's file): never held, and logged as an error, once for
        each such checkpoint. A re-signed one (same size and root) is no news."""
        if latest is None:
            return
        with self._lock:
            held = self._newest
            if held is not None and _differs(held, latest):
                told = _head(latest[1]) in self._told
                self._told.add(_head(latest[1]))
            elif held is None or latest[0] > held[0]:
                self._newest = latest
                return
            else:
                return
        if not told:
            log.error(
                "the log database holds a checkpoint of another history than the one this"
                " server holds: %r, against %r held (the database restored from another"
                " backup, failed over to a replica that had not the last commits, or"
                " another log's); the one held is kept for GetCheckpoint while the database"
                " does not answer; audit the database (`prov log audit`) before trusting it",
                _head(latest[1]),
                _head(held[1]),
            )

    def latest(self) -> Latest:
        """The newest checkpoint: read from the database while it answers (and held);
        the one held instead, at once, while the database is known not to answer
        (`answering`), as soon as it is known while the read waits (the read goes on
        alone, in one of `READERS` threads), or when the read fails with StorageError.
        Before, a read on a stopped PostgreSQL waited for the store's bound (12 s at the
        default ``--db-answer-wait``; 30 s for one that refuses connections, the
        connection wait) and failed. Raises the read's StorageError when none is held (a
        server that never saw one)."""
        held = self._newest
        if held is None:
            return self._read()
        if not self.answering():
            return held
        try:
            read = self._readers.submit(self._read)
        except RuntimeError:  # closed (the server stopped): read here
            return self._read()
        while True:
            try:
                return read.result(timeout=LOOK_EVERY_S)
            except FutureTimeout:
                if not self.answering():
                    read.cancel()  # still queued: never sent
                    return self._newest
            except StorageError:
                return self._newest

    def _read(self) -> Latest:
        """Read the newest checkpoint from the database, learning whether it answers."""
        try:
            latest = self._read_latest()
        except StorageError as e:
            self._learn(False, e)
            raise
        self._learn(True)
        self.saw(latest)
        return latest

    def answering(self) -> bool:
        """Whether the database answers reads, as last learned (no wait): False while a
        probe has been out longer than `PROBE_WAIT_S`. Sends a probe when the state is
        older than `PROBE_EVERY_S` and none is out."""
        with self._lock:
            now = time.monotonic()
            self._send(now)
            return self._state(now)

    def refuse_unanswered(self) -> None:
        """Raise StoreUnavailableError at once (public `PUBLIC_NOT_ANSWERING`) while the
        database is known not to answer for all reads (`answering`): a probe out longer
        than `PROBE_WAIT_S` (a stopped or stalled server), or the last read failed with
        StoreUnavailableError (refused or lost connections, no pooled connection). Not
        for another StorageError (a table renamed: a read of another table may work, and
        its own error says what it met). For the reads of the callers (GetDevice,
        GetEntries, proofs, Lookup), never the writer's: before, each waited the store's
        bound (``--db-answer-wait`` + 2 s on a stopped PostgreSQL, 30 s when it refuses
        connections) and failed. Sends a probe when one is due, so reads go through
        again within about `PROBE_EVERY_S` of the database answering."""
        with self._lock:
            now = time.monotonic()
            self._send(now)
            if self._closed or self._state(now):
                return
            out = now - self._probe_sent if self._probe is not None else 0.0
            error = self._error
            since = self._down_since
        if out >= PROBE_WAIT_S:
            why = f"its probe is unanswered after {out:.1f} s"
        elif isinstance(error, StoreUnavailableError):
            why = str(error)
        else:
            return
        raise StoreUnavailableError(
            f"the log database does not answer reads"
            f"{'' if since is None else f' for {now - since:.1f} s'} ({why}): the read was"
            " not tried",
            public=PUBLIC_NOT_ANSWERING,
        )

    def answers(self, wait_s: float = PROBE_WAIT_S) -> bool:
        """`answering`, waiting up to ``wait_s`` (and no longer than the probe's
        `PROBE_WAIT_S`) for a probe sent or out: never longer on the database."""
        with self._lock:
            now = time.monotonic()
            probe = self._send(now)
            left = min(wait_s, self._probe_sent + PROBE_WAIT_S - now)
        if probe is not None and left > 0:
            try:
                probe.result(timeout=left)
            except FutureTimeout:
                pass
        with self._lock:
            return self._state(time.monotonic())

    def close(self) -> None:
        """Send no more probes (one out ends alone when the store answers or is closed;
        its thread is not a daemon's: the interpreter joins it at exit), and learn
        nothing more (a probe failing on the closed store says nothing of the database)."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._readers.shutdown(wait=False, cancel_futures=True)

    def _state(self, now: float) -> bool:
        if self._probe is not None and now - self._probe_sent >= PROBE_WAIT_S:
            return False
        return self._answers

    def _send(self, now: float) -> Future[None] | None:
        """The probe out, or one sent now when the state is due (under ``_lock``)."""
        if self._probe is None and now - self._learned >= PROBE_EVERY_S:
            try:
                self._probe = self._pool.submit(self._run)
            except RuntimeError:  # closed: the state stands
                return None
            self._probe_sent = now
        return self._probe

    def _run(self) -> None:
        """One probe: the newest checkpoint read (and held), or the StorageError that
        says the database does not answer. Another of our errors (a damaged row) still
        means it answered: what it holds is for `prov log audit` and the reads that
        meet it to report. Anything else is a bug of ours, logged, and counted as not
        answering."""
        latest: Latest = None
        error: StorageError | None = None
        answered = False
        try:
            latest = self._read_latest()
            answered = True
        except StorageError as e:
            error = e
        except ProvenanceError:
            answered = True
        except Exception:
            log.exception("the probe of the log database failed")
        finally:
            with self._lock:
                self._probe = None
        self._learn(answered, error)
        self.saw(latest)

    def _learn(self, answers: bool, error: StorageError | None = None) -> None:
        """The database answered a read (``answers``), or failed it with ``error``: the
        state from now, and one log line at each change."""
        with self._lock:
            if self._closed:
                return
            now = time.monotonic()
            self._answers = answers
            self._learned = now
            self._error = error
            since = self._down_since
            self._down_since = None if answers else since or now
            held = self._newest
        if answers and since is not None:
            log.warning(
                "the log database answers reads again, %.1f s after it first did not",
                now - since,
            )
        elif not answers and since is None:
            log.warning(
                "the log database does not answer reads (%s): the health check says"
                " NOT_SERVING, and GetCheckpoint serves the newest checkpoint this server"
                " holds (%s) until it does",
                error if error is not None else "its probe failed",
                "none" if held is None else f"tree size {held[0]}",
            )
