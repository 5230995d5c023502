"""`prov log export-tiles` from a database whose newest checkpoint row is damaged (its
note edited, or its size column out of step with the note and the leaves): refused as a
damaged log, exit 3, with nothing written into the folder. Before, the row's note was
published as the folder's `checkpoint` whatever it held (an auditor then found no signed
note there, or a tree it could not match), and a size column edited past the leaves
made the export list a tile for every 256 leaves of that size first (2^62: unbounded
time and memory). Real SQLite files, the CLI in this process."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.cli import main as prov_main
from provenance.log.checkpoint import LogSigner
from provenance.store import open_store
from tests.test_tiles import ORIGIN, _fill

_NEWEST = "(SELECT MAX(size) FROM checkpoints)"


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (f"UPDATE checkpoints SET note = 'not a note' WHERE size = {_NEWEST}", "no signed note"),
        (f"UPDATE checkpoints SET note = note || 'more' WHERE size = {_NEWEST}", "no signed note"),
        (
            f"UPDATE checkpoints SET note = replace(note, '\n700\n', '\n699\n')"
            f" WHERE size = {_NEWEST}",
            "is of 699 entries",
        ),
        (f"UPDATE checkpoints SET size = 5000 WHERE size = {_NEWEST}", "700 leaves"),
        (f"UPDATE checkpoints SET size = {2**62} WHERE size = {_NEWEST}", "700 leaves"),
    ],
    ids=["garbage", "appended", "note-size", "size-column", "size-column-huge"],
)
def test_an_export_of_a_damaged_newest_checkpoint_row_is_refused_writing_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str, said: str
) -> None:
    rc, out = _export_edited(tmp_path, edit)
    err = capsys.readouterr().err
    assert rc == 3 and "LOG INTEGRITY FAILURE" in err, err
    assert said in " ".join(err.split()), err
    assert not (out / "checkpoint").exists()
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


def _export_edited(tmp_path: Path, edit: str) -> tuple[int, Path]:
    """A log of 700 entries edited by the SQL ``edit``, then exported: the exit code and
    the folder."""
    db = tmp_path / "prov.db"
    store = open_store(db)
    _fill(store, LogSigner(Ed25519PrivateKey.generate(), ORIGIN), 700, seed=1)
    store.close()
    with sqlite3.connect(db) as conn:
        conn.execute(edit)
    out = tmp_path / "tiles"
    return prov_main(["log", "export-tiles", str(out), "--db", str(db)]), out


@pytest.mark.parametrize("value", ["x'00'", "x'" + "00" * 33 + "'", "'a text, not a hash'"])
def test_an_export_over_a_damaged_merkle_node_row_says_the_database_is_damaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    """A leaf's Merkle node row edited to a hash of 1 or 33 bytes, or to text: the export
    stops, exit 3, naming the tile whose node rows are damaged and writing no checkpoint.
    Before: 'error: the node reader answered wrongly for tile/0/000' (exit 1), or 'the log
    database is damaged: string argument without an encoding'."""
    edit = f"UPDATE nodes SET hash = {value} WHERE level = 0 AND idx = 5"
    rc, out = _export_edited(tmp_path, edit)
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 3 and "LOG INTEGRITY FAILURE" in err, err
    assert "Merkle node" in err and "tile/0/000" in err, err
    assert not (out / "checkpoint").exists()


@pytest.mark.parametrize("where", ["level = 0 AND idx = 5", "level = 8 AND idx = 1"])
def test_an_export_over_a_deleted_merkle_node_row_says_the_database_is_damaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """A Merkle node row deleted (a leaf's, or a level-8 node a tile above holds): the
    export stops, exit 3, as for an edited row and as `prov log audit --db` says, writing
    no checkpoint. Before: 'error: log database is missing Merkle nodes [(0, 5)]', exit 1."""
    rc, out = _export_edited(tmp_path, f"DELETE FROM nodes WHERE {where}")
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 3 and "LOG INTEGRITY FAILURE" in err, err
    assert "missing Merkle nodes" in err and "a node row was deleted or damaged" in err, err
    assert not (out / "checkpoint").exists()
