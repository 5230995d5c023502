"""Group commit: many concurrent submissions, one transaction and one fsync per batch.

Each submitting thread hands a `PendingClaim` to `GroupCommitWriter.submit` (or a
signed enrollment or revocation, `PendingKeyEvent`, to `submit_key_event`) and
blocks. One writer thread takes everything queued (up to ``max_batch``), appends it
to the log in a single store transaction (leaves, Merkle nodes, device state, a
newly signed checkpoint; a key event's registry row with its leaf) holding the log's
append lock, commits, and
only then wakes the submitters with their receipts. A failed commit changes nothing; an
unexpected failure of a batch is retried one claim per transaction, so one bad claim
fails only itself. A submitter is never told "accepted" before its leaf is durable.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from provenance import metrics
from provenance.core import merkle
from provenance.core.claims import Claim, Device, Receipt, SignedClaim
from provenance.core.errors import (
    LogError,
    LogIntegrityError,
    ProvenanceError,
    SequenceError,
    StorageError,
)
from provenance.core.keyhistory import KeyEvent, KeyEventKind, SignedKeyEvent
from provenance.core.registry import chain_link, check_not_revoked
from provenance.log.checkpoint import Checkpoint, LogSigner
from provenance.log.receipt import build_receipt
from provenance.store import AppendTxn, NewKeyLeaf, NewLeaf, Store
from provenance.wire import convert as wire

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingClaim:
    """A verified submission waiting for the log."""

    signed_claim: SignedClaim
    claim: Claim


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
    ``backfill``: the registry row exists already (an upgraded database); log only."""

    signed: SignedKeyEvent
    event: KeyEvent
    token_hash: bytes | None = None
    label: str = ""
    certificate_pem: str = ""
    backfill: bool = False


@dataclass(frozen=True)
class KeyAppended:
    """The outcome for one key event: the registry row after it, and its receipt."""

    device: Device
    receipt: Receipt


@dataclass
class _Item:
    pending: PendingClaim | PendingKeyEvent
    future: Future[Any]


