"""`prov serve` start-up failures a new user meets: an address it cannot listen on is
refused before anything is created, with one readable sentence (exit 1; exit 2 for an
address that is not HOST:PORT), and a start that fails later removes the files it made.
Real `prov serve` children, a real socket holding the port, real files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from conftest import ADMIN_TOKEN, ROOT


def _serve(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`prov serve --db prov.db ARGS` run in ``folder`` until it exits (it must fail)."""
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", "serve", "--db", "prov.db", "--no-detector"]
        + list(args),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
        env={**os.environ, "PROV_ADMIN_TOKEN": ADMIN_TOKEN, "PYTHONPATH": str(ROOT)},
    )


def test_a_port_in_use_is_one_sentence_and_creates_nothing(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = _serve(tmp_path, "--listen", f"127.0.0.1:{port}")
    assert run.returncode == 1, run.stderr
    assert f"error: cannot listen on 127.0.0.1:{port}: address already in use" in run.stderr
    assert "add_port" not in run.stderr and "GRPC" not in run.stderr  # no raw gRPC line
    assert list(tmp_path.iterdir()) == []  # no database, lock, log key or secret


def test_an_address_of_another_machine_is_one_sentence(tmp_path: Path) -> None:
    run = _serve(tmp_path, "--listen", "192.0.2.1:50051")  # TEST-NET-1: never ours
    assert run.returncode == 1, run.stderr
    assert "cannot listen on 192.0.2.1:50051: cannot assign requested address" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_malformed_listen_address_is_a_usage_error(tmp_path: Path) -> None:
    for bad in ("nonsense", "127.0.0.1:70000", "::1:50051"):
        run = _serve(tmp_path, "--listen", bad)
        assert run.returncode == 2, (bad, run.stderr)
        assert "--listen" in run.stderr and "Traceback" not in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_metrics_port_in_use_is_checked_before_the_store_opens(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = _serve(tmp_path, "--listen", "127.0.0.1:0", "--metrics-listen", f"127.0.0.1:{port}")
    assert run.returncode == 1, run.stderr
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_start_that_fails_later_removes_what_it_created(tmp_path: Path) -> None:
    # the trust anchors are read after the store and the log key were made
    run = _serve(tmp_path, "--listen", "127.0.0.1:0", "--c2pa-trust-anchors", "missing.pem")
    assert run.returncode == 1, run.stderr
    assert "missing.pem" in run.stderr
    assert list(tmp_path.iterdir()) == []
    # an existing database is never removed, only what this start added beside it
    (tmp_path / "prov.db").write_bytes(b"")
    run = _serve(tmp_path, "--listen", "127.0.0.1:0", "--c2pa-trust-anchors", "missing.pem")
    assert run.returncode == 1, run.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["prov.db"]
