"""`prov log audit --db` against the stored Merkle nodes and checkpoint rows: the
perfect-subtree hashes the server builds every inclusion and consistency proof and every
tile from, and the checkpoints it puts in receipts, are compared with the tree the audit
re-hashes from the entries. An edited, deleted or added node row, or a checkpoint row
whose size column, note or root is not the log's, exits 3 naming the node (level, index,
leaves) or the checkpoint; an untouched log passes. A real service on a real SQLite file
(and PostgreSQL database), the rows edited by hand, the real CLI in-process.

Before: the audit read only the entries and the newest checkpoint's note, so a node row
edited behind the log's back (the server then serves proofs that do not verify) or a
checkpoint row moved to another size passed (exit 0)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clients.cli import main as prov_main
from provenance.core import merkle
from provenance.core.errors import LogError, LogIntegrityError
from provenance.log.audit import audit_step
from provenance.log.checkpoint import (
    MAX_SIGNATURE_BASE64,
    Checkpoint,
    LogSigner,
    NoteVerifier,
    generate_log_key,
    load_log_signer,
    open_checkpoint,
)
from provenance.server.service import ProvenanceService, ServiceConfig
from tests.inproc import Clock, InProc

#: Leaves of the log each test makes: an enrollment, then 9 claims, one batch each (a
#: checkpoint per size 1 to 10). Its nodes: level 0 (leaves) 0-9, level 1 0-4, level 2
#: 0-1, level 3 0: 18 rows.
LEAVES = 10


def _service(db: Path | str, tmp_path: Path) -> InProc:
    clock = Clock()
    cfg = ServiceConfig(db=db, log_key=tmp_path / "log.key")
    return InProc(ProvenanceService(cfg, clock), clock, Path(str(db)))


def _log(db: Path | str, tmp_path: Path, claims: int) -> str:
    """A device enrolled and ``claims`` claims of it logged on ``db``, one batch each (a
    checkpoint each), by a service started and closed; the log's verifier key."""
    h = _service(db, tmp_path)
    try:
        dev = h.enroll()
        for _ in range(claims):
            h.submit(dev.next_claim())
        return h.service.signer.verifier_key()
    finally:
        h.service.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def logged(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(database: a SQLite path or a PostgreSQL URL, the log's verifier key) of a log of
    `LEAVES` leaves, the service closed."""
    db: Path | str = tmp_path / "prov.db"
    if request.param == "postgresql":
        db = str(request.getfixturevalue("pg_url"))
    return str(db), _log(db, tmp_path, LEAVES - 1)


def _sql(db: str, statement: str, *args: Any) -> list[Any]:
    """Run one statement on ``db`` behind the log's back (committed); its rows."""
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as c:
            cur = c.execute(statement.replace("?", "%s"), args or None)
            return list(cur.fetchall()) if cur.description else []
    import sqlite3

    c3 = sqlite3.connect(db)
    try:
        with c3:
            return c3.execute(statement, args).fetchall()
    finally:
        c3.close()


def _audit(
    db: str, vkey: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    state = tmp_path / "audit.json"
    rc = prov_main(["log", "audit", "--db", db, "--state", str(state), "--log-key", vkey, *extra])
    got = capsys.readouterr()
    return rc, got.out + got.err


def _failed(rc: int, text: str) -> None:
    assert "Traceback" not in text and "Error:" not in text, text
    assert rc == 3 and "LOG INTEGRITY FAILURE" in text, text


def test_an_untouched_log_passes_with_its_nodes_and_checkpoints_counted(
    logged: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, vkey = logged
    rc, text = _audit(db, vkey, tmp_path, capsys)
    assert rc == 0, text
    assert f"log OK: has {LEAVES} entries" in text
    assert f"Merkle nodes OK: 18 stored nodes and {LEAVES} checkpoints match" in text, text
    # an incremental audit of nothing new still passes
    rc, text = _audit(db, vkey, tmp_path, capsys, "--incremental")
    assert rc == 0, text


def test_an_edited_node_row_is_named(
    logged: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Node (1, 2), the hash of leaves 4 and 5, overwritten: every inclusion proof of
    leaves 0-3 and 6-7 passes through it, so the server would serve proofs that do not
    verify; the entries themselves still hash to the signed root."""
    db, vkey = logged
    assert _audit(db, vkey, tmp_path, capsys)[0] == 0  # a saved state: proofs from it
    (good,) = _sql(db, "SELECT hash FROM nodes WHERE level=1 AND idx=2")[0]
    _sql(db, "UPDATE nodes SET hash=? WHERE level=1 AND idx=2", bytes(32))
    rc, text = _audit(db, vkey, tmp_path, capsys)
    _failed(rc, text)
    assert "Merkle node at level 1, index 2 (leaves [4, 6))" in text, text
    assert "0000000000000000" in text and bytes(good).hex()[:16] in text, text
    assert "FORK" not in text, text  # the saved checkpoint is still consistent


#: Edits behind the log's back (statement, arguments), and what the audit must say.
EDITS: dict[str, tuple[list[tuple[str, tuple[Any, ...]]], list[str]]] = {
    "a leaf hash cut short": (
        [("UPDATE nodes SET hash=? WHERE level=0 AND idx=7", (b"\x01" * 31,))],
        ["Merkle node at level 0, index 7 (leaves [7, 8)): the database holds"
         " 0101010101010101... (31 bytes)"],
    ),
    "the top node edited": (
        [("UPDATE nodes SET hash=? WHERE level=3 AND idx=0", (bytes(32),))],
        ["Merkle node at level 3, index 0 (leaves [0, 8)): the database holds 0000"],
    ),
    "a node deleted": (
        [("DELETE FROM nodes WHERE level=2 AND idx=1", ())],
        ["Merkle node at level 2, index 1 (leaves [4, 8)) is missing"],
    ),
    # rows no tree of the log's size has: past its last leaf, above its top, negative
    "nodes added": (
        [("INSERT INTO nodes(level, idx, hash) VALUES (?, ?, ?)", (level, index, bytes(32)))
         for level, index in [(0, LEAVES), (1, 5), (5, 0), (0, -1)]],
        [f"Merkle node at level {level}, index {index} is not in the log's tree of {LEAVES}"
         for level, index in [(0, LEAVES), (1, 5), (5, 0), (0, -1)]],
    ),
    # a receipt of leaf 5 rebuilt from the row of size 6 would carry the checkpoint of
    # size 5, which does not hold the leaf
    "a checkpoint row moved": (
        [("DELETE FROM checkpoints WHERE size=6", ()),
         ("UPDATE checkpoints SET size=6 WHERE size=5", ())],
        ["checkpoint row of size 6 holds the signed checkpoint of size 5"],
    ),
    "the newest checkpoint row's size": (
        [("UPDATE checkpoints SET size=? WHERE size=?", (LEAVES + 1000, LEAVES))],
        [f"checkpoint row of size {LEAVES + 1000} holds the signed checkpoint of size {LEAVES}"],
    ),
    # the audit then reads the note of size 6 as the newest: rows 7 to 10 are newer
    "a checkpoint row moved past the newest": (
        [("UPDATE checkpoints SET size=? WHERE size=6", (LEAVES + 1000,))],
        [f"checkpoint row of size {LEAVES + 1000} holds the signed checkpoint of size 6"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edited_deleted_or_added_row_is_named(
    logged: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str
) -> None:
    db, vkey = logged
    statements, said = EDITS[edit]
    for statement, args in statements:
        _sql(db, statement, *args)
    rc, text = _audit(db, vkey, tmp_path, capsys)
    _failed(rc, text)
    for words in said:
        assert words in text, text


def test_a_checkpoint_note_edited_or_signed_over_another_root_is_named(
    logged: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The root of the note of size 4 edited (its signature no longer verifies), and the
    note of size 3 replaced by one the log key signed over another root (an operator
    holds the key beside the database): both named."""
    db, vkey = logged
    (note4,) = _sql(db, "SELECT note FROM checkpoints WHERE size=4")[0]
    lines = note4.split("\n")
    lines[2] = base64.b64encode(bytes(32)).decode()
    _sql(db, "UPDATE checkpoints SET note=? WHERE size=4", "\n".join(lines))
    signer = load_log_signer(tmp_path / "log.key", lines[0])
    bad = Checkpoint(signer.name, 3, merkle.leaf_hash(b"another tree"), datetime.now(UTC))
    _sql(db, "UPDATE checkpoints SET note=? WHERE size=3", signer.sign(bad))
    rc, text = _audit(db, vkey, tmp_path, capsys)
    _failed(rc, text)
    assert "checkpoint row of size 4: its note does not verify with the log key" in text, text
    assert "checkpoint of size 3 is signed over root" in text, text
    assert "the log's first 3 entries hash to root" in text, text


def test_a_node_row_of_the_wrong_type_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite keeps whatever type is written: a hash turned into text, an index into a
    fraction, are named like any other edit (no traceback)."""
    db = str(tmp_path / "prov.db")
    vkey = _log(db, tmp_path, LEAVES - 1)
    _sql(db, "UPDATE nodes SET hash='not a hash' WHERE level=0 AND idx=1")
    _sql(db, "UPDATE nodes SET idx=2.5 WHERE level=1 AND idx=2")
    rc, text = _audit(db, vkey, tmp_path, capsys)
    _failed(rc, text)
    assert "Merkle node at level 0, index 1 (leaves [1, 2))" in text, text
    assert "Merkle node at level 1, index 2 (leaves [4, 6)) is missing" in text, text
    assert "Merkle node at level 1, index 2.5 is not in the log's tree" in text, text


def test_an_incremental_audit_compares_the_new_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--incremental` re-hashes only the entries since the saved checkpoint, and compares
    the nodes and checkpoint rows they complete."""
    db = str(tmp_path / "prov.db")
    vkey = _log(db, tmp_path, 3)
    assert _audit(db, vkey, tmp_path, capsys)[0] == 0  # saved at 4 leaves
    assert _log(db, tmp_path, 3) == vkey  # another device: 8 leaves
    _sql(db, "UPDATE nodes SET hash=? WHERE level=1 AND idx=3", bytes(32))
    rc, text = _audit(db, vkey, tmp_path, capsys, "--incremental")
    _failed(rc, text)
    assert "log OK: grew from 4 to 8" in text, text
    assert "Merkle node at level 1, index 3 (leaves [6, 8))" in text, text


def _signed(signer: LogSigner, entries: list[bytes]) -> str:
    tree = merkle.MemoryTree()
    for e in entries:
        tree.append(e)
    return signer.sign(Checkpoint(signer.name, len(entries), tree.root(), datetime.now(UTC)))


def test_without_a_proof_the_re_hash_from_the_start_proves_consistency(tmp_path: Path) -> None:
    """`audit_step` with no consistency proof (the database audit: no proof from the
    nodes under audit): a re-hash from the start passes through the saved root, or the
    log forked."""
    signer = generate_log_key(tmp_path / "log.key", "test.local/log")
    vkey = signer.verifier_key()
    a = [b"a%d" % i for i in range(7)]
    b = a[:2] + [b"b%d" % i for i in range(2, 7)]
    saved, _, _ = audit_step(None, vkey, _signed(signer, a[:3]), None, a[:3])
    state, cp, checked = audit_step(saved, vkey, _signed(signer, a), None, a, from_start=True)
    assert (cp.size, checked) == (7, 7)
    state, cp, checked = audit_step(saved, vkey, _signed(signer, a), None, a[3:])
    assert (cp.size, checked) == (7, 4)
    with pytest.raises(LogIntegrityError, match="FORK: the tree of size 3 seen before"):
        audit_step(saved, vkey, _signed(signer, b), None, b, from_start=True)
    # the entries of another tree than the newest checkpoint's: edited, not a fork
    with pytest.raises(LogIntegrityError, match="entries were edited"):
        audit_step(saved, vkey, _signed(signer, a), None, b, from_start=True)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "memory"])
def test_the_stored_tree_reads_alike_on_every_backend(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    """`Store.node_hashes`, `nodes_outside`, `checkpoint_rows` and `key_event_rows`, which
    the audit reads, answer alike on every backend (the in-memory one included)."""
    db: Path | str = tmp_path / "prov.db"
    if backend != "sqlite":
        db = ":memory:" if backend == "memory" else str(request.getfixturevalue("pg_url"))
    h = _service(db, tmp_path)
    try:
        dev = h.enroll()
        for _ in range(LEAVES - 1):
            h.submit(dev.next_claim())
        store = h.service.store
        tree = merkle.MemoryTree()
        for _, entry in store.entries(0, LEAVES):
            tree.append(entry)
        made = tree.get_nodes([(1, 1), (1, 2), (1, 3)])
        assert store.node_hashes(1, 1, 4) == list(zip(range(1, 4), made, strict=True))
        assert store.node_hashes(3, 1, 5) == []
        assert store.nodes_outside(LEAVES, 5) == []
        # the nodes of leaves 8 and 9 are outside the tree of 8 leaves
        assert store.nodes_outside(8, 5) == [(0, 8), (0, 9), (1, 4)]
        assert store.nodes_outside(8, 1) == [(0, 8), (1, 4)]  # at most 1 per level
        rows = list(store.checkpoint_rows(LEAVES - 1))
        assert [size for size, _ in rows] == [LEAVES - 1, LEAVES]
        assert rows[-1] == store.latest_checkpoint()
        # the key_events rows (`provenance.log.leaf_audit`): leaf 0 enrolls the device
        assert list(store.key_event_rows(0)) == [(0, dev.device_id, 1)]
        assert list(store.key_event_rows(1)) == []
    finally:
        h.service.close()


def test_a_checkpoint_row_every_reader_refuses_is_named(
    logged: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The genuine note of size 4 with a signature line appended that `split_note`
    refuses (an unknown key's signature over `MAX_SIGNATURE_BASE64`): every client
    refuses a receipt carrying it, so the audit names the row. Before, the audit's fast
    path (`TreeAuditor._as_written`) stopped reading at the log's own line and passed it
    (exit 0, the row counted as checked)."""
    db, vkey = logged
    (note4,) = _sql(db, "SELECT note FROM checkpoints WHERE size=4")[0]
    blob = base64.b64encode(bytes(MAX_SIGNATURE_BASE64)).decode()  # 10,924 characters
    _sql(db, "UPDATE checkpoints SET note=? WHERE size=4", f"{note4}\u2014 other.example {blob}\n")
    with pytest.raises(LogError, match="more than the 8,192"):
        open_checkpoint(
            _sql(db, "SELECT note FROM checkpoints WHERE size=4")[0][0],
            NoteVerifier.from_vkey(vkey),
        )
    rc, text = _audit(db, vkey, tmp_path, capsys)
    _failed(rc, text)
    assert "checkpoint row of size 4: its note does not verify with the log key" in text, text
    assert "8,192" in text, text
