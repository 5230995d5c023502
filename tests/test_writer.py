"""The group-commit writer on its own (a real SQLite store and log key, no service):
batches, duplicates inside one batch, per-item refusals, and all-or-nothing commits.

Batches are made deterministic with a gated clock: the writer reads the clock once per
batch inside its transaction, so holding the gate keeps the writer busy with one batch
while the test queues the next one."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from provenance.core import merkle
from provenance.core.claims import Device, SignedClaim
from provenance.core.errors import (
    LogError,
    LogIntegrityError,
    SequenceError,
    SignatureError,
    StorageError,
    StoreNotAnsweringError,
)
from provenance.core.keys import DeviceKey
from provenance.log.checkpoint import NoteVerifier, generate_log_key, load_log_signer
from provenance.log.receipt import verify_receipt
from provenance.server.writer import SWEEP_S, Appended, GroupCommitWriter, PendingClaim
from provenance.store import Store, open_store
from provenance.store import sqlite as sqlite_store
from provenance.wire import convert as wire
from tests.conftest import HOLD_SQLITE_WRITE_LOCK
from tests.inproc import T0, make_claim, sign


@dataclass
class GatedClock:
    """Blocks the writer's first clock read of each batch until ``release``."""

    gate: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)

    def __call__(self) -> datetime:
        self.entered.set()
        assert self.gate.wait(10), "the test never released the writer"
        return T0


@dataclass
class Rig:
    store: Store
    writer: GroupCommitWriter
    verifier: NoteVerifier
    clock: GatedClock
    commits: list[tuple[int, list[int]]]
    pool: ThreadPoolExecutor

    def enroll(self) -> DeviceKey:
        key = DeviceKey.generate()
        self.store.enroll(None, Device(key.key_id, key.public_key, T0), T0)
        return key

    def pending(self, signed: SignedClaim) -> PendingClaim:
        """The claim as the service hands it over: its signature to check under the key of
        the device it names (the writer checks it, as it does for the service)."""
        known = self.store.find_device(signed.key_id)
        return PendingClaim(
            signed,
            wire.decode_claim(signed.claim_bytes),
            verify_under=known.public_key if known is not None else None,
        )

    def submit_async(self, signed: SignedClaim) -> Future[Appended]:
        return self.pool.submit(self.writer.submit, self.pending(signed), 10.0)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    store = open_store(tmp_path / "log.db")
    signer = generate_log_key(tmp_path / "log.key", "test.example/log")
    commits: list[tuple[int, list[int]]] = []

    def on_commit(size: int, note: str, appended: list[tuple[int, PendingClaim]]) -> None:
        commits.append((size, [i for i, _ in appended]))

    clock = GatedClock()
    writer = GroupCommitWriter(store, signer, clock, on_commit)
    pool = ThreadPoolExecutor(8)
    yield Rig(store, writer, NoteVerifier.from_vkey(signer.verifier_key()), clock, commits, pool)
    clock.gate.set()
    writer.close()
    pool.shutdown()
    store.close()


def _batch(rig: Rig, claims: list[SignedClaim]) -> list[Future[Appended]]:
    """Submit ``claims`` so that they land in one batch: a first claim holds the writer
    at the gate, the others queue behind it, then the gate opens."""
    key = rig.enroll()
    blocker = rig.submit_async(sign(key, make_claim(key, 1)))
    assert rig.clock.entered.wait(10)
    # queued in this order (a copy of an envelope held joins it: it is not queued again)
    futs: list[Future[Appended]] = [rig.writer.enqueue(rig.pending(c)) for c in claims]
    rig.clock.gate.set()
    blocker.result(10)
    return futs


def test_a_replay_inside_one_batch_shares_the_first_receipt(rig: Rig) -> None:
    key = rig.enroll()
    a = sign(key, make_claim(key, 1))
    b = sign(key, make_claim(key, 2, prev_claim_hash=a.claim_hash))
    futs = _batch(rig, [a, b, a, a])
    got = [f.result(10) for f in futs]
    assert [g.duplicate for g in got] == [False, False, True, True]
    assert got[2].receipt == got[0].receipt == got[3].receipt
    assert rig.commits == [(1, [0]), (3, [1, 2])]  # one commit for the whole second batch
    assert rig.store.tree_size() == 3
    for signed, res in zip([a, b], got, strict=False):
        verify_receipt(res.receipt, signed, rig.verifier)


