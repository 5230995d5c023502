"""scripts/ is under `make lint`'s mypy --strict like the product (pyproject.toml
[tool.mypy]), every script of it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_scripts_pass_mypy_strict() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "scripts"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    scripts = len(list((ROOT / "scripts").glob("*.py")))
    assert f"no issues found in {scripts} source files" in done.stdout, done.stdout
