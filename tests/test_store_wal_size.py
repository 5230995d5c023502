"""The SQLite log's -wal file is cut back after it has grown (review hostile51). SQLite
reuses the WAL from its start once a checkpoint has copied all of it, but never makes the
file smaller (journal_size_limit -1, its default): a burst of appends while a reader held
an old snapshot (an audit, a long read) left the -wal at that size for as long as the
server ran. Measured: 200,000 appends with two readers plateau at 81.7 MiB (the writer's
checkpoint at 16,384 pages, 64 MiB, plus what arrives while it runs), a 46 MiB database
beside it; bounded, but kept. Now the writer truncates it to `WAL_SIZE_LIMIT_BYTES`
whenever it starts the WAL over, which only happens after a whole checkpoint, so never
before `SqliteStore.started` (a refused start still leaves the -wal as found)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from provenance.core.claims import Device
from provenance.store import sqlite as sqlite_store
from provenance.store.sqlite import SqliteStore
from tests.test_store_disk_full import DEVICE, NOW, _leaves, _wait_passes


def test_a_wal_grown_under_a_long_read_is_cut_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "WAL_SIZE_LIMIT_BYTES", 1 << 20)
    db = tmp_path / "p.db"
    wal = Path(f"{db}-wal")
    store = SqliteStore(db, exclusive=True)
    try:
        store.enroll(None, Device(DEVICE, b"\x02" * 32, NOW), NOW)
        store.started()
        reader = sqlite3.connect(db, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM leaves").fetchone()  # an old snapshot held
        n = 0
        for _ in range(20):
            with store.append() as txn:
                txn.insert_leaves(n, _leaves(200, 1 + n))
            n += 200
        grown = wal.stat().st_size
        assert grown > 4 << 20, grown  # every frame kept for the reader's snapshot
        reader.execute("COMMIT")
        reader.close()
        _wait_passes(store, 2)  # a whole checkpoint: the WAL may start over
        with store.append() as txn:  # the writer starts it over, and cuts the file
            txn.insert_leaves(n, _leaves(1, 1 + n))
        size = wal.stat().st_size
        assert size <= 1 << 20, f"the -wal is still {size:,} bytes (it grew to {grown:,})"
        assert store.tree_size() == n + 1
    finally:
        store.close()