def test_a_bad_item_fails_alone_and_the_rest_of_its_batch_commits(rig: Rig) -> None:
    key = rig.enroll()
    a = sign(key, make_claim(key, 5))
    stale = sign(key, make_claim(key, 3))  # behind a in the same batch
    c = sign(key, make_claim(key, 6, prev_claim_hash=a.claim_hash))
    futs = _batch(rig, [a, stale, c])
    assert not futs[0].result(10).duplicate
    with pytest.raises(SequenceError):
        futs[1].result(10)
    assert futs[2].result(10).receipt.leaf_index == 2
    rec = rig.store.leaf_by_claim_hash(c.claim_hash)
    assert rec is not None and rec.chain_linked  # 6 follows 5 even with 3 refused between
    first = rig.store.leaf_by_claim_hash(a.claim_hash)
    assert first is not None and not first.chain_linked  # 5 after nothing: a gap


def test_a_forged_claim_in_a_batch_fails_alone_and_never_reaches_the_store(rig: Rig) -> None:
    """The writer checks each claim's signature under its device's key before the batch's
    transaction: a forgery (signed by another key) gets SignatureError with the message
    the service always gave, its batch-mates are logged."""
    key, thief = rig.enroll(), DeviceKey.generate()
    good = sign(key, make_claim(key, 1))
    forged = dataclasses.replace(sign(thief, make_claim(key, 2)), key_id=key.key_id)
    after = sign(key, make_claim(key, 3, prev_claim_hash=good.claim_hash))
    futs = _batch(rig, [good, forged, after])
    assert futs[0].result(10).receipt.leaf_index == 1  # leaf 0: the blocker
    with pytest.raises(SignatureError, match="signature does not verify under device"):
        futs[1].result(10)
    assert futs[2].result(10).receipt.leaf_index == 2
    assert rig.store.leaf_by_claim_hash(forged.claim_hash) is None
    assert rig.store.tree_size() == 3


def test_an_unknown_device_in_a_batch_fails_alone(rig: Rig) -> None:
    stranger = DeviceKey.generate()  # the service checks this first; the writer re-checks
    key = rig.enroll()
    futs = _batch(rig, [sign(stranger, make_claim(stranger, 1)), sign(key, make_claim(key, 1))])
    with pytest.raises(LogError, match="vanished"):
        futs[0].result(10)
    assert not futs[1].result(10).duplicate


def test_an_edited_database_fails_the_whole_batch_and_changes_nothing(
    rig: Rig, tmp_path: Path
) -> None:
    key = rig.enroll()
    rig.clock.gate.set()
    first = rig.writer.submit(rig.pending(sign(key, make_claim(key, 1))))
    with sqlite3.connect(tmp_path / "log.db") as c:
        c.execute("DELETE FROM checkpoints")
    before = rig.store.tree_size()
    claims = [sign(key, make_claim(key, s)) for s in (2, 3)]
    for c2 in claims:
        with pytest.raises(LogIntegrityError, match="refusing to append"):
            rig.writer.submit(rig.pending(c2))
    assert rig.store.tree_size() == before == first.receipt.leaf_index + 1
    assert rig.commits == [(1, [0])]


def test_close_finishes_what_is_queued(rig: Rig) -> None:
    key = rig.enroll()
    claims = [sign(key, make_claim(key, s)) for s in range(1, 6)]
    futs = _batch(rig, claims)
    rig.writer.close()
    assert [f.result(10).receipt.leaf_index for f in futs] == [1, 2, 3, 4, 5]


def test_a_submission_the_log_has_not_confirmed_in_time_is_a_storage_error(rig: Rig) -> None:
    key = rig.enroll()
    signed = sign(key, make_claim(key, 1))
    with pytest.raises(StorageError, match="submit it again"):
        rig.writer.submit(rig.pending(signed), timeout=0.05)  # the writer waits at the gate
    rig.clock.gate.set()
    again = rig.writer.submit(rig.pending(signed), timeout=10)
    assert again.duplicate and again.receipt.leaf_index == 0  # recorded once, after all


def test_an_asyncio_submission_not_confirmed_in_time_is_a_storage_error(rig: Rig) -> None:
    key = rig.enroll()
    signed = sign(key, make_claim(key, 1))

    async def run() -> Appended:
        with pytest.raises(StorageError, match="within 0.05 s"):  # waits at the gate
            await rig.writer.submit_async(rig.pending(signed), timeout=0.05)
        rig.clock.gate.set()
        return await rig.writer.submit_async(rig.pending(signed), timeout=10)

    again = asyncio.run(run())
    assert again.duplicate and again.receipt.leaf_index == 0  # recorded once, after all


