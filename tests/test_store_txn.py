"""An append transaction is all or nothing, and unseen until it ends: on the in-memory
store (`prov serve --db :memory:`, whose transaction works on a copy of its tables) as
on SQLite. A transaction that enrolls with a token, appends a leaf and its nodes and a
checkpoint, then fails, leaves the token unspent, the device unknown and the log as it
was; while it runs, a reader in another thread sees none of it."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from provenance.core.claims import Claim, Device, HardBinding, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM
from provenance.store import NewLeaf, Store, open_store
from provenance.wire import convert as wire

NOW = datetime(2026, 12, 5, tzinfo=UTC)
TOKEN = b"t" * 32


class _Stop(Exception):
    """The failure that ends the transaction."""


def _leaf(device: bytes, seq: int) -> NewLeaf:
    claim = Claim(device, seq, NOW, "image/jpeg", 1, HardBinding(os.urandom(32)))
    signed = SignedClaim(PAYLOAD_TYPE_CLAIM, wire.encode_claim(claim), device, b"\x00" * 64)
    return NewLeaf(os.urandom(32), signed, device, seq, os.urandom(32), NOW, False, b"e", ())


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    s = open_store(":memory:" if request.param == "memory" else tmp_path / "prov.db")
    request.addfinalizer(s.close)
    return s


def test_a_failed_transaction_changes_nothing_and_a_running_one_is_unseen(store: Store) -> None:
    first = os.urandom(32)
    store.enroll(None, Device(first, os.urandom(32), NOW), NOW)
    with store.append() as txn:
        txn.insert_leaves(0, [_leaf(first, 1)])
        txn.put_nodes([(0, 0, b"n" * 32)])
        txn.put_checkpoint(1, "note 1", NOW)
    store.add_token(TOKEN, "lab", NOW, NOW + timedelta(days=1))
    other = os.urandom(32)
    seen: list[object] = []
    with pytest.raises(_Stop), store.append() as txn:
        txn.enroll(TOKEN, Device(other, os.urandom(32), NOW), NOW, "")
        txn.insert_leaves(1, [_leaf(first, 2)])
        txn.put_nodes([(0, 1, b"m" * 32), (1, 0, b"p" * 32)])
        txn.put_checkpoint(2, "note 2", NOW)

        def read() -> None:  # another thread: the store as it was before this transaction
            seen.extend([store.tree_size(), store.latest_checkpoint(), store.find_device(other)])

        reader = threading.Thread(target=read)
        reader.start()
        reader.join(timeout=60)
        assert seen == [1, (1, "note 1"), None]
        raise _Stop
    assert store.tree_size() == 1 and store.latest_checkpoint() == (1, "note 1")
    assert store.find_device(other) is None
    assert store.find_device(first).last_sequence == 1  # type: ignore[union-attr]
    # the token is unspent: the enrollment the failed transaction made is gone with it
    assert store.enroll(TOKEN, Device(other, os.urandom(32), NOW), NOW).label == "lab"
