"""No `subprocess.Popen(preexec_fn=...)` anywhere in the product, its benches or its tests.

preexec_fn makes Python fork() instead of vfork(); in a process that holds gRPC channels
(every server and client of ours, and this test process) grpcio's fork handlers then
restart gRPC's poller in the child, whose epoll descriptor closing the inherited
descriptors pulls away: the child aborts before exec, about 1 start in 100 (grpc/grpc
issue 43055; two `prov witness serve` starts of the CI run of 0b3c766). `cli_process`
in conftest.py starts a process with SIGINT ignored without it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _preexec_calls(path: Path) -> list[int]:
    """Lines of ``path`` that pass a ``preexec_fn`` keyword to a call."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and any(k.arg == "preexec_fn" for k in node.keywords)
    ]


def test_no_process_is_started_with_preexec_fn() -> None:
    found = {
        str(p.relative_to(ROOT)): lines
        for folder in ("provenance", "clients", "detector", "bench", "scripts", "tests")
        for p in sorted((ROOT / folder).rglob("*.py"))
        if (lines := _preexec_calls(p))
    }
    assert found == {}


def test_the_check_sees_a_preexec_fn(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import subprocess\nsubprocess.Popen(['true'], preexec_fn=None)\n")
    assert _preexec_calls(sample) == [2]
