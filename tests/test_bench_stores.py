"""The stores the append benches fill are logs an honest server would write: a full
`prov log audit --db` passes them (every registry row enrolled by a logged key-history
entry, every claim signed by its device's key). Before, bench/bench_log.py (and
bench/bench_scale.py through it) and bench/bench_cosign.py wrote registry rows straight
into the store and claims with zero signatures, and the audit refused them (exit 3)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from provenance.log.checkpoint import load_log_signer
from provenance.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import bench_cosign  # noqa: E402  # bench/bench_cosign.py
from bench_log import writer_rate  # noqa: E402  # bench/bench_log.py


def _audit(db: Path, vkey: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The output of a full `prov log audit --db` of ``db``, which must pass."""
    state = tmp_path / "audit.json"
    rc = prov_main(["log", "audit", "--db", str(db), "--state", str(state), "--log-key", vkey])
    got = capsys.readouterr()
    text = got.out + got.err
    assert rc == 0, text
    return text


def test_bench_log_appends_leave_a_log_the_audit_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, key = tmp_path / "appends.db", tmp_path / "appends.key"
    store = SqliteStore(db)
    try:
        assert writer_rate([store], key, submitters=3, total=12, max_batch=4) > 0
    finally:
        store.close()
    text = _audit(db, load_log_signer(key, "bench.local/log").verifier_key(), tmp_path, capsys)
    assert "log OK: has 15 entries" in text, text  # 3 enrollments, 12 claims


def test_bench_cosign_services_leave_a_log_the_audit_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = bench_cosign.open_service(tmp_path, "bare", [])
    try:
        devices = bench_cosign.enroll_devices(service, 2)
        for seq in (1, 2):
            for dev in devices:
                service.writer.submit(bench_cosign.pending(dev, seq))
        vkey = service.signer.verifier_key()
    finally:
        service.close()
    text = _audit(tmp_path / "bare.db", vkey, tmp_path, capsys)
    assert "log OK: has 6 entries" in text, text