def test_a_short_asyncio_timeout_fires_while_a_long_one_waits(rig: Rig) -> None:
    """The waits of a loop share one timer: a submission with a short timeout queued
    behind one with a long timeout still fails at its own deadline (well before the
    long one's, and before the shared timer's periodic sweep)."""
    key = rig.enroll()
    first, second = (sign(key, make_claim(key, s)) for s in (1, 2))

    async def run() -> list[Appended]:
        long_wait = asyncio.ensure_future(rig.writer.submit_async(rig.pending(first), 30))
        await asyncio.sleep(0)
        with pytest.raises(StorageError, match="within 0.05 s"):  # the writer waits at the gate
            await asyncio.wait_for(rig.writer.submit_async(rig.pending(second), 0.05), 0.8)
        assert not long_wait.done()
        rig.clock.gate.set()
        return [await long_wait, await rig.writer.submit_async(rig.pending(second), 30)]

    got = asyncio.run(run())
    assert [g.receipt.leaf_index for g in got] == [0, 1]


def test_settled_asyncio_waits_are_not_kept(rig: Rig) -> None:
    """The timer of a loop's waits drops the settled ones, and the loop's entry once none
    is left: a busy server holds no record of every submission of the last timeout."""
    key = rig.enroll()
    rig.clock.gate.set()

    async def run() -> tuple[int, int]:
        for s in range(1, 41):
            await rig.writer.submit_async(rig.pending(sign(key, make_claim(key, s))), 30)
        held = sum(len(w) for d in rig.writer._deadlines.values() for w in d._waits.values())
        await asyncio.sleep(SWEEP_S + 0.5)
        return held, len(rig.writer._deadlines)

    held, loops = asyncio.run(run())
    assert held <= 40 and loops == 0


def test_asyncio_callers_get_verifiable_receipts_and_a_cancelled_wait_still_logs(
    rig: Rig,
) -> None:
    key = rig.enroll()
    claims = [sign(key, make_claim(key, s)) for s in range(1, 9)]
    rig.clock.gate.set()

    async def run() -> list[Appended]:
        first = rig.writer.enqueue_async(rig.pending(claims[0]))
        first.cancel()  # the caller gives up; the submission stands
        got = await asyncio.gather(*(rig.writer.submit_async(rig.pending(c)) for c in claims[1:]))
        again = await rig.writer.submit_async(rig.pending(claims[0]), timeout=10)
        return [again, *got]

    got = asyncio.run(run())
    assert got[0].duplicate and not any(g.duplicate for g in got[1:])
    assert sorted(g.receipt.leaf_index for g in got) == list(range(8))
    for signed, res in zip(claims, got, strict=True):
        verify_receipt(res.receipt, signed, rig.verifier)


def test_a_second_writer_on_the_same_log_is_followed_not_overwritten(
    rig: Rig, tmp_path: Path
) -> None:
    """Two writers over one store (two servers over one database): each sees that the
    newest checkpoint is not its own and re-reads the tree instead of its memory."""
    rig.clock.gate.set()
    other = GroupCommitWriter(
        rig.store,
        load_log_signer(tmp_path / "log.key", "test.example/log"),
        lambda: T0,
        lambda *a: None,
    )
    try:
        key = rig.enroll()
        prev = b""
        got = []
        for s in range(1, 7):
            c = sign(key, make_claim(key, s, prev_claim_hash=prev))
            prev = c.claim_hash
            got.append(((rig.writer, other)[s % 2].submit(rig.pending(c)), c))
    finally:
        other.close()
    assert [g.receipt.leaf_index for g, _ in got] == list(range(6))
    for res, signed in got:
        verify_receipt(res.receipt, signed, rig.verifier)
    tree = merkle.MemoryTree()
    for _, signed in got:
        rec = rig.store.leaf_by_claim_hash(signed.claim_hash)
        assert rec is not None and rec.chain_linked
        tree.append(rec.entry)
    assert merkle.root(6, rig.store.get_nodes) == tree.root()


#: An exception the receipt step does not foresee -> what its submitter is told. No known
#: input reaches these paths (the leaves are durable, the proofs built from the batch's
#: own nodes), so `merkle.inclusion_proofs` is made to fail as a bug in it would.
RECEIPT_FAILURES = {
    "a missing node": (KeyError(17), "could not build its receipt"),
    "an unforeseen bug": (RuntimeError("dictionary changed size"), "failed to send its"),
}