class _NodeCache:
    """A node reader that reads each Merkle node once per batch: the batch's proofs share
    most of their nodes, and those it appended are known without a read."""

    def __init__(self, read: Callable[[list[tuple[int, int]]], list[bytes]]) -> None:
        self.read = read
        self.known: dict[tuple[int, int], bytes] = {}

    def __call__(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
        known = self.known
        try:  # after the first proof of a batch, nearly always all known
            return [known[k] for k in keys]
        except KeyError:
            missing = [k for k in dict.fromkeys(keys) if k not in known]
            known.update(zip(missing, self.read(missing), strict=True))
            return [known[k] for k in keys]


class GroupCommitWriter:
    """The single writer of the log (see module docstring).

    ``on_commit`` is called after each durable commit with (new tree size, signed
    checkpoint note, appended leaves) so in-memory indexes can follow. ``in_force``,
    called in the append transaction with the registry rows of a batch's devices,
    returns each as in force (with the revocations the log holds), or the error that
    refuses its claims; None: the rows as stored.
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
    ) -> None:
        self._store = store
        self._in_force = in_force
        self._signer = signer
        self._clock = clock
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

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
        futs: list[Future[Any]] = []
        for p in pending:
            futs.append(Future())
            self._queue.put(_Item(p, futs[-1]))
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
            raise StorageError(
                f"the log did not confirm the submission within {timeout:g} s; it may still"
                " be recorded: submit it again (a replay returns its receipt)"
            ) from e

    def enqueue(self, pending: PendingClaim | PendingKeyEvent) -> Future[Any]:
        """Queue ``pending``; the future completes (from the writer thread) once it is
        durable, or with its error. For callers that wait their own way
        (`asyncio.wrap_future` in the asyncio server); `submit` waits on it."""
        fut: Future[Any] = Future()
        self._queue.put(_Item(pending, fut))
        return fut

    def close(self) -> None:
        """Finish what is queued, then stop the writer thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
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
        try:
            results, appended, size, note, keyed = self._append(batch)
        except Exception as e:  # a broken database must not kill the writer thread
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
                batch[0].future.set_exception(e)
                return
            log.exception("log append failed")
            err = LogError(f"the log could not record the submission: {e}")
            for item in batch:
                item.future.set_exception(err)
            return
        if appended or keyed:
            self._on_commit(size, note, appended)
        for item, res in zip(batch, results, strict=True):
            if isinstance(res, Exception):
                item.future.set_exception(res)
            else:
                item.future.set_result(res)

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

    def _append(
        self, batch: list[_Item]
    ) -> tuple[list[Any], list[tuple[int, PendingClaim]], int, str, int]:
        store = self._store
        with store.append() as txn:
            # what queued while another server held the append lock joins this batch
            self._take(batch)
            start = txn.tree_size()
            latest = txn.latest_checkpoint()
            if (latest[0] if latest else 0) != start:
                raise LogIntegrityError(
                    f"the database holds {start} leaves but the last signed checkpoint has"
                    f" {latest[0] if latest else 0}: it was modified behind the log's back;"
                    " refusing to append"
                )
            now = self._clock()
            # an int marks a duplicate inside the batch: the index of its first occurrence
            results: list[Appended | KeyAppended | Exception | int | None] = [None] * len(batch)
            new: list[tuple[int, NewLeaf, PendingClaim]] = []
            seen: dict[bytes, int] = {}
            state: dict[bytes, tuple[int, bytes]] = {}
            # key events first: their registry rows change before the claims are checked
            # (a claim meeting its key's revocation in one batch is refused); their leaves
            # follow the batch's claims
            keyed: list[tuple[int, NewKeyLeaf, Device]] = []
            for i, item in enumerate(batch):
                if isinstance(item.pending, PendingKeyEvent):
                    try:
                        dev_row = self._apply(txn, item.pending)
                    except ProvenanceError as e:
                        results[i] = e
                        continue
                    entry = wire.encode_key_event_entry(item.pending.signed, now)
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
            claims = [
                (i, it.pending)
                for i, it in enumerate(batch)
                if isinstance(it.pending, PendingClaim)
            ]
            # one read each for the whole batch (a round trip matters on a database server)
            logged = txn.leaves_by_claim_hash([p.signed_claim.claim_hash for _, p in claims])
            rows = txn.find_devices([p.claim.device_id for _, p in claims])
            devices = self._in_force(txn, rows) if self._in_force and rows else rows
            for i, p in claims:
                ch = p.signed_claim.claim_hash
                old = logged.get(ch)
                if old is not None:
                    covering = txn.checkpoint_covering(old.index)
                    rec = build_receipt(
                        old.index, old.entry, old.integrated_at, covering, txn.get_nodes
                    )
                    results[i] = Appended(rec, True)
                    continue
                if ch in seen:
                    seen_at = seen[ch]
                    results[i] = seen_at
                    continue
                dev = p.claim.device_id
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
                entry = wire.encode_log_entry(p.signed_claim, now)
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
            if not new and not keyed:
                note = latest[1] if latest else ""
                size = start
            else:
                size = start + len(new) + len(keyed)
                hashes = [lf.leaf_hash for _, lf, _ in new] + [kl.leaf_hash for _, kl, _ in keyed]

                get_nodes = _NodeCache(txn.get_nodes)
                nodes = merkle.append_batch(start, hashes, get_nodes)
                txn.put_nodes(nodes)
                get_nodes.known.update(((level, idx), h) for level, idx, h in nodes)
                root = merkle.root(size, get_nodes)
                note = self._signer.sign(Checkpoint(self._signer.name, size, root, now))
                txn.put_checkpoint(size, note, now)

                def receipt(index: int, entry: bytes) -> Receipt:
                    proof = merkle.inclusion_proof(index, size, get_nodes)
                    return Receipt(index, now, note, tuple(proof), entry)

                for k, (i, lf, _) in enumerate(new):
                    results[i] = Appended(receipt(start + k, lf.entry), False)
                txn.insert_leaves(start, [lf for _, lf, _ in new])
                key_start = start + len(new)
                for k, (i, kl, dev_row) in enumerate(keyed):
                    results[i] = KeyAppended(dev_row, receipt(key_start + k, kl.entry))
                if keyed:
                    txn.insert_key_events(key_start, [kl for _, kl, _ in keyed])
        # duplicates inside one batch share the first one's receipt
        final: list[Any] = []
        for r in results:
            if isinstance(r, int):
                first = results[r]
                assert isinstance(first, Appended)
                final.append(Appended(first.receipt, True))
            else:
                assert r is not None
                final.append(r)
        appended = [(start + k, p) for k, (_, _, p) in enumerate(new)]
        return final, appended, size, note, len(keyed)
