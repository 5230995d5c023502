"""Group commit: many concurrent submissions, one transaction and one fsync per batch.

Each submitting thread hands a `PendingClaim` to `GroupCommitWriter.submit` and
blocks. One writer thread takes everything queued (up to ``max_batch``), appends it
to the log in a single store transaction (leaves, Merkle nodes, device state, a
newly signed checkpoint) holding the log's append lock, commits, and
only then wakes the submitters with their receipts. A failed commit changes nothing; an
unexpected failure of a batch is retried one claim per transaction, so one bad claim
fails only itself. A submitter is never told "accepted" before its leaf is durable.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime

from provenance import metrics, wire
from provenance.claims import Claim, Receipt, SignedClaim
from provenance.errors import (
    LogError,
    LogIntegrityError,
    ProvenanceError,
    RevokedKeyError,
    SequenceError,
    StorageError,
)
from provenance.log import merkle
from provenance.log.checkpoint import Checkpoint, LogSigner
from provenance.receipt import build_receipt
from provenance.registry import chain_link, check_not_revoked
from provenance.store import NewLeaf, Store

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


@dataclass
class _Item:
    pending: PendingClaim
    future: Future[Appended]


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


def unconfirmed(timeout: float) -> StorageError:
    """The error for a submission the log has not confirmed within ``timeout`` seconds."""
    return StorageError(
        f"the log did not confirm the submission within {timeout:g} s; it may still"
        " be recorded: submit it again (a replay returns its receipt)"
    )


class GroupCommitWriter:
    """The single writer of the log (see module docstring).

    ``on_commit`` is called after each durable commit with (new tree size, signed
    checkpoint note, appended leaves) so in-memory indexes can follow.
    """

    def __init__(
        self,
        store: Store,
        signer: LogSigner,
        clock: Callable[[], datetime],
        on_commit: Callable[[int, str, list[tuple[int, PendingClaim]]], None],
        max_batch: int = 512,
    ) -> None:
        self._store = store
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
        try:
            return self.enqueue(pending).result(timeout=timeout)
        except TimeoutError as e:
            raise unconfirmed(timeout) from e

    def enqueue(self, pending: PendingClaim) -> Future[Appended]:
        """Queue ``pending``; the future completes (from the writer thread) once it is
        durable, or with the submission's error. For callers that wait their own way
        (`asyncio.wrap_future` in the asyncio server); `submit` waits on it."""
        fut: Future[Appended] = Future()
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
            results, appended, size, note = self._append(batch)
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
        if appended:
            self._on_commit(size, note, appended)
        for item, res in zip(batch, results, strict=True):
            if isinstance(res, Exception):
                item.future.set_exception(res)
            else:
                item.future.set_result(res)

    def _append(
        self, batch: list[_Item]
    ) -> tuple[list[Appended | Exception], list[tuple[int, PendingClaim]], int, str]:
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
            results: list[Appended | Exception | int | None] = [None] * len(batch)
            new: list[tuple[int, NewLeaf, PendingClaim]] = []
            seen: dict[bytes, int] = {}
            state: dict[bytes, tuple[int, bytes]] = {}
            # one read each for the whole batch (a round trip matters on a database server)
            logged = txn.leaves_by_claim_hash([it.pending.signed_claim.claim_hash for it in batch])
            devices = txn.find_devices([it.pending.claim.device_id for it in batch])
            for i, item in enumerate(batch):
                p = item.pending
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
                    state[dev] = (d.last_sequence, d.last_claim_hash)
                last_seq, last_hash = state[dev]
                try:
                    check_not_revoked(devices[dev], now)
                    linked = chain_link(p.claim, last_seq, last_hash)
                except (RevokedKeyError, SequenceError) as e:
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
            if not new:
                note = latest[1] if latest else ""
                size = start
            else:
                size = start + len(new)

                get_nodes = _NodeCache(txn.get_nodes)
                nodes = merkle.append_batch(start, [lf.leaf_hash for _, lf, _ in new], get_nodes)
                txn.put_nodes(nodes)
                get_nodes.known.update(((level, idx), h) for level, idx, h in nodes)
                root = merkle.root(size, get_nodes)
                note = self._signer.sign(Checkpoint(self._signer.name, size, root, now))
                txn.put_checkpoint(size, note, now)
                for k, (i, lf, _) in enumerate(new):
                    rec = Receipt(
                        leaf_index=start + k,
                        integrated_at=now,
                        checkpoint=note,
                        inclusion_proof=tuple(merkle.inclusion_proof(start + k, size, get_nodes)),
                        log_entry=lf.entry,
                    )
                    results[i] = Appended(rec, False)
                txn.insert_leaves(start, [lf for _, lf, _ in new])
        # duplicates inside one batch share the first one's receipt
        final: list[Appended | Exception] = []
        for r in results:
            if isinstance(r, int):
                first = results[r]
                assert isinstance(first, Appended)
                final.append(Appended(first.receipt, True))
            else:
                assert r is not None
                final.append(r)
        return final, [(start + k, p) for k, (_, _, p) in enumerate(new)], size, note
