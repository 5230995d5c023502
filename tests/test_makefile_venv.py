"""The Makefile's venv rule (`make env`, which `make demo`, `make web` and `make test` run
first) builds the venv from nothing in a fresh clone and again when the requirements
(pyproject.toml, constraints.txt) change, but not for a checkout whose requirements are
only newer on disk: in a git worktree whose .venv links to another checkout's venv, the
checkout's files were newer than that venv's stamp, so `make demo` set out to build the
venv again, through the link (`make -o .venv/.installed demo` was the way around it).

The real Makefile, run by real `make` in folders of its own; the Python it names (PY) is
a stand-in that logs `-m venv` and writes a .venv/bin/pip that logs its installs, so that
nothing is installed (a real build downloads torch)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make here")

#: The stand-in for PY: `-m venv DIR` makes DIR/bin/pip (which logs its arguments);
#: anything else runs the real interpreter.
FAKE_PY = f"""#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  echo "venv $3" >> "$BUILD_LOG"
  mkdir -p "$3/bin"
  printf '#!/bin/sh\\necho "pip $*" >> "$BUILD_LOG"\\n' > "$3/bin/pip"
  chmod +x "$3/bin/pip"
  exit 0
fi
exec {sys.executable} "$@"
"""


def _checkout(where: Path) -> Path:
    """A folder holding the Makefile and the requirements files as they are here."""
    where.mkdir()
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, where / name)
    return where


def _make_env(checkout: Path, fake: Path, log: Path) -> list[str]:
    """Run `make env` in ``checkout`` with PY=``fake``; what it built (the log's new lines)."""
    before = log.read_text().splitlines() if log.exists() else []
    done = subprocess.run(
        ["make", "-s", "env", f"PY={fake}"],
        cwd=checkout,
        env={**os.environ, "BUILD_LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return log.read_text().splitlines()[len(before) :] if log.exists() else []


def _newer(checkout: Path) -> None:
    """The checkout's requirements files a minute newer than anything else here (as a
    `git worktree add` after the venv was built leaves them)."""
    later = time.time() + 60
    for name in ("pyproject.toml", "constraints.txt"):
        os.utime(checkout / name, (later, later))


def test_a_linked_venv_installed_for_the_same_requirements_is_not_built_again(
    tmp_path: Path,
) -> None:
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PY)
    fake.chmod(0o755)
    log = tmp_path / "build.log"

    main = _checkout(tmp_path / "main")
    built = _make_env(main, fake, log)  # a fresh clone: the venv is built from nothing
    assert built and built[0] == "venv .venv", built
    assert any(line.startswith("pip install") and "-e" in line for line in built), built
    assert _make_env(main, fake, log) == []  # and then it is there

    worktree = _checkout(tmp_path / "worktree")
    (worktree / ".venv").symlink_to(main / ".venv")
    _newer(worktree)
    assert _make_env(worktree, fake, log) == [], "the linked venv was built again"

    # requirements that changed in content are installed again
    with (worktree / "constraints.txt").open("a") as f:
        f.write("# changed\n")
    built = _make_env(worktree, fake, log)
    assert any(line.startswith("pip install") for line in built), built
    assert _make_env(worktree, fake, log) == []
    # main's own requirements now differ from what its venv (the same one) was built for
    assert any(line.startswith("pip install") for line in _make_env(main, fake, log))
