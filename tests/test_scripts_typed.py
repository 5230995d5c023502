"""scripts/ is under `make lint`'s mypy --strict like the product (pyproject.toml
[tool.mypy]; scripts/*detector* are left out until they type-check)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_scripts_pass_mypy_strict() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "scripts"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues found in" in done.stdout
