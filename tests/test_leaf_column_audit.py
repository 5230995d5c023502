"""`prov log audit --db` against the columns of the ``leaves`` table copied from each
entry: its leaf hash, claim hash, device id, sequence, file SHA-256 and integration time.
The server looks an entry up by them (a file by its SHA-256, a claim by its hash, a
device's chain by its id and sequence) and they are not covered by the signed root: an
edited ``file_sha256`` makes a logged file read UNSIGNED, an edited ``claim_hash`` points
a lookup at no entry, while every entry still hashes to the signed root. Each edit exits
3 with one line naming the entry and the column, what the database holds and what the
entry says; an untouched log passes. A real service on a real SQLite file (and
PostgreSQL database), the rows edited by hand, the real CLI in-process.

Before: the audit compared the stored Merkle nodes and checkpoint rows, not these
columns: each edit below passed (exit 0)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import test_node_audit
from tests.inproc import Device
from tests.test_node_audit import LEAVES, _audit, _failed, _service, _sql

#: The node audit's log of `LEAVES` leaves, on SQLite and PostgreSQL.
logged = test_node_audit.logged

#: The leaf edited: a claim (leaf 0 is the device's enrollment).
LEAF = 5

#: column -> the value written over it behind the log's back.
EDITS: dict[str, Any] = {
    "file_sha256": bytes(32),
    "claim_hash": b"\x07" * 32,
    "leaf_hash": b"\x01" * 32,
    "device_id": b"\x09" * 32,
    "sequence": 99,
    "integrated_at": 1,
}


def _shown(value: Any) -> str:
    return bytes(value).hex()[:16] if isinstance(value, bytes | memoryview) else str(value)


def test_an_untouched_log_passes_with_its_leaf_rows_counted(
    logged: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, vkey = logged
    rc, text = _audit(db, vkey, tmp_path, capsys)
    assert rc == 0, text
    assert (
        f"leaf rows OK: the columns of {LEAVES} leaves and 1 key_events row match their entries"
        in text
    ), text


@pytest.mark.parametrize("column", list(EDITS))
def test_an_edited_leaf_column_is_named(
    column: str,
    logged: tuple[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db, vkey = logged
    assert _audit(db, vkey, tmp_path, capsys)[0] == 0
    ((good,),) = _sql(db, f"SELECT {column} FROM leaves WHERE idx=?", LEAF)
    _sql(db, f"UPDATE leaves SET {column}=? WHERE idx=?", EDITS[column], LEAF)
    rc, text = _audit(db, vkey, tmp_path, capsys)
    _failed(rc, text)
    lines = [line for line in text.splitlines() if f"log entry {LEAF}: its {column}" in line]
    assert len(lines) == 1, text
    assert _shown(EDITS[column]) in lines[0] and _shown(good) in lines[0], text
    assert "FORK" not in text and "STORED TREE" not in text, text


def test_an_incremental_audit_compares_the_new_leaf_rows(
    logged: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After an audit of `LEAVES` leaves, a second device's enrollment and claim are
    logged: an incremental audit reads only those two rows, and names the edited one."""
    db, vkey = logged
    assert _audit(db, vkey, tmp_path, capsys)[0] == 0
    h = _service(db, tmp_path)
    try:
        h.submit(h.enroll().next_claim())
    finally:
        h.service.close()
    _sql(db, "UPDATE leaves SET file_sha256=? WHERE idx=?", bytes(32), LEAVES + 1)
    rc, text = _audit(db, vkey, tmp_path, capsys, "--incremental")
    _failed(rc, text)
    assert f"log entry {LEAVES + 1}: its file_sha256" in text, text


#: Edits of the ``key_events`` row of leaf 0 (the device's enrollment), and what is said.
KEY_EDITS: dict[str, tuple[str, tuple[Any, ...], str]] = {
    "kind": ("UPDATE key_events SET kind=2 WHERE leaf_idx=0", (), "a revocation"),
    "device": ("UPDATE key_events SET device_id=? WHERE leaf_idx=0", (b"\x09" * 32,), "0909"),
    "deleted": ("DELETE FROM key_events WHERE leaf_idx=0", (), "is missing"),
    "added": (
        "INSERT INTO key_events(leaf_idx, device_id, kind) VALUES (3, ?, 2)",
        (b"\x09" * 32,),
        "log entry 3",
    ),
}


