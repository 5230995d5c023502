"""`prov --version` prints the installed package's version (before: "No such option")."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from tests.conftest import ROOT


def test_prov_version() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "clients.cli", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"prov {importlib.metadata.version('media-provenance')}\n"