@pytest.mark.parametrize("failure", RECEIPT_FAILURES)
def test_a_receipt_the_writer_cannot_give_is_said_in_words(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """The capture is recorded; its submitter is told so, that the server failed on the
    receipt and to submit again, in words: before, the message held the exception's repr
    (``(KeyError(17))``, ``(RuntimeError('dictionary changed size'))``), which the service
    sends to the client as it is."""
    error, words = RECEIPT_FAILURES[failure]

    def failing(*args: object, **kwargs: object) -> object:
        raise error

    key = rig.enroll()
    rig.clock.gate.set()
    monkeypatch.setattr(merkle, "inclusion_proofs", failing)
    with pytest.raises(LogError) as info:
        rig.writer.submit(rig.pending(sign(key, make_claim(key, 1))))
    said = str(info.value)
    assert said.startswith("the capture was recorded, but the server") and words in said, said
    assert "submit it again to get the receipt" in said, said
    assert type(error).__name__ not in said and str(error) not in said, said
    assert rig.store.tree_size() == 1  # recorded: a new submission is a replay


@contextmanager
def _sqlite_locked_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Store, GroupCommitWriter, subprocess.Popen[str]]]:
    """A writer on a new SQLite log whose write lock another process holds until its
    stdin closes (SQLite's busy timeout 1 s)."""
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 1.0)
    db = tmp_path / "log.db"
    store = open_store(db)
    signer = generate_log_key(tmp_path / "log.key", "test.example/log")
    writer = GroupCommitWriter(store, signer, lambda: T0, lambda *_: None)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SQLITE_WRITE_LOCK, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,  # pipes: the holder writes one line, 'held', read by the tests
        text=True,
    )
    try:
        yield store, writer, holder
    finally:
        if holder.poll() is None:
            holder.kill()
        writer.close()
        store.close()


def test_a_sqlite_write_lock_held_elsewhere_answers_each_batch_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the database's write lock (a backup tool's or an operator's
    ``BEGIN EXCLUSIVE``): each batch fails after SQLite's busy timeout, whole, "the log
    database did not answer in N s; nothing was logged: send it again", as a PostgreSQL
    lock held past ``--db-answer-wait``. Before, a failed batch was retried one claim at a
    time, each waiting the busy timeout again (30 s): a batch of n claims held its last
    caller (n + 1) x 30 s (measured, 3 claims: the third answered after 90.6 s), each
    answered "database is locked"; nothing was logged either way."""
    with _sqlite_locked_elsewhere(tmp_path, monkeypatch) as (store, writer, holder):
        keys = [DeviceKey.generate() for _ in range(4)]
        for key in keys:
            store.enroll(None, Device(key.key_id, key.public_key, T0), T0)
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        pending = [
            PendingClaim(s, wire.decode_claim(s.claim_bytes))
            for s in (sign(k, make_claim(k, 1)) for k in keys)
        ]
        futs = [writer.enqueue(p) for p in pending[:3]]
        errors = []
        for fut in futs:
            with pytest.raises(StorageError) as e:
                fut.result(timeout=30)  # before: the third after 4 s here (1 + 3 x 1 s)
            errors.append(e.value)
        for err in errors:
            assert isinstance(err, StoreNotAnsweringError), err
            assert "the log database did not answer in 1 s; nothing was logged" in str(err)
        assert store.tree_size() == 0
        assert holder.stdin is not None
        holder.stdin.close()  # the lock is released: the next capture is logged
        assert holder.wait(10) == 0
        assert writer.submit(pending[3], timeout=10).receipt.leaf_index == 0


def test_a_forgery_in_a_batch_the_database_did_not_answer_is_still_refused_as_forged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer checks a batch's signatures before its transaction; when the database
    then does not answer (a write lock held elsewhere, past SQLite's busy timeout or
    PostgreSQL's ``--db-answer-wait``), a claim whose signature failed is refused as the
    forgery it is, SignatureError, and only its honest batch-mates are told to send
    again. Before, the forgery too was answered "the log database did not answer ...
    send it again": its forgery-penalty token was given back though its signature had
    been checked, so while the database stalled a forger's checks cost it nothing."""
    with _sqlite_locked_elsewhere(tmp_path, monkeypatch) as (store, writer, holder):
        key, thief = DeviceKey.generate(), DeviceKey.generate()
        store.enroll(None, Device(key.key_id, key.public_key, T0), T0)
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        good = sign(key, make_claim(key, 1))
        forged = dataclasses.replace(sign(thief, make_claim(key, 2)), key_id=key.key_id)
        futs = [
            writer.enqueue(
                PendingClaim(s, wire.decode_claim(s.claim_bytes), verify_under=key.public_key)
            )
            for s in (good, forged)
        ]
        with pytest.raises(StoreNotAnsweringError):
            futs[0].result(timeout=30)
        with pytest.raises(SignatureError, match="signature does not verify under device"):
            futs[1].result(timeout=30)  # before: StoreNotAnsweringError, "send it again"
        assert store.tree_size() == 0