@pytest.mark.parametrize("edit", list(KEY_EDITS))
def test_an_edited_key_events_row_is_named(
    edit: str, logged: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ``key_events`` table indexes which leaves enroll or revoke which device (the
    server reads a device's key history through it): a row edited, deleted or added
    behind the log's back is named."""
    db, vkey = logged
    statement, args, said = KEY_EDITS[edit]
    _sql(db, statement, *args)
    rc, text = _audit(db, vkey, tmp_path, capsys)
    _failed(rc, text)
    lines = [line for line in text.splitlines() if "key_events row" in line]
    assert len(lines) == 1 and said in lines[0], text


@pytest.fixture(params=["sqlite", "postgresql"])
def chained(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, Device, Device]:
    """(database, the log's verifier key, device A, device B) of a log whose claims link
    and do not: device A
    enrolled (leaf 0), its claims 1 and 2 (linked: leaves 1, 2), device B enrolled (leaf
    3), B's claim 1 (leaf 4, linked), A's claim 4 (leaf 5, a gap: not linked), B's claim 2
    naming no previous claim (leaf 6, not linked), A's claim 5 (leaf 7, linked to leaf 5
    across B's leaves)."""
    db: Path | str = tmp_path / "prov.db"
    if request.param == "postgresql":
        db = str(request.getfixturevalue("pg_url"))
    h = _service(db, tmp_path)
    try:
        a = h.enroll()
        h.submit(a.next_claim())
        h.submit(a.next_claim())
        b = h.enroll()
        h.submit(b.next_claim())
        a.seq += 1  # claim 3 never logged
        h.submit(a.next_claim())
        b.last = b""
        h.submit(b.next_claim())
        h.submit(a.next_claim())
        return str(db), h.service.signer.verifier_key(), a, b
    finally:
        h.service.close()


#: The chain_linked column the writer stores for each leaf of `chained` (0 for the
#: enrollments).
CHAIN = [0, 1, 1, 0, 1, 0, 0, 1]


def test_an_edited_chain_linked_column_is_named(
    chained: tuple[str, str, Device, Device], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``chain_linked`` says whether a claim follows its device's previous claim (the next
    sequence, naming its hash), as the writer judged on append: a verification reports
    it. The audit judges it again from the entries in log order, each device's previous
    claim tracked apart; every row flipped behind the log's back is named, the
    enrollments' included.

    Before: the audit did not read the column, and passed (exit 0) with every row
    flipped."""
    db, vkey, _, _ = chained
    rows = _sql(db, "SELECT idx, chain_linked FROM leaves ORDER BY idx")
    assert [int(v) for _, v in rows] == CHAIN  # the writer's judgement, as documented
    rc, text = _audit(db, vkey, tmp_path, capsys)
    assert rc == 0, text
    assert f"the columns of {len(CHAIN)} leaves" in text, text
    _sql(db, "UPDATE leaves SET chain_linked=1-chain_linked")
    rc, text = _audit(db, vkey, tmp_path, capsys)
    _failed(rc, text)
    lines = [line for line in text.splitlines() if "its chain_linked column" in line]
    assert len(lines) == len(CHAIN), text
    for index, (line, was) in enumerate(zip(lines, CHAIN, strict=True)):
        assert f"log entry {index}: its chain_linked column holds {1 - was}" in line, text
        assert f"the entry says {was}" in line, text
    assert "FORK" not in text and "STORED TREE" not in text, text


def test_an_incremental_audit_judges_the_new_chain_links(
    chained: tuple[str, str, Device, Device], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After an audit of the `chained` log, device A logs its claim 6 (leaf 8, linked to
    its claim 5, leaf 7, before the audit's start), device B its claim 4 with a gap (leaf
    9, not linked), a new device C enrolls (leaf 10) and logs its first claim (leaf 11,
    linked), and A its claim 7 (leaf 12, linked): an incremental audit reads only the new
    leaves, finds a device's previous claim before them by the claim hash the new one
    names, and names every flipped row. Before: --incremental did not check the column
    (exit 0)."""
    db, vkey, a, b = chained
    assert _audit(db, vkey, tmp_path, capsys)[0] == 0
    h = _service(db, tmp_path)
    try:
        h.submit(a.next_claim())
        b.seq += 1
        h.submit(b.next_claim())
        c = h.enroll()
        h.submit(c.next_claim())
        h.submit(a.next_claim())
    finally:
        h.service.close()
    new = [1, 0, 0, 1, 1]  # leaves 8 to 12
    rows = _sql(db, "SELECT chain_linked FROM leaves WHERE idx>=8 ORDER BY idx")
    assert [int(v) for (v,) in rows] == new
    _sql(db, "UPDATE leaves SET chain_linked=1-chain_linked WHERE idx>=5")
    rc, text = _audit(db, vkey, tmp_path, capsys, "--incremental")
    _failed(rc, text)
    lines = [line for line in text.splitlines() if "its chain_linked column" in line]
    assert len(lines) == len(new), text  # the new leaves only
    for index, (line, was) in enumerate(zip(lines, new, strict=True), 8):
        assert f"log entry {index}: its chain_linked column holds {1 - was}" in line, text
        assert f"the entry says {was}" in line, text


def test_the_chain_judgement_keeps_one_item_per_device() -> None:
    """`chain_link_of` on decoded entries, as the audit calls it: a device's first claim
    links only at sequence 1 naming no claim; a gap, or a claim naming another previous
    claim, does not link, and the next claim links to it; a key event is 0 and leaves the
    chain alone; an entry that does not decode is None. The state is one (sequence, claim
    hash) per device, however many claims (memory at 10^7 leaves)."""
    from provenance.log.leaf_audit import chain_link_of
    from provenance.wire.convert import AuditedEntry

    def hash_of(device: bytes, seq: int) -> bytes:
        return seq.to_bytes(8, "big") + device[:24]

    def claim(device: bytes, seq: int, prev: bytes) -> AuditedEntry:
        columns = (hash_of(device, seq), device, seq, bytes(32), 0)
        return AuditedEntry(columns, [], prev, False, None)

    chain: dict[bytes, tuple[int, bytes]] = {}
    a, b = b"a" * 32, b"b" * 32
    key_event = AuditedEntry((bytes(32), a, 0, b"", 0), [], b"", True, None)
    undecoded = AuditedEntry(None, None, b"", False, None)
    got = [
        chain_link_of(chain, claim(a, 1, b"")),
        chain_link_of(chain, claim(a, 2, hash_of(a, 1))),
        chain_link_of(chain, key_event),
        chain_link_of(chain, undecoded),
        chain_link_of(chain, claim(b, 2, b"")),  # b's first claim, sequence 2: a gap
        chain_link_of(chain, claim(a, 3, b"\x01" * 32)),  # names no claim of a
        chain_link_of(chain, claim(b, 3, hash_of(b, 2))),
    ]
    assert got == [1, 1, 0, None, 0, 0, 1]
    for seq in range(4, 10_004):
        assert chain_link_of(chain, claim(a, seq, hash_of(a, seq - 1))) == 1
    assert len(chain) == 2
