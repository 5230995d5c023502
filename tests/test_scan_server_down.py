"""A `prov scan` whose server goes away says what is kept and how to go on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from clients.scan import worker
from tests.conftest import SAMPLES, ServerProc
from tests.ports import kept_port


def test_a_server_gone_between_runs_stops_the_scan_saying_resume_goes_on(
    server: ServerProc,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An overnight scan whose server restarts stops with exit 1 after the retries. The
    line said only "cannot reach the server at ..." and the hint to start one; an
    archivist was not told that the rows so far are kept and that the same command with
    --resume goes on (as a full disk's line says)."""
    monkeypatch.setattr(worker, "RETRY_DELAYS_S", (0.01,))
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir()
    later.mkdir()
    shutil.copy(SAMPLES / "rocket.jpg", first / "rocket.jpg")
    shutil.copy(SAMPLES / "chelsea.png", later / "chelsea.png")
    report = tmp_path / "night.jsonl"
    args = ["scan", str(first), "--report", str(report), "--server", server.address]
    assert prov_main([*args, "--workers", "0", "--resume"]) == 0
    assert len(report.read_text().splitlines()) == 1
    server.stop()
    capsys.readouterr()
    # the stopped server's port kept (refusing), so no other xdist worker's server on
    # port 0 is given it meanwhile and answers the scan
    with kept_port(int(server.address.rsplit(":", 1)[1])):
        rc = prov_main([*args, str(later), "--workers", "0", "--resume"])
    err = " ".join(capsys.readouterr().err.split())  # Rich wraps at 80 columns
    assert rc == 1, err
    assert f"error: cannot reach the server at {server.address}" in err, err
    assert f"the rows so far are kept in {report}" in err, err
    assert "the same command with --resume continues the scan" in err, err
    assert "hint: no server answers there" in err, err  # the hint stays
    assert "Traceback" not in err and "TransportError" not in err, err
    assert len(report.read_text().splitlines()) == 1
