"""`prov scan --resume` whose PATH arguments are spelled otherwise than the first run's
(relative instead of absolute): rows are matched by their path as given, so every file
would be scanned again; one warning line says so before the scan (real server, real
`prov scan` processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, ServerProc, start_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    s = start_server(tmp_path_factory.mktemp("resume-paths") / "prov.db")
    yield s
    s.stop()


def _scan(cwd: Path, server: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", "scan", *args, "--server", server]
        + ["--workers", "0", "--no-detect"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "matched by their path as given" in line]


def test_a_resume_whose_paths_match_no_row_warns_once_before_scanning(
    srv: ServerProc, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for n in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), np.uint8)).save(folder / f"{n}.png")
    report = tmp_path / "r.jsonl"
    first = _scan(tmp_path, srv.address, str(folder), "--report", str(report))
    assert first.returncode == 0, first.stderr
    rows = len(report.read_text().splitlines())
    assert rows == 2, report.read_text()

    # the same spelling: the rows match, nothing is said
    same = _scan(tmp_path, srv.address, str(folder), "--report", str(report), "--resume")
    assert same.returncode == 0, same.stderr
    assert _warnings(same.stderr) == [], same.stderr

    # relative where the first run was absolute: no row matches; said once, exit 0
    moved = _scan(tmp_path, srv.address, "photos", "--report", str(report), "--resume")
    assert moved.returncode == 0, moved.stderr
    said = _warnings(moved.stderr)
    assert len(said) == 1, moved.stderr
    assert said[0].startswith("warning: "), said
    assert "none of the 2 rows" in said[0] and "photos" in said[0], said
    assert len(report.read_text().splitlines()) == 4  # scanned again, as warned
