"""bench/bench_scan.py (and bench/prov_server.py, which it imports) pass mypy --strict:
psutil's stubs are in the dev extra (types-psutil) and so in the venv `make` builds."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_bench_scan_passes_mypy_strict() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "bench/bench_scan.py"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
