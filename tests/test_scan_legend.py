"""`prov scan`'s final summary on the terminal says what its rows that are no verdict
hold (ERROR, EMPTY, SIDECAR) and what UNSIGNED does not mean: a real scan against a real
`prov serve`, in this process (``--workers 0``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clients.cli import main as prov_main
from tests.conftest import start_server


def test_the_terminal_summary_explains_its_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Scanning a 5,000-file folder as an archivist: the table read ERROR 2, EMPTY 10,
    SIDECAR 2 beside 4,997 UNSIGNED, with no word what these are; only docs/scan.md's
    field table, read closely, told (EMPTY and SIDECAR; ERROR nowhere)."""
    desk = tmp_path / "desk"
    desk.mkdir()
    noise = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(desk / "a.png")
    (desk / "empty.jpg").write_bytes(b"")
    srv = start_server(tmp_path / "p.db")
    try:
        capsys.readouterr()
        args = ["--report", str(tmp_path / "r.jsonl"), "--server", srv.address]
        rc = prov_main(["scan", str(desk), *args, "--workers", "0"])
    finally:
        srv.stop()
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0, out
    assert "UNSIGNED: no signed capture by a key in good standing was found" in out, out
    assert "its search short says so in its reasons); that says nothing" in out, out
    assert "EMPTY: a file of no bytes" in out, out
    assert "ERROR:" not in out and "SIDECAR:" not in out, out  # none in this scan
    assert out.rstrip().split(" reports: ")[-1].startswith(str(tmp_path / "r.jsonl")), out
