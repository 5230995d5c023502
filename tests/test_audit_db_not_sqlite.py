"""`prov log audit --db FILE` and `prov log export-tiles --db FILE` given a file that is no
SQLite database at all (random bytes, another program's file): refused in words, exit 1,
never a traceback. The read-only open's first read raised sqlite3.DatabaseError "file is
not a database", which the read-only connect did not catch (it caught only its
subclass OperationalError, for a read-only mount's CANTOPEN)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.cli import main as prov_main
from provenance.log.checkpoint import LogSigner
from tests.test_tiles import ORIGIN


@pytest.mark.parametrize("command", ["audit", "export-tiles"])
def test_a_db_file_that_is_no_sqlite_database_is_refused_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Before: a traceback ending in 'sqlite3.DatabaseError: file is not a database'."""
    junk = tmp_path / "prov.db"
    junk.write_bytes(random.Random(5).randbytes(5000))
    if command == "audit":
        vkey = LogSigner(Ed25519PrivateKey.generate(), ORIGIN).verifier_key()
        args = ["--db", str(junk), "--state", str(tmp_path / "s.json"), "--log-key", vkey]
    else:
        args = ["--db", str(junk), str(tmp_path / "tiles")]
    rc = prov_main(["log", command, *args])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "not a provenance database" in err and str(junk) in err, err
    assert junk.read_bytes() == random.Random(5).randbytes(5000)
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "tiles").exists()
