"""Group commit: many concurrent submissions, one transaction and one fsync per batch.

Each submitting thread hands a `PendingClaim` to `GroupCommitWriter.submit` (or a
signed enrollment or revocation, `PendingKeyEvent`, to `submit_key_event`) and
blocks (an asyncio caller awaits `submit_async` instead: no thread waits, and a batch
wakes its event loop once). One writer thread takes
everything queued (up to ``max_batch``), appends it to the log in a single store
transaction (leaves, Merkle nodes, device state, a newly signed checkpoint; a key
event's registry row with its leaf) holding the log's append lock, and commits: the
commit returns once the store has made it durable (SQLite: the WAL fsynced,
``synchronous=FULL``; PostgreSQL: the WAL flushed, ``synchronous_commit=on``).

Only then is the batch handed to a second thread, which runs ``on_commit``, builds the
receipts (the batch's inclusion proofs in one walk, `merkle.inclusion_proofs`, from the
frontier and the batch's own nodes: no reads) and wakes the submitters, while the
writer thread already writes the next batch. The tree's size, frontier and last
checkpoint are kept in memory between batches and used while the store's newest
checkpoint is still the one this writer signed (re-read from the store otherwise, as
after another server's append). A failed commit changes nothing; an unexpected
failure of a batch is retried one claim per transaction, so one bad claim fails only
itself. A store that cannot be reached (StoreUnavailableError: a database outage) fails
no claim: the batch waits, whole, and is tried again until the store answers
(`GroupCommitWriter._append_when_reached`); one that refuses the server's login
(StoreRefusedError: a wrong password, a role gone) fails the whole batch at once, as
it would each claim alone; one that took the batch's transaction but did not answer in
its bound (StoreNotAnsweringError: a lock held on the log's tables, a database server
stopped; PostgreSQL ``prov serve --db-answer-wait``) answers the batch at once, "the log
database did not answer in N s; nothing was logged: send it again", and the next batch
tries again. A submitter is never told "accepted" before its leaf is durable.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from provenance import metrics
from provenance.core import merkle
from provenance.core.buckets import Every
from provenance.core.claims import MAX_LOG_ENTRY_BYTES, Claim, Device, Receipt, SignedClaim
from provenance.core.errors import (
    AlreadyEnrolledError,
    ClaimError,
    LogError,
    LogIntegrityError,
    ProvenanceError,
    SequenceError,
    StorageError,
    StoreNotAnsweringError,
    StoreRefusedError,
    StoreUnavailableError,
)
from provenance.core.keyhistory import KeyEvent, KeyEventKind, SignedKeyEvent
from provenance.core.registry import (
    answer_enrollment_again,
    chain_link,
    check_claim_signature,
    check_not_revoked,
    enrolled_already,
)
from provenance.core.timetext import utc_text
from provenance.log.checkpoint import Checkpoint, LogSigner, split_note
from provenance.log.receipt import build_receipt
from provenance.store import AppendTxn, NewKeyLeaf, NewLeaf, Store
from provenance.wire import convert as wire

log = logging.getLogger(__name__)

#: Seconds this server's clock may be behind the newest checkpoint's signing time (which
#: the log's entries then take, `GroupCommitWriter._log_time`) before a line says so.
CLOCK_BEHIND_WARN_S = 5.0
#: Seconds between two such lines.
CLOCK_BEHIND_EVERY_S = 600.0
#: The last time a datetime holds: the log's time once a checkpoint was signed then (a
#: clock once set there), rather than a microsecond past it, which cannot be held.
_LAST_TIME = datetime.max.replace(tzinfo=UTC)

_F = TypeVar("_F", Future[Any], asyncio.Future[Any])


@dataclass(frozen=True)
class PendingClaim:
    """A submission waiting for the log: its shape checked, and its signature too unless
    ``verify_under`` holds the device's public key (raw 32 bytes), under which the writer
    checks it before the claim's transaction, giving the GIL away meanwhile (off the
    event loop, which serves the other calls in the mean time); a claim whose signature
    does not verify is refused with SignatureError and never reaches the store.
    ``on_checked``: called once, from the writer's thread, when the signature verified
    under ``verify_under`` (before the claim is written: the store may be down for long).
    """

    signed_claim: SignedClaim
    claim: Claim
    verify_under: bytes | None = None
    on_checked: Callable[[], None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Appended:
    """The outcome for one submission: its receipt and whether it was already logged."""

    receipt: Receipt
    duplicate: bool


@dataclass(frozen=True)
class PendingKeyEvent:
    """A signed enrollment or revocation waiting for the log, with the registry change it
    makes in the same transaction: enroll (spending ``token_hash``; None when a
    certificate authorised it) with ``label`` and ``certificate_pem``, or revoke.
    ``backfill``: the registry row exists already (an upgraded database); log only, and
    nothing when the log holds an event of its kind for the device already (`_logged_kinds`).
    ``as_of_now``: a revocation asked for "now" (no time given; the event carries the
    server's time of the call): a revocation standing at the commit satisfies it, even
    one a concurrent call made a moment after this event's time."""

    signed: SignedKeyEvent
    event: KeyEvent
    token_hash: bytes | None = None
    label: str = ""
    certificate_pem: str = ""
    backfill: bool = False
    as_of_now: bool = False


@dataclass(frozen=True)
class KeyAppended:
    """The outcome for one key event: the registry row after it, and its receipt; None
    when nothing was logged: a revocation of a key whose logged revocation (or one
    earlier in the same batch) takes effect at or before the asked time changes nothing
    (the earliest time counts, DESIGN.md "Devices"), so no second entry is appended and
    ``device`` is the key as it stands; likewise a backfilled event whose kind the log
    holds already for its device (``device``: the registry row)."""

    device: Device
    receipt: Receipt | None


#: A submission's future and, for an asyncio one, its event loop.
_Waiter = tuple[Future[Any] | asyncio.Future[Any], asyncio.AbstractEventLoop | None]
#: Told a submission's outcome (`GroupCommitWriter.submit_async`'s ``on_outcome``): an
#: `Appended`, the exception it failed with, or `JOINED`.
Outcome = Callable[[object], None]


@dataclass(frozen=True)
class Joined:
    """The outcome told at once to a submission that joined an identical one the writer
    holds (`GroupCommitWriter._put`): it adds nothing to what the writer holds, and its
    caller gets that one's outcome as a replay."""


JOINED = Joined()


@dataclass
class _Item:
    pending: PendingClaim | PendingKeyEvent
    future: Future[Any] | asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop | None = None  # the loop of an asyncio future
    checked: bool = False  # a claim's signature is checked (`_check_signatures`)
    refused: ProvenanceError | None = None  # ... and refused with this error
    held: bool = False  # counted in the writer's `held` until its outcome is delivered
    on_outcome: Outcome | None = None  # told the outcome, whether the caller waits or not
    # later submissions of the same envelope that joined this one (`GroupCommitWriter._put`):
    # they get its outcome, as a replay
    joined: list[_Waiter] | None = None


def _logged_kinds(txn: AppendTxn, batch: Sequence[_Item]) -> set[tuple[bytes, int]]:
    """(device id, kind) of each key event the log holds already for a device that a
    backfilled event of ``batch`` is of (one read; none without a backfill). A backfilled
    event whose pair is among them logs nothing (`ProvenanceService._log_key_history`):
    another server starting on the same database, or a start stopped part way, logged
    it. Read inside the append transaction, under the log's append lock: were only
    the service to look, before queueing, of two servers starting together the later
    commit would break the leaves' unique claim hash: that server would exit 3,
    "LOG INTEGRITY FAILURE: the log database is damaged"."""
    devices = [
        it.pending.event.device_id
        for it in batch
        if isinstance(it.pending, PendingKeyEvent) and it.pending.backfill
    ]
    return txn.key_event_kinds(devices) if devices else set()


def _check_signatures(batch: Sequence[_Item]) -> None:
    """Check the signature of each claim in ``batch`` that asks for it (``verify_under``)
    and is not checked yet, releasing the GIL during each check; a refusal is kept in the
    item (`_Item.refused`)."""
    for item in batch:
        p = item.pending
        if item.checked or not isinstance(p, PendingClaim):
            continue
        item.checked = True
        if p.verify_under is not None:
            try:
                check_claim_signature(p.signed_claim, p.verify_under, release_gil=True)
            except ProvenanceError as e:
                item.refused = e
                continue
            if p.on_checked is not None:
                try:
                    p.on_checked()
                except Exception:  # the check stands: a hook's bug must not stop the writer
                    log.exception("a submission's signature-checked hook failed")


def check_entry_size(entry: bytes, device_id: bytes) -> None:
    """Raises ClaimError, naming the device, for a log entry over `MAX_LOG_ENTRY_BYTES`:
    no C2SP tlog-tiles entry bundle could hold it, so the log's tiled copy would stop
    there for good."""
    if len(entry) > MAX_LOG_ENTRY_BYTES:
        raise ClaimError(
            f"device {device_id.hex()[:16]}…: its log entry would be {len(entry):,} bytes;"
            f" the log holds entries of at most {MAX_LOG_ENTRY_BYTES:,} (C2SP tlog-tiles"
            " entry bundles), so it is not logged (a revocation reason is at most 1,024"
            " bytes: shorten it)"
        )


def _whole(batch: Sequence[_Item], err: Exception) -> list[tuple[_Item, object]]:
    """The outcomes of ``batch`` failed whole with ``err`` (the store did not answer,
    refused the login, or the writer stopped waiting for it): each claim's own refusal
    where its signature was checked and failed (`_check_signatures`), ``err`` for the
    others. Before, a forgery checked before such a failure was answered "send it again",
    and its forgery-penalty token was given back (`provenance.server.rpc`)."""
    return [(item, item.refused or err) for item in batch]


def _unconfirmed(timeout: float) -> StorageError:
    return StorageError(
        f"the log did not confirm the submission within {timeout:.3g} s; it may still"
        " be recorded: submit it again (a replay returns its receipt)"
    )


#: Seconds the writer waits before it tries a batch again while the store cannot be
#: reached (`GroupCommitWriter._append_when_reached`): the first wait, doubled after each
#: failed try up to `RETRY_MAX_S`. Each try after the first also waits for a connection
#: itself (PostgreSQL: `provenance.store.postgres.CONNECTION_WAIT_S`, or `prov serve
#: --db-connect-wait`; the pool reconnecting meanwhile), so the batch is written about as
#: soon as the database answers again.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0
#: Seconds the first try of a batch waits for the store to be reached (`Store.append`'s
#: ``wait_s``): in an outage it fails soon and the tries again begin (the outage logged,
#: a claim past the bound refused as "waiting for its database"). Before, it waited the
#: store's whole wait (30 s) first. A pool busy this long costs one more try, not a claim.
FIRST_TRY_WAIT_S = 1.0

#: Submissions (claims, key events) the writer holds at most, queued or being written,
#: before it refuses new claims at once (`GroupCommitWriter`, ``max_held``). During a
#: database outage nothing is written and nothing fails (the batch waits, whole), and a
#: device whose call ended retries: without a bound the queue grew until the database
#: answered. A claim's log entry is at most 64 KiB, typically 1-2 KiB; with the objects
#: around it a held claim costs a few KiB, so 20,000 hold tens of MiB (1.3 GiB at worst).
#: A burst of 8,000 SubmitCapture calls at once (bench/bench_burst.py) stays below it.
MAX_HELD = 20_000

#: How often, in seconds, `_Deadlines` drops the settled waits it holds.
SWEEP_S = 1.0


class _Deadlines:
    """The waits of one event loop's submissions that have a timeout: each future the
    writer has not settled ``timeout`` seconds after it was queued fails as unconfirmed
    (a done one is left alone: the submission stays queued and may still be logged).

    One timer for them all, at the earliest deadline and at least every `SWEEP_S` while
    any wait (settled ones are dropped then), instead of a timer handle per submission: a
    heap push, a cancel and a heap pop on the loop for each call (about 8 µs). Used on
    its loop's thread only; ``owner`` (the writer's map of loops) forgets it when no wait
    is left."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, owner: dict[asyncio.AbstractEventLoop, _Deadlines]
    ) -> None:
        self._loop = loop
        self._owner = owner
        # per timeout, (deadline in loop.time(), future) in the order queued: deadlines rise
        self._waits: dict[float, collections.deque[tuple[float, asyncio.Future[Any]]]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, fut: asyncio.Future[Any], timeout: float) -> None:
        """Fail ``fut`` as unconfirmed unless it is done in ``timeout`` seconds."""
        now = self._loop.time()
        at = now + timeout
        waits = self._waits.get(timeout)
        if waits is None:
            waits = self._waits[timeout] = collections.deque()
        waits.append((at, fut))
        timer = self._timer
        if timer is None or at < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(min(at, now + SWEEP_S), self._sweep)

    def _sweep(self) -> None:
        now = self._loop.time()
        nearest: float | None = None
        for timeout, waits in list(self._waits.items()):
            while waits and (waits[0][1].done() or waits[0][0] <= now):
                _, fut = waits.popleft()
                if not fut.done():
                    fut.set_exception(_unconfirmed(timeout))
            if waits:
                nearest = waits[0][0] if nearest is None else min(nearest, waits[0][0])
            else:
                del self._waits[timeout]
        if nearest is None:
            self._timer = None
            self._owner.pop(self._loop, None)
        else:
            self._timer = self._loop.call_at(min(nearest, now + SWEEP_S), self._sweep)


def _settle(outcomes: Sequence[tuple[Future[Any] | asyncio.Future[Any], object]]) -> None:
    """Complete each future with its outcome (an exception or a result); on an event
    loop's thread for asyncio futures. A future already done (its caller gave up waiting:
    cancelled, or failed as unconfirmed) is left alone: the outcome stands in the log all
    the same."""
    for fut, res in outcomes:
        if fut.done():
            continue
        if isinstance(res, BaseException):
            fut.set_exception(res)
        else:
            fut.set_result(res)


def _as_replay(res: object) -> object:
    """The outcome for a submission that joined an identical one queued before it: the
    same receipt, as a replay."""
    return Appended(res.receipt, True) if isinstance(res, Appended) else res


@dataclass(frozen=True)
class _New:
    """A leaf appended by the batch whose receipt is still to build: claim (``device``
    None) or key event (the registry row after it)."""

    index: int
    entry: bytes
    device: Device | None = None


@dataclass
class _Done:
    """A durable batch waiting for its receipts: per item an outcome, a `_New` or the
    position of an earlier item it duplicates; ``nodes`` holds the frontier of
    ``[0, start)`` and every node the batch made."""

    batch: list[_Item]
    results: list[Appended | KeyAppended | Exception | _New | int]
    appended: list[tuple[int, PendingClaim]]
    start: int
    size: int
    note: str
    now: datetime
    nodes: dict[merkle.NodeKey, bytes]


class GroupCommitWriter:
    """The single writer of the log (see module docstring).

    ``on_commit`` is called after each durable commit, in commit order and before the
    batch's submitters are woken, with (new tree size, signed checkpoint note, appended
    leaves) so in-memory indexes can follow. It runs on the acknowledging thread; an
    exception it raises is logged and the receipts are still delivered (the leaves are
    durable). ``in_force``, called in the append transaction with the registry rows of a
    batch's devices, returns each as in force (with the revocations the log holds), or
    the error that refuses its claims; None: the rows as stored.
    """

    def __init__(
        self,
        store: Store,
        signer: LogSigner,
        clock: Callable[[], datetime],
        on_commit: Callable[[int, str, list[tuple[int, PendingClaim]]], None],
        max_batch: int = 512,
        in_force: Callable[[AppendTxn, dict[bytes, Device]], Mapping[bytes, Device | Exception]]
        | None = None,
        max_held: int = MAX_HELD,
    ) -> None:
        self._store = store
        self._in_force = in_force
        self._signer = signer
        self._clock = clock
        self._clock_gate = Every(CLOCK_BEHIND_EVERY_S)
        self._on_commit = on_commit
        self._max_batch = max_batch
        # a SimpleQueue (C, no Condition): a put costs each submission about 0.1 µs
        # on the event loop, against several µs for a queue.Queue
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[_Done | None] = queue.SimpleQueue()
        self._stopping = False
        self._closing = threading.Event()  # close() was called: stop waiting for the store
        # the store's error once it could not be reached after close(), and the answer
        # to what is still queued then, not tried (each try waits for a connection)
        self._gone: StoreUnavailableError | None = None
        self._gone_answer: StoreUnavailableError | None = None
        # submissions answered with ``_gone``, not logged (`close` says how many)
        self._not_logged = 0
        # the pending waits with a timeout, per event loop (`submit_async`)
        self._deadlines: dict[asyncio.AbstractEventLoop, _Deadlines] = {}
        # (size, checkpoint note, frontier) after the last commit of this writer
        self._tree: tuple[int, str, merkle.CompactRange] | None = None
        # what the writer holds (`_put`, `_resolve`): claims by envelope, so that the same
        # envelope submitted again joins the one held, and how many submissions in all
        self._max_held = max_held
        self._held_lock = threading.Lock()
        self._held: dict[SignedClaim, _Item] = {}
        self._held_count = 0
        # monotonic time since which the store cannot be reached, None while it answers
        self._unreachable_since: float | None = None
        # monotonic time since which the store's appends go unanswered (each batch given
        # up, StoreNotAnsweringError), None once one is written
        self._not_answering_since: float | None = None
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._acker = threading.Thread(target=self._ack, name="log-acks", daemon=True)
        self._thread.start()
        self._acker.start()

    def submit(self, pending: PendingClaim, timeout: float = 30.0) -> Appended:
        """Queue ``pending`` and wait until it is durable; raises the submission's error,
        or StorageError when the log has not confirmed it within ``timeout`` seconds (it
        may still be logged: a resubmission returns its receipt)."""
        return cast(Appended, self._wait(pending, timeout))

    def submit_key_event(self, pending: PendingKeyEvent, timeout: float = 30.0) -> KeyAppended:
        """Queue a key event; returns once its registry change and its leaf are durable.
        Raises the registry's error (EnrollmentError, UnknownDeviceError), or StorageError
        as `submit` does."""
        return cast(KeyAppended, self._wait(pending, timeout))

    def submit_key_events(
        self, pending: Sequence[PendingKeyEvent], timeout: float = 300.0
    ) -> list[KeyAppended]:
        """Queue several key events at once (they share commits) and wait for them all;
        raises the first one's error."""
        futs: list[Future[Any]] = [self._put(p, Future(), None) for p in pending]
        try:
            return [cast(KeyAppended, f.result(timeout=timeout)) for f in futs]
        except TimeoutError as e:
            raise StorageError(
                f"the log did not confirm the key history within {timeout:g} s"
            ) from e

    def _wait(self, pending: PendingClaim | PendingKeyEvent, timeout: float) -> object:
        fut = self.enqueue(pending)
        try:
            return fut.result(timeout=timeout)
        except TimeoutError as e:
            raise _unconfirmed(timeout) from e

    def enqueue(self, pending: PendingClaim | PendingKeyEvent) -> Future[Any]:
        """Queue ``pending``; the future completes (from the writer's threads) once it is
        durable, or with its error. For callers that wait their own way; `submit` waits
        on it."""
        return self._put(pending, Future(), None)

    def enqueue_async(
        self, pending: PendingClaim | PendingKeyEvent, on_outcome: Outcome | None = None
    ) -> asyncio.Future[Any]:
        """`enqueue` from a running event loop: an asyncio future of that loop, completed
        on it (one wake-up of the loop per batch, not one per submission). Cancelling it
        does not withdraw the submission. ``on_outcome``: as `submit_async`'s."""
        loop = asyncio.get_running_loop()
        return self._put(pending, loop.create_future(), loop, on_outcome)

    @property
    def stalled(self) -> bool:
        """Whether the log's last append failed for want of the database: it could not be
        reached, or did not answer in its bound (cleared by the next append written). A
        server's readiness (`provenance.server.rpc`) reports not serving meanwhile."""
        return self._unreachable_since is not None or self._not_answering_since is not None

    def ready(self) -> bool:
        """Whether the log can take captures now: not `stalled`; or, when its last appends
        were not answered in their bound (StoreNotAnsweringError), an empty append
        transaction (the append lock taken, nothing written) is answered now, which ends
        the stall (so a server its load balancer took out of service for it comes back
        without a capture). Blocks up to the store's bounds: call it off the event loop.
        While the store cannot be reached the writer's own tries decide. A store of this
        server alone (SQLite, not ``shared``) is ready while it can be reached: a write lock
        another process holds there is met by each batch (a probe would wait SQLite's busy
        timeout holding the writer's lock), and no other server could take its captures."""
        if self._unreachable_since is not None:
            return False
        if self._not_answering_since is None or not self._store.shared:
            return True
        try:
            with self._store.append(FIRST_TRY_WAIT_S) as txn:
                txn.tree_size()
        except StorageError:
            return False
        self._answered_again()
        return True

    def _answered_again(self) -> None:
        """The database answers appends again after `_not_answered`: one line, once."""
        since, self._not_answering_since = self._not_answering_since, None
        if since is not None:
            log.warning(
                "log append: the database answers again, %.1f s after it first did not",
                time.monotonic() - since,
            )

    @property
    def held(self) -> int:
        """Submissions the writer holds now: queued, being written, or written and not
        yet answered (a submission joined by copies of it counts once)."""
        return self._held_count

    def _put(
        self,
        pending: PendingClaim | PendingKeyEvent,
        fut: _F,
        loop: asyncio.AbstractEventLoop | None,
        on_outcome: Outcome | None = None,
    ) -> _F:
        """Queue ``pending`` with ``fut`` (of ``loop``, for an asyncio future), or join
        the claim with the same envelope held already, whether its caller still waits or
        gave up: ``fut`` gets its outcome as a replay (``duplicate``), as a copy queued
        behind it did. Before, a cancelled call left its claim
        queued (by design) and the device's retry queued a copy, so during a database
        outage the queue grew with every retry until the database answered. Raises
        StorageError (StoreUnavailableError while the store cannot be reached) for a new
        claim when ``max_held`` submissions are held: nothing is queued. Key events are
        counted but never refused here (an admin's or an enrolling device's, rare)."""
        claim = pending.signed_claim if isinstance(pending, PendingClaim) else None
        with self._held_lock:
            first = None if claim is None else self._held.get(claim)
            if first is not None:  # whether its caller waits still or gave up
                if first.joined is None:
                    first.joined = []
                first.joined.append((fut, loop))
            else:
                if claim is not None and self._held_count >= self._max_held:
                    raise self._full()
                item = _Item(pending, fut, loop, held=True, on_outcome=on_outcome)
                if claim is not None:
                    self._held[claim] = item
                self._held_count += 1
        if first is not None:
            if on_outcome is not None:  # it holds nothing more: told at once
                on_outcome(JOINED)
            return fut
        self._queue.put(item)
        return fut

    def _full(self) -> StorageError:
        """The refusal of a new claim while ``max_held`` submissions are held."""
        n = self._held_count
        if self._unreachable_since is not None:
            return StoreUnavailableError(
                f"the log is waiting for its database ({time.monotonic() - self._unreachable_since:.0f} s"
                f" so far) and already holds {n:,} submissions, the most it keeps; nothing"
                " was logged: submit the capture again later"
            )
        return StorageError(
            f"the log already holds {n:,} submissions not yet written, the most it keeps;"
            " nothing was logged: submit the capture again in a moment"
        )

    def _resolve(self, outcomes: Sequence[tuple[_Item, object]]) -> None:
        """Deliver ``outcomes`` from the writer's threads: thread futures at once, asyncio
        futures with one wake-up of each event loop for all of its items; each item's
        joined copies get its outcome as a replay. The items leave what the writer holds
        (a later copy of their envelope is queued anew: a replay the writer answers)."""
        loops: dict[
            asyncio.AbstractEventLoop, list[tuple[Future[Any] | asyncio.Future[Any], object]]
        ] = {}
        now: list[tuple[Future[Any] | asyncio.Future[Any], object]] = []
        told: list[tuple[Outcome, object]] = []
        with self._held_lock:
            waits: list[tuple[_Waiter, object]] = []
            for item, res in outcomes:
                if item.held:
                    item.held = False
                    self._held_count -= 1
                    p = item.pending
                    if isinstance(p, PendingClaim) and self._held.get(p.signed_claim) is item:
                        del self._held[p.signed_claim]
                waits.append(((item.future, item.loop), res))
                if item.on_outcome is not None:
                    told.append((item.on_outcome, res))
                    item.on_outcome = None
                if item.joined:
                    again = _as_replay(res)
                    waits.extend((w, again) for w in item.joined)
                    item.joined = None
        for hook, res in told:  # before the callers wake: a device's next call sees it
            try:
                hook(res)
            except Exception:  # the outcome stands: a hook's bug must not stop the writer
                log.exception("a submission's outcome hook failed")
        for (fut, loop), res in waits:
            if loop is None:
                now.append((fut, res))
            else:
                loops.setdefault(loop, []).append((fut, res))
        _settle(now)
        for loop, part in loops.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, part)

    async def submit_async(
        self,
        pending: PendingClaim,
        timeout: float | None = None,
        on_outcome: Outcome | None = None,
    ) -> Appended:
        """`submit` for an asyncio caller: waits on the loop, holding no thread. Raises as
        `submit`; with ``timeout`` None (the caller's
        deadline bounds the wait: an RPC's cancellation) nothing is kept for it. The
        timeouts of a loop's waits share one timer (`_Deadlines`): neither
        `asyncio.wait_for` (a task, a waiter and callbacks per call) nor a timer handle
        per call. ``on_outcome`` is called once with the outcome the writer settles on
        (from its threads, before the caller wakes), whether or not the caller still
        waits for it (its timeout passed, it was cancelled); at once, here, with the
        refusal when the writer takes no more, or with `JOINED` when the claim joins an
        identical one it holds (which adds nothing to what it holds): a device's quota
        room is held until then (`provenance.server.rpc.CapturesServicer`)."""
        try:
            fut = self.enqueue_async(pending, on_outcome)
        except BaseException as e:
            if on_outcome is not None:
                on_outcome(e)
            raise
        return await self._outcome(fut, timeout)

    async def join_async(
        self, signed: SignedClaim, timeout: float | None = None
    ) -> Appended | None:
        """The outcome, as a replay, of the claim with the envelope ``signed`` that the
        writer holds, joined as `submit_async` joins it (waited for as there); None at
        once when it holds none. For a device over its quota retrying a capture the
        writer holds (during an outage): it adds nothing to what the writer holds."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        with self._held_lock:
            first = self._held.get(signed)
            if first is None:
                return None
            if first.joined is None:
                first.joined = []
            first.joined.append((fut, loop))
        return await self._outcome(fut, timeout)

    async def _outcome(self, fut: asyncio.Future[Any], timeout: float | None) -> Appended:
        """Await ``fut``, failing it as unconfirmed after ``timeout`` seconds (None: the
        caller's own deadline bounds the wait)."""
        if timeout is not None:
            loop = fut.get_loop()
            deadlines = self._deadlines.get(loop)
            if deadlines is None:
                deadlines = self._deadlines[loop] = _Deadlines(loop, self._deadlines)
            deadlines.add(fut, timeout)
        return cast(Appended, await fut)

    def stop_waiting(self) -> None:
        """Wait no more for a store that cannot be reached (a server stopping, before its
        calls' grace): what waits for it fails with the store's error, as after `close`,
        and the writer goes on with what is queued."""
        self._closing.set()

    def close(self) -> None:
        """Finish what is queued, then stop the writer and acknowledging threads. While the
        store cannot be reached, what waits for it is not tried again: it fails with the
        store's error (StoreUnavailableError)."""
        self._closing.set()
        self._queue.put(None)
        self._thread.join()
        self._acker.join()
        n, self._not_logged = self._not_logged, 0
        if n:
            log.warning(
                "log writer stopped: %d submission%s held for the log %s not logged, as the"
                " database could not be reached (%s); each caller was answered UNAVAILABLE,"
                " or had gone, and may send it again",
                n,
                "" if n == 1 else "s",
                "was" if n == 1 else "were",
                self._gone,
            )

    def _run(self) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                self._take(batch)
                t0 = time.perf_counter()
                self._commit(batch)
                metrics.COMMIT_SECONDS.observe(time.perf_counter() - t0)
                metrics.COMMIT_BATCH.observe(len(batch))
                if self._stopping:
                    return
        finally:
            self._done.put(None)

    def _ack(self) -> None:
        """The acknowledging thread: durable batches in commit order (`_finish`)."""
        while (done := self._done.get()) is not None:
            try:
                self._finish(done)
            except Exception:  # a bug must not leave later submitters waiting
                log.exception("acknowledging leaves [%d, %d) failed", done.start, done.size)
                err = LogError(
                    "the capture was recorded, but the server failed to send its receipt"
                    " (an internal error; the server's log has the details): submit it"
                    " again to get the receipt"
                )
                self._resolve([(item, err) for item in done.batch])

    def _finish(self, done: _Done) -> None:
        """``on_commit``, then the receipts of a durable batch, then wake its submitters."""
        if done.size > done.start:
            try:
                self._on_commit(done.size, done.note, done.appended)
            except Exception:
                log.exception("the after-commit hook failed; the batch is durable")
        try:
            nodes = done.nodes
            proofs = merkle.inclusion_proofs(
                done.start, done.size, done.size, lambda keys: [nodes[k] for k in keys]
            )
        except (LogError, KeyError):  # a bug: the leaves are durable, a replay answers
            log.exception("receipts of leaves [%d, %d) failed", done.start, done.size)
            err = LogError(
                "the capture was recorded, but the server could not build its receipt"
                " (an internal error; the server's log has the details): submit it again"
                " to get the receipt"
            )
            proofs = []
            done.results = [
                err if isinstance(r, _New) or isinstance(r, int) else r for r in done.results
            ]
        final: list[Appended | KeyAppended | Exception] = []
        for r in done.results:
            if isinstance(r, int):  # a replay inside the batch: the first one's receipt
                first = final[r]
                final.append(
                    Appended(first.receipt, True) if isinstance(first, Appended) else first
                )
            elif isinstance(r, _New):
                rec = Receipt(
                    r.index, done.now, done.note, tuple(proofs[r.index - done.start]), r.entry
                )
                final.append(
                    Appended(rec, False) if r.device is None else KeyAppended(r.device, rec)
                )
            else:
                final.append(r)
        self._resolve(list(zip(done.batch, final, strict=True)))

    def _take(self, batch: list[_Item]) -> None:
        """Add what is queued to ``batch``, up to max_batch; a stop request ends it."""
        while len(batch) < self._max_batch and not self._stopping:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                return
            if nxt is None:
                self._stopping = True
            else:
                batch.append(nxt)

    def _commit(self, batch: list[_Item]) -> None:
        """Append ``batch`` and hand it to the acknowledging thread, or answer it: with
        its error, or, once the writer closes while the store cannot be reached, with
        that (not tried again; counted in what `close` says was not logged)."""
        if self._gone is None:
            try:
                done = self._append_when_reached(batch)
            except StoreNotAnsweringError as e:
                self._not_answered(batch, e)
                if self._closing.is_set():  # stopping: what is queued is not tried after it
                    self._gone = self._gone_answer = StoreNotAnsweringError(
                        f"the log database did not answer in {e.waited_s:.0f} s and the"
                        " server is stopping; nothing was logged: send it again",
                        e.waited_s,
                    )
                return
            except StoreUnavailableError as e:  # the writer is closing: no more tries
                self._gone = e
                then = (
                    "the log stopped waiting for it: the submission was not logged, send it again"
                )
                self._gone_answer = StoreUnavailableError(
                    f"{e}; {then}", public=f"{e.public}; {then}"
                )
            except Exception as e:  # a broken database must not kill the writer thread
                self._failed(batch, e)
                return
            else:
                self._done.put(done)
                return
        # closing, the store unreachable: not tried again
        self._not_logged += len(batch)
        self._resolve(_whole(batch, self._gone_answer or self._gone))

    def _not_answered(self, batch: list[_Item], e: StoreNotAnsweringError) -> None:
        """Answer ``batch``, whose transaction the database took but did not answer in its
        bound (rolled back; unless it was waiting for its COMMIT's answer, when it may be
        logged): each submitter is told to send it again. Counted in
        ``prov_log_appends_unanswered``; a line when this begins, one when an append is
        written again. Before, the writer waited as long as the lock was held (or the
        database stopped), every submission of the server with it, and the callers saw
        their own deadline pass ("cannot reach the server")."""
        metrics.APPENDS_UNANSWERED.inc(len(batch))
        if self._not_answering_since is None:
            self._not_answering_since = time.monotonic()
            log.warning(
                "log append: %s; the batch of %d submissions is answered UNAVAILABLE (send"
                " again), and the next batch tries again",
                e,
                len(batch),
            )
        if e.committing:
            err = StoreNotAnsweringError(
                f"the log database did not confirm the write in {e.waited_s:.0f} s; it may"
                " be logged: send it again (if it was, its receipt is returned)",
                e.waited_s,
                committing=True,
            )
        else:
            err = StoreNotAnsweringError(
                f"the log database did not answer in {e.waited_s:.0f} s; nothing was logged:"
                " send it again",
                e.waited_s,
            )
        self._resolve(_whole(batch, err))

    def _failed(self, batch: list[_Item], e: Exception) -> None:
        """Answer ``batch``, whose append raised ``e`` (not an outage): a refused login
        fails it whole, another error claim by claim."""
        if isinstance(e, StoreRefusedError):  # no claim's fault: all fail, none retried
            self._resolve(_whole(batch, e))
            return
        if len(batch) > 1:
            # One bad claim must not fail the others: nothing was committed, so
            # commit each alone; only the ones that fail again get the error.
            log.warning(
                "log append of a batch of %d failed (%s); retrying one by one", len(batch), e
            )
            for item in batch:
                self._commit([item])
            return
        if isinstance(e, ProvenanceError):
            self._resolve([(batch[0], e)])
            return
        log.exception("log append failed")
        err = LogError(
            f"the log could not record the submission: {e}",
            public="the log could not record the submission; the server logged why",
        )
        self._resolve([(item, err) for item in batch])

    def _append_when_reached(self, batch: list[_Item]) -> _Done:
        """`_append` ``batch``; while the store cannot be reached (StoreUnavailableError)
        the whole batch, with what queued meanwhile (up to max_batch), is tried again,
        `RETRY_FIRST_S` apart doubling up to `RETRY_MAX_S`, until the store answers. Before,
        the failure was retried one claim per transaction, each waiting for the store alone
        (up to 30 s) and failing alone: an outage over the wait refused the claims one by
        one, each costing the queue behind it the whole wait. The first try waits
        `FIRST_TRY_WAIT_S` at most for the store, the others its own. A submitter whose own wait
        ran out meanwhile was told its claim may still be recorded: it is. One line when
        the store first fails, one when it answers again. Raises StoreUnavailableError
        once `close` was called (then `_commit` answers what is still queued with it,
        untried)."""
        delay = RETRY_FIRST_S
        since: float | None = None
        tries = 0
        while True:
            try:
                done = self._append(batch, FIRST_TRY_WAIT_S if tries == 0 else None)
            except StoreNotAnsweringError:
                self._unreachable_since = None
                raise
            except StoreUnavailableError as e:
                if self._closing.is_set():
                    raise
                tries += 1
                if since is None:
                    since = self._unreachable_since = time.monotonic()
                    log.warning(
                        "log append: %s; the %d submissions wait and are tried again, whole,"
                        " until it answers",
                        e,
                        len(batch),
                    )
                self._closing.wait(delay)
                delay = min(2 * delay, RETRY_MAX_S)
                continue
            self._unreachable_since = None
            self._answered_again()
            if since is not None:  # a WARNING, as the failure: both in a log kept at WARNING
                log.warning(
                    "log append: the database answers again; %d submissions that waited"
                    " %.1f s (%d tries) are written",
                    len(batch),
                    time.monotonic() - since,
                    tries,
                )
            return done

    @staticmethod
    def _apply(txn: AppendTxn, p: PendingKeyEvent) -> Device:
        """The registry change of a key event, inside the append transaction."""
        ev = p.event
        if p.backfill:
            found = txn.find_devices([ev.device_id]).get(ev.device_id)
            if found is None:
                raise LogError("device vanished from the registry")
            return found
        if ev.kind is KeyEventKind.ENROLLMENT:
            device = Device(ev.device_id, ev.public_key, ev.effective_at, label=p.label)
            return txn.enroll(p.token_hash, device, ev.effective_at, p.certificate_pem)
        return txn.revoke(ev.device_id, ev.effective_at, ev.reason)

    def _enrolled_again(
        self, txn: AppendTxn, p: PendingKeyEvent, enrolled: AlreadyEnrolledError
    ) -> KeyAppended | Exception:
        """The outcome of an enrollment of a key the registry (or this batch) already
        holds: for a certificate enrollment with the chain it was enrolled with, the
        device as it stands and no receipt, nothing logged (`registry.answer_enrollment_again`;
        decided here, under the append lock, so copies of one request sent at once enroll
        once and all get that answer); for a token enrollment whose token was spent
        enrolling this key, the same; else the refusal."""
        if p.event.kind is not KeyEventKind.ENROLLMENT:
            return enrolled
        row = enrolled.device
        if self._in_force is not None:
            stands = self._in_force(txn, {row.device_id: row})[row.device_id]
            if isinstance(stands, Exception):
                return stands
            # told as the log stands: a revocation deleted from the row behind the log's
            # back still counts, and is named (`registry.enrolled_already`)
            said = (
                str(enrolled)
                if enrolled.token_spent_on_it or stands.revoked_at == row.revoked_at
                else str(enrolled_already(stands, enrolled.certificate_pem))
            )
            enrolled = AlreadyEnrolledError(
                said, stands, enrolled.certificate_pem, enrolled.token_spent_on_it
            )
        try:
            device = answer_enrollment_again(
                enrolled, p.certificate_pem, by_token=p.token_hash is not None
            )
            return KeyAppended(device, None)
        except ProvenanceError as e:
            return e

    def _logged_before(self, txn: AppendTxn, p: PendingKeyEvent) -> KeyAppended | None:
        """For a revocation whose very signed event the log holds already (this writer's
        own commit tried again after its answer was lost: the connection closed between
        the database committing and the answer, `_append_when_reached`), the device as it
        stands and that entry's receipt; else None. Before, such a retry was answered as
        a revocation that changed nothing (`prov admin revoke`: "already revoked",
        exit 3), though the revocation logged was this very request. Ed25519 signatures
        are deterministic: an event signed again with the same time and reason is the
        same request."""
        ev = p.event
        if p.backfill or ev.kind is not KeyEventKind.REVOCATION:
            return None
        for idx, _, entry in txn.revocation_entries([ev.device_id]):
            try:
                logged, at = wire.decode_entry(entry)
            except ClaimError:  # a damaged entry is not this one; `prov log audit` says so
                continue
            if logged != p.signed:
                continue
            row = txn.find_devices([ev.device_id]).get(ev.device_id)
            if row is None:
                return None
            stands: Device | Exception = row
            if self._in_force is not None:
                stands = self._in_force(txn, {row.device_id: row})[row.device_id]
            device = row if isinstance(stands, Exception) else stands
            covering = txn.checkpoint_covering(idx)
            return KeyAppended(device, build_receipt(idx, entry, at, covering, txn.get_nodes))
        return None

    def _standing_revocation(
        self,
        txn: AppendTxn,
        p: PendingKeyEvent,
        revoked_here: Mapping[bytes, datetime],
        now: datetime,
    ) -> Device | None:
        """For a revocation (not a backfill): the device as it stands when the log, or an
        earlier revocation in this batch (``revoked_here``: device id -> time), already
        revokes the key at or before the asked time (for one asked ``as_of_now``: at or
        before ``now``, the commit's time), so that logging it would change nothing; else
        None. Decided here, in the append transaction that holds the log's
        append lock, so concurrent Revokes of one key log one entry whatever their
        batches. Without an ``in_force`` hook the registry row decides. A damaged logged
        revocation counts as none: the new one is logged (refusing to revoke would be
        the worse failure)."""
        ev = p.event
        if p.backfill or ev.kind is not KeyEventKind.REVOCATION:
            return None
        row = txn.find_devices([ev.device_id]).get(ev.device_id)
        if row is None:
            return None  # `_apply` refuses it: UnknownDeviceError
        logged = row.revoked_at
        if self._in_force is not None:
            # the log's revocation alone: a row without one, merged with the log's
            bare = replace(row, revoked_at=None, revocation_reason="")
            got = self._in_force(txn, {ev.device_id: bare})[ev.device_id]
            logged = None if isinstance(got, Exception) else got.revoked_at
        times = [t for t in (logged, revoked_here.get(ev.device_id)) if t is not None]
        if not times or min(times) > (now if p.as_of_now else ev.effective_at):
            return None
        if self._in_force is None:
            return row
        stands = self._in_force(txn, {ev.device_id: row})[ev.device_id]
        return row if isinstance(stands, Exception) else stands

    def log_time(self) -> datetime:
        """The log's time now, for a revocation asked for "now" (one store read):
        `_log_time` of the newest checkpoint, so that the revocation covers no entry
        logged before it was asked for, and its own commit (and every later one) is
        timed at or after it. Before, a server 10 minutes slow revoked from 10 minutes
        back: every capture the others logged meanwhile read as REVOKED_KEY. When the
        store cannot be read, this clock (the revocation then waits for the store in the
        writer's queue, as before)."""
        now = self._clock()
        try:
            latest = self._store.latest_checkpoint()
        except StorageError:
            return now
        return self._log_time(latest, now)

    def _log_time(self, latest: tuple[int, str] | None, now: datetime) -> datetime:
        """The time of the commit: this server's clock, or, when the newest checkpoint
        (``latest``) was signed later than that, a microsecond past its time, so the
        log's time never goes back in log order, whichever server of the log signs, and
        whatever a clock set back says (and moves on while this clock is behind: a
        revocation "now" through a slow server, timed a microsecond past the newest
        checkpoint, then covers every claim logged after it). Before, each server
        stamped its own clock: a server 10 minutes slow took claims of a key that one
        with the right time had revoked, logged after the revocation yet timed before
        it, so `prov verify` (which judges by time) called them signed originals. A signing time this clock is behind by more than
        `CLOCK_BEHIND_WARN_S` is logged, once every `CLOCK_BEHIND_EVERY_S`. ``now``: this
        server's clock."""
        if latest is None:
            return now
        try:
            signed = Checkpoint.parse_body(split_note(latest[1])[0]).timestamp
        except LogError:  # a damaged note: `prov log audit` says so; not the writer's to judge
            return now
        if signed is None or signed <= now:
            return now
        behind = (signed - now).total_seconds()
        if behind > CLOCK_BEHIND_WARN_S and self._clock_gate.due("behind"):
            log.warning(
                "this server's clock is %.1f s behind the time the log's newest checkpoint"
                " was signed (%s, by another server of the log, or before this clock was"
                " set back): the log's entries are timed just past that checkpoint's time"
                " meanwhile, so the log's time never goes back; check the servers' clock"
                " synchronisation (NTP)",
                behind,
                utc_text(signed),
            )
        if signed >= _LAST_TIME:  # a microsecond past it is no time: the time stays there
            return _LAST_TIME
        return signed + timedelta(microseconds=1)

    def _frontier(
        self, txn: AppendTxn, start: int, latest: tuple[int, str] | None
    ) -> merkle.CompactRange:
        """The frontier of the tree's first ``start`` leaves: from memory while the newest
        checkpoint is the one this writer signed last, else read (one batched read)."""
        mem = self._tree
        if mem is not None and latest == (mem[0], mem[1]):
            return merkle.CompactRange.from_hashes(start, mem[2].hashes)  # a copy
        keys = merkle.subtree_decomposition(0, start)
        return merkle.CompactRange.from_hashes(start, txn.get_nodes(keys))

    def _append(self, batch: list[_Item], wait_s: float | None = None) -> _Done:
        """Append ``batch`` in one transaction, waiting ``wait_s`` at most for the store
        (None: its own wait; `Store.append`)."""
        store = self._store
        _check_signatures(batch)  # before the transaction: it holds the append lock
        with store.append(wait_s) as txn:
            # what queued while another server held the append lock joins this batch
            self._take(batch)
            _check_signatures(batch)
            start = txn.tree_size()
            latest = txn.latest_checkpoint()
            if (latest[0] if latest else 0) != start:
                raise LogIntegrityError(
                    f"the database holds {start} leaves but the last signed checkpoint has"
                    f" {latest[0] if latest else 0}: it was modified behind the log's back;"
                    " refusing to append"
                )
            now = self._log_time(latest, self._clock())
            # an int marks a duplicate inside the batch: the index of its first occurrence
            results: list[Appended | KeyAppended | Exception | _New | int | None]
            results = [None] * len(batch)
            new: list[tuple[int, NewLeaf, PendingClaim]] = []
            seen: dict[bytes, int] = {}
            state: dict[bytes, tuple[int, bytes]] = {}
            # key events first: their registry rows change before the claims are checked
            # (a claim meeting its key's revocation in one batch is refused); their leaves
            # follow the batch's claims
            keyed: list[tuple[int, NewKeyLeaf, Device]] = []
            revoked_here: dict[bytes, datetime] = {}  # this batch's revocations
            logged_kinds = _logged_kinds(txn, batch)
            for i, item in enumerate(batch):
                if isinstance(item.pending, PendingKeyEvent):
                    entry = wire.encode_key_event_entry(item.pending.signed, now)
                    try:
                        check_entry_size(entry, item.pending.event.device_id)
                        again = self._logged_before(txn, item.pending)
                        if again is not None:
                            results[i] = again
                            continue
                        standing = self._standing_revocation(txn, item.pending, revoked_here, now)
                        if standing is not None:
                            results[i] = KeyAppended(standing, None)
                            continue
                        dev_row = self._apply(txn, item.pending)
                    except AlreadyEnrolledError as e:  # a copy of one logged (maybe here)
                        results[i] = self._enrolled_again(txn, item.pending, e)
                        continue
                    except ProvenanceError as e:
                        results[i] = e
                        continue
                    ev = item.pending.event
                    if item.pending.backfill and (ev.device_id, int(ev.kind)) in logged_kinds:
                        results[i] = KeyAppended(dev_row, None)
                        continue
                    if ev.kind is KeyEventKind.REVOCATION:
                        revoked_here[ev.device_id] = min(
                            ev.effective_at, revoked_here.get(ev.device_id, ev.effective_at)
                        )
                    keyed.append(
                        (
                            i,
                            NewKeyLeaf(
                                merkle.leaf_hash(entry),
                                item.pending.signed,
                                item.pending.event,
                                now,
                                entry,
                            ),
                            dev_row,
                        )
                    )
            claims: list[tuple[int, PendingClaim, bytes]] = []
            for i, it in enumerate(batch):
                if it.refused is not None:
                    results[i] = it.refused
                elif isinstance(it.pending, PendingClaim):
                    claims.append((i, it.pending, it.pending.signed_claim.claim_hash))
            # one read each for the whole batch (a round trip matters on a database server)
            logged = txn.leaves_by_claim_hash([ch for _, _, ch in claims])
            rows = txn.find_devices([p.claim.device_id for _, p, _ in claims])
            devices = self._in_force(txn, rows) if self._in_force and rows else rows
            integrated_at = wire.ts_to_pb(now)
            for i, p, ch in claims:
                old = logged.get(ch)
                if old is not None:
                    covering = txn.checkpoint_covering(old.index)
                    rec = build_receipt(
                        old.index, old.entry, old.integrated_at, covering, txn.get_nodes
                    )
                    results[i] = Appended(rec, True)
                    continue
                if ch in seen:
                    results[i] = seen[ch]
                    continue
                dev = p.claim.device_id
                entry = wire.encode_log_entry(p.signed_claim, now, integrated_at)
                try:  # check_claim_shape's bound, made sure on every path
                    check_entry_size(entry, dev)
                except ClaimError as e:
                    results[i] = e
                    continue
                if dev not in state:
                    d = devices.get(dev)
                    if d is None:
                        results[i] = LogError("device vanished from the registry")
                        continue
                    if isinstance(d, Exception):
                        results[i] = d
                        continue
                    try:
                        check_not_revoked(d, now)
                    except ProvenanceError as e:
                        results[i] = e
                        continue
                    state[dev] = (d.last_sequence, d.last_claim_hash)
                last_seq, last_hash = state[dev]
                try:
                    linked = chain_link(p.claim, last_seq, last_hash)
                except SequenceError as e:
                    results[i] = e
                    continue
                state[dev] = (p.claim.sequence, ch)
                leaf = NewLeaf(
                    leaf_hash=merkle.leaf_hash(entry),
                    signed_claim=p.signed_claim,
                    device_id=dev,
                    sequence=p.claim.sequence,
                    file_sha256=p.claim.hard_binding.sha256,
                    integrated_at=now,
                    chain_linked=linked,
                    entry=entry,
                    soft_bindings=p.claim.soft_bindings,
                )
                seen[ch] = i
                new.append((i, leaf, p))
            frontier = self._frontier(txn, start, latest)
            nodes = dict(zip(merkle.subtree_decomposition(0, start), frontier.hashes, strict=True))
            if not new and not keyed:
                note = latest[1] if latest else ""
                size = start
            else:
                size = start + len(new) + len(keyed)
                made: list[merkle.NewNode] = []
                for _, lf, _ in new:
                    made += frontier.append(lf.leaf_hash)
                for _, kl, _ in keyed:
                    made += frontier.append(kl.leaf_hash)
                txn.put_nodes(made)
                nodes.update(((level, idx), h) for level, idx, h in made)
                note = self._signer.sign(Checkpoint(self._signer.name, size, frontier.root(), now))
                txn.put_checkpoint(size, note, now)
                for k, (i, lf, _) in enumerate(new):
                    results[i] = _New(start + k, lf.entry)
                txn.insert_leaves(start, [lf for _, lf, _ in new])
                key_start = start + len(new)
                for k, (i, kl, dev_row) in enumerate(keyed):
                    results[i] = _New(key_start + k, kl.entry, dev_row)
                if keyed:
                    txn.insert_key_events(key_start, [kl for _, kl, _ in keyed])
        # committed: durable
        self._tree = (size, note, frontier)
        outcomes = [r for r in results if r is not None]
        assert len(outcomes) == len(batch)
        appended = [(start + k, p) for k, (_, _, p) in enumerate(new)]
        return _Done(batch, outcomes, appended, start, size, note, now, nodes)
