"""`prov log audit --db` against the near-duplicate index's derived data: soft-hash rows
and index packs edited behind the log's back are reported (exit 3), naming the pack or
leaf; an honest log passes. A real service on a real SQLite file, real photos, the real
CLI (in-process, so the pack size can be made small)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from clients.cli import main as prov_main
from provenance.index import packs as index_packs
from tests.conftest import SAMPLES
from tests.inproc import InProc


def _audit(inproc: InProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    vkey = inproc.service.signer.verifier_key()
    rc = prov_main(
        ["log", "audit", "--db", str(inproc.db), "--state", str(tmp_path / "audit.json"),
         "--log-key", vkey]
    )  # fmt: skip
    got = capsys.readouterr()
    return rc, got.out + got.err


@pytest.mark.slow
def test_edited_index_packs_and_soft_hash_rows_fail_the_audit(
    inproc: InProc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(index_packs, "PACK_LEAVES", 2)
    copy = tmp_path / "copy.jpg"
    Image.open(SAMPLES / "grace_hopper.jpg").resize((300, 400)).save(copy, quality=70)
    dev = inproc.enroll()
    photos = ["grace_hopper.jpg", "rocket.jpg", "chelsea.png", "generated_controlnet.png"]
    leaves = [inproc.log_file(dev, SAMPLES / p)[1].receipt.leaf_index for p in photos]
    inproc.log_file(dev, copy)
    inproc.reopen()  # the start stores the full packs
    db = sqlite3.connect(inproc.db)
    packs = [r[0] for r in db.execute("SELECT first FROM index_packs ORDER BY first")]
    assert len(packs) >= 2

    rc, text = _audit(inproc, tmp_path, capsys)
    assert rc == 0, text
    assert f"{len(packs)} index packs match" in text
    assert "key history OK: 1 enrollment and 0 revocations" in text

    # the database audit also replays the key history: a revocation slipped into the
    # registry without a logged revocation is reported
    with db:
        db.execute("UPDATE devices SET revoked_at=1, revocation_reason='lost'")
    rc, text = _audit(inproc, tmp_path, capsys)
    assert rc == 3 and "KEY HISTORY:" in text and "NEAR-DUPLICATE" not in text, text
    with db:
        db.execute("UPDATE devices SET revoked_at=NULL, revocation_reason=''")

    # one hash word of the second pack flipped: the pack and its leaf are named
    first, words = db.execute(
        "SELECT first, words FROM index_packs WHERE first=?", (packs[1],)
    ).fetchone()
    bad = bytes([words[0] ^ 0x80]) + words[1:]
    with db:
        db.execute("UPDATE index_packs SET words=? WHERE first=?", (bad, first))
    rc, text = _audit(inproc, tmp_path, capsys)
    end = first + index_packs.PACK_LEAVES
    assert rc == 3 and f"index pack [{first}, {end}), hash 0" in text, text
    assert "NEAR-DUPLICATE INDEX" in text
    with db:
        db.execute("UPDATE index_packs SET words=? WHERE first=?", (words, first))
    assert _audit(inproc, tmp_path, capsys)[0] == 0

    # one soft-hash row rewritten (another photo's hash): the leaf is named
    victim, donor = leaves[0], leaves[1]
    (theirs,) = db.execute("SELECT hash FROM soft_hashes WHERE leaf_idx=?", (donor,)).fetchone()
    (mine,) = db.execute("SELECT hash FROM soft_hashes WHERE leaf_idx=?", (victim,)).fetchone()
    with db:
        db.execute("UPDATE soft_hashes SET hash=? WHERE leaf_idx=?", (theirs, victim))
    rc, text = _audit(inproc, tmp_path, capsys)
    assert rc == 3 and f"soft-hash rows of leaf {victim}:" in text, text
    assert theirs.hex()[:16] in text and mine.hex()[:16] in text

    # a row deleted, and one added past the log's end: both named
    with db:
        db.execute("UPDATE soft_hashes SET hash=? WHERE leaf_idx=?", (mine, victim))
        db.execute("DELETE FROM soft_hashes WHERE leaf_idx=?", (leaves[2],))
        db.execute("INSERT INTO soft_hashes VALUES (?, 'pdq', ?, 90, 0.0)", (leaves[-1] + 10, mine))
    rc, text = _audit(inproc, tmp_path, capsys)
    assert rc == 3, text
    assert f"soft-hash rows of leaf {leaves[2]}: the database holds (no rows)" in text
    assert f"leaf {leaves[-1] + 10} (past the log's end)" in text
    db.close()


def test_a_start_rebuilds_a_pack_whose_digest_does_not_match(
    inproc: InProc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A pack damaged in shape-preserving ways (one bit of a hash) is not trusted at
    start: it is read row by row and written again, so the near-duplicate still matches
    and the audit passes afterwards."""
    monkeypatch.setattr(index_packs, "PACK_LEAVES", 2)
    dev = inproc.enroll()
    for p in ["grace_hopper.jpg", "rocket.jpg", "chelsea.png"]:
        inproc.log_file(dev, SAMPLES / p)
    inproc.reopen()  # stores packs [0, 2) and [2, 4)
    with sqlite3.connect(inproc.db) as db:
        (words,) = db.execute("SELECT words FROM index_packs WHERE first=2").fetchone()
        db.execute(
            "UPDATE index_packs SET words=? WHERE first=2", (bytes([words[0] ^ 1]) + words[1:],)
        )
    assert _audit(inproc, tmp_path, capsys)[0] == 3
    inproc.reopen()
    assert "pack at leaf 2 does not match its stored SHA-256" in caplog.text
    with sqlite3.connect(inproc.db) as db:
        assert db.execute("SELECT words FROM index_packs WHERE first=2").fetchone() == (words,)
    rc, text = _audit(inproc, tmp_path, capsys)
    assert rc == 0 and "2 index packs match" in text, text
