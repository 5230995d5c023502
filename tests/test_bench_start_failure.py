"""bench/prov_server.py's `start`: a child that ends before its ready line is named as a
person would type it (``prov serve --listen ...``), not as the interpreter runs it
(``clients.cli serve``, the module path, was all its message said)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from prov_server import prov_command, start  # noqa: E402  # bench/, put on the path above


def test_a_prov_command_that_does_not_start_is_named_as_typed(tmp_path: Path) -> None:
    """A real `prov serve` child with a listen address it refuses (a usage error, exit 2)."""
    db = tmp_path / "s.db"
    with pytest.raises(SystemExit) as ended:
        start(prov_command("serve", "--db", str(db), "--listen", "nowhere", "--no-detector"))
    said = str(ended.value)
    assert said.startswith(f"prov serve --db {db} --listen nowhere --no-detector did not start"), (
        said
    )
    assert "(exit 2)" in said and "clients.cli" not in said, said


def test_another_command_is_named_by_its_script(tmp_path: Path) -> None:
    """A child that is not `prov` (a bench's own helper server) is named by its script
    and arguments, the interpreter as ``python``."""
    script = tmp_path / "helper.py"
    script.write_text("raise SystemExit(3)\n")
    with pytest.raises(SystemExit) as ended:
        start([sys.executable, str(script), "--serve-echo", "sync"])
    said = str(ended.value)
    assert said.startswith(f"python {script} --serve-echo sync did not start (exit 3)"), said
