"""A SQLite log on a full disk, in-process on a real small tmpfs (mounting needs root, as
CI runs; skipped elsewhere): the checkpoint thread says a lasting failure once, not twice
a second, and says when it works again."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from provenance.core.claims import Device, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM
from provenance.store import NewLeaf
from provenance.store.sqlite import SqliteStore

NOW = datetime(2026, 12, 6, tzinfo=UTC)
DEVICE = b"\xd5" * 32


@contextlib.contextmanager
def _tmpfs(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _leaves(n: int, seq0: int) -> list[NewLeaf]:
    out = []
    for k in range(n):
        signed = SignedClaim(PAYLOAD_TYPE_CLAIM, os.urandom(400), DEVICE, os.urandom(64))
        out.append(
            NewLeaf(os.urandom(32), signed, DEVICE, seq0 + k, os.urandom(32), NOW, False, b"e", ())
        )
    return out


def _wait_passes(store: SqliteStore, n: int) -> None:
    """Wait until the checkpoint thread has made ``n`` more passes (a 60 s hang guard)."""
    goal = store._checkpoint_passes + n
    deadline = time.monotonic() + 60
    while store._checkpoint_passes < goal:
        assert time.monotonic() < deadline, "the checkpoint thread made no passes"
        time.sleep(0.05)


def test_a_lasting_checkpoint_failure_is_logged_once_and_its_end_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _tmpfs(tmp_path / "disk", "2m") as disk:
        store = SqliteStore(disk / "p.db", exclusive=True)
        try:
            store.enroll(None, Device(DEVICE, b"\x02" * 32, NOW), NOW)
            # frames the file does not have yet: nothing is copied back before `started`
            with store.append() as txn:
                txn.insert_leaves(0, _leaves(800, 1))
            ballast = disk / "ballast"
            with ballast.open("wb", buffering=0) as f, contextlib.suppress(OSError):
                while f.write(b"\0" * 4096):  # the rest of the disk, to ENOSPC
                    pass
            caplog.set_level(logging.INFO, logger="provenance.store.sqlite")
            store.started()
            _wait_passes(store, 5)
            failed = [r for r in caplog.records if "WAL checkpoint of" in r.getMessage()]
            assert len(failed) == 1, [r.getMessage() for r in failed]
            assert "failed" in failed[0].getMessage()
            ballast.unlink()
            _wait_passes(store, 2)
            said = [r.getMessage() for r in caplog.records if "WAL checkpoint of" in r.getMessage()]
            assert len(said) == 2 and said[1].endswith("works again"), said
            assert store.tree_size() == 800
        finally:
            store.close()
