"""Appends to the in-memory store (`prov serve --db :memory:`) on a log of N leaves.

A transaction (`MemoryStore.append`) works on a copy of the state and replaces it when it
ends cleanly. Each round appends --appends leaves one transaction each (the leaf, a
Merkle node a level, a checkpoint: the group-commit writer's batch of one, a lone `prov
sign`) to this tree's store, then the same leaves to the same state in a store whose
transaction deep-copies the state (the copy before 5 December), alternately; medians of
--rounds rounds, in transactions/s. The log is made up (random hashes, unsigned claims, a
registry row no key-history entry enrolled: `prov log audit` would refuse it) and lives
only in this process, never in a file: it measures the transaction's copy, not a log.

Usage: python bench/bench_memory_append.py [--leaves 20000] [--appends 50] [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from results import Ratio, write_results  # bench/results.py, next to this script

from provenance.core.argtypes import positive_ints
from provenance.core.binding import PerceptualHash
from provenance.core.claims import Claim, Device, HardBinding, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM
from provenance.store import NewLeaf
from provenance.store.memory import MemoryStore, _MemoryAppend
from provenance.wire import convert as wire


class DeepCopyStore(MemoryStore):
    """The store as it was: each transaction deep-copies the whole state."""

    @contextmanager
    def append(self, wait_s: float | None = None) -> Iterator[_MemoryAppend]:
        with self._lock:
            work = copy.deepcopy(self._state)
            yield _MemoryAppend(work)
            self._state = work


def _leaf(device: bytes, seq: int, now: datetime) -> NewLeaf:
    """A leaf of a made-up signed claim, its sizes as a capture's."""
    claim = Claim(device, seq, now, "image/jpeg", 1, HardBinding(os.urandom(32)))
    signed = SignedClaim(PAYLOAD_TYPE_CLAIM, wire.encode_claim(claim), device, b"\x00" * 64)
    pdq = PerceptualHash("pdq", os.urandom(32), 100)
    return NewLeaf(
        os.urandom(32), signed, device, seq, os.urandom(32), now, True, os.urandom(250), (pdq,)
    )


def _append(store: MemoryStore, leaf: NewLeaf, now: datetime) -> None:
    """One transaction as the writer's batch of one: the leaf, the Merkle nodes it adds
    (one a level), a checkpoint."""
    with store.append() as txn:
        size = txn.tree_size()
        txn.insert_leaves(size, [leaf])
        txn.put_nodes(
            [(level, size >> level, os.urandom(32)) for level in range(size.bit_length())]
        )
        txn.put_checkpoint(size + 1, f"bench.local/log\n{size + 1}\n", now)


def _rate(store: MemoryStore, leaves: list[NewLeaf], now: datetime) -> float:
    """Transactions per second appending ``leaves`` one at a time."""
    start = time.perf_counter()
    for leaf in leaves:
        _append(store, leaf, now)
    return len(leaves) / (time.perf_counter() - start)


def _count(text: str) -> int:
    """A whole number from 1, in digits 0-9 (a usage error otherwise)."""
    (value,) = positive_ints(text)
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leaves", type=_count, default=20000, help="log size to append at")
    ap.add_argument("--appends", type=_count, default=50, help="appends per round")
    ap.add_argument("--rounds", type=_count, default=5, help="alternating rounds")
    args = ap.parse_args()
    now = datetime.now(UTC)
    store = MemoryStore()
    device = os.urandom(32)
    store.enroll(None, Device(device, os.urandom(32), now), now)
    with store.append() as txn:  # the log to append at: its leaves, nodes, checkpoints
        txn.insert_leaves(0, [_leaf(device, s + 1, now) for s in range(args.leaves)])
        txn.put_nodes([(0, i, os.urandom(32)) for i in range(args.leaves)])
        txn.put_nodes([(1, i, os.urandom(32)) for i in range(args.leaves // 2)])
        for size in range(100, args.leaves + 1, 100):
            txn.put_checkpoint(size, f"bench.local/log\n{size}\n", now)
    old = DeepCopyStore()
    old._state = copy.deepcopy(store._state)
    seq = args.leaves
    new_rates, old_rates = [], []
    for _ in range(args.rounds):
        batch = [_leaf(device, s, now) for s in range(seq + 1, seq + args.appends + 1)]
        seq += args.appends
        new_rates.append(_rate(store, batch, now))  # the same leaves to each: alike logs
        old_rates.append(_rate(old, batch, now))
    new, before = statistics.median(new_rates), statistics.median(old_rates)
    print(
        f"in-memory store, {args.leaves:,} leaves, transactions of one leaf, {args.rounds} rounds"
    )
    print(f"  this tree:      {new:10.1f} transactions/s (rounds {[round(r) for r in new_rates]})")
    print(
        f"  deep copy:      {before:10.1f} transactions/s (rounds {[round(r) for r in old_rates]})"
    )
    print(f"  ratio:          {new / before:10.2f}")
    write_results(
        "memory_append",
        [
            Ratio(
                "memory store append transaction",
                new,
                "deep-copy append (before)",
                before,
                "transactions/s",
            )
        ],
        note=f"{args.leaves} leaves, one leaf a transaction, medians of {args.rounds} alternated rounds",
    )


if __name__ == "__main__":
    main()
