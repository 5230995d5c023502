"""The big bench logs (bench/biglog.py) are logs an honest server would write: a full
`prov log audit --db` passes them, the claim check included (every claim's device
signature verified under a key the log's key history enrolled), and a server starts on
one without backfilling its key history. Before (RECIPE 3: random signatures, no logged
enrollments) the audit refused them with exit 3."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from provenance.log.checkpoint import generate_log_key
from provenance.server.service import ProvenanceService, ServiceConfig
from provenance.store import open_store
from provenance.store.sql import SqlStore
from tests.inproc import Clock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from biglog import ORIGIN, build_log  # noqa: E402  # bench/biglog.py

LEAVES = 300
DEVICES = 5


def test_a_big_bench_log_passes_the_full_audit_and_a_server_start(
    any_db: Path | str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On SQLite (`cached_log`) and PostgreSQL (bench/bench_store.py --pg)."""
    db, key = any_db, tmp_path / "log.key"
    signer = generate_log_key(key, ORIGIN)
    store = open_store(db)
    assert isinstance(store, SqlStore)  # SQLite or PostgreSQL: build_log writes SQL
    try:
        build_log(store, signer, LEAVES, batch=100, devices=DEVICES)
    finally:
        store.close()
    state = tmp_path / "audit.json"
    vkey = signer.verifier_key()
    rc = prov_main(["log", "audit", "--db", str(db), "--state", str(state), "--log-key", vkey])
    got = capsys.readouterr()
    text = got.out + got.err
    assert rc == 0, text
    assert f"log OK: has {LEAVES} entries" in text, text
    service = ProvenanceService(ServiceConfig(db=db, log_key=key, origin=ORIGIN), Clock())
    try:  # its start-up checks accept the log, and its key history needs no backfill
        assert service.store.tree_size() == LEAVES
    finally:
        service.close()
