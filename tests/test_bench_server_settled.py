"""bench/prov_server.py's `wait_settled`: a bench that times a fresh ``prov serve`` waits
for the end of its start. The server prints its address before its pre-started video
decoder process has imported PyAV and NumPy (about 0.3 s of CPU on the 2-core bench
machine): `bench/bench_scan.py` timed its scans from that line, so each scan shared its
two cores with that start, which the bare decode+PDQ it is compared with never did."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from prov_server import served, tree_cpu, wait_settled  # noqa: E402  # bench/, put on the path above


def test_a_settled_server_is_idle(tmp_path: Path) -> None:
    """Once `wait_settled` returns, the server and its decoder process use next to no CPU
    for a second (generous bound: 0.1 s; the decoder's start alone used about 0.3 s in the
    second after the server printed its address)."""
    with served(tmp_path / "s.db") as (proc, _):
        waited = wait_settled(proc)
        before = tree_cpu(proc.pid)
        time.sleep(1.0)
        used = tree_cpu(proc.pid) - before
    assert used < 0.1, f"the server used {used:.2f} s of CPU after settling ({waited:.1f} s)"
