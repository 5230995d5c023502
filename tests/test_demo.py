"""`make demo` (python -m clients.demo) runs the whole path and leaves nothing behind:
its temporary folder, which holds a device key, is removed, and the last line says so
(before: /tmp/prov-demo-* stayed, unmentioned)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_make_demo_removes_its_folder_and_says_so(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "clients.demo"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "demo finished: every verdict was the expected one" in res.stdout
    last = res.stdout.rstrip().splitlines()[-1]
    assert last.startswith(f"removed {tmp_path}/prov-demo-"), last
    assert list(tmp_path.iterdir()) == []
