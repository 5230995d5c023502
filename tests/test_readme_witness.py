"""README's witness example says where a new log's LOGKEY comes from, and what it says
works: the first `prov serve` prints the key and keeps it beside the database, `prov log
key --key-file` prints the same key offline, and `prov witness serve --log-key FILE`
accepts that file. Real `prov serve` and `prov witness serve` children, real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from tests.conftest import ROOT, read_line, start_server
from tests.drain import drain, next_line


def test_readme_says_where_logkey_comes_from() -> None:
    readme = (ROOT / "README.md").read_text()
    example = readme[readme.index("# witnesses:") : readme.index("prov witness serve --key")]
    assert "LOGKEY is the log's verifier key" in example
    assert "prov log key --key-file provenance.db.logkey.pem > log.vkey" in example
    assert "prov witness serve --key w1.pem --log-key log.vkey" in readme


@pytest.mark.slow
def test_the_readme_witness_steps_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "provenance.db"
    srv = start_server(db)
    try:
        printed = next_line(srv.proc, 60) or ""
    finally:
        srv.stop()
    assert printed.startswith("log key: ")
    capsys.readouterr()
    assert prov_main(["log", "key", "--key-file", str(tmp_path / "provenance.db.logkey.pem")]) == 0
    vkey = capsys.readouterr().out.strip()
    assert vkey == printed.split()[-1]
    (tmp_path / "log.vkey").write_text(vkey + "\n")
    witness = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "witness", "serve", "--key", "w1.pem"]
        + ["--log-key", "log.vkey", "--state", "w1/", "--name", "witness.example/w1"]
        + ["--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    drain(witness)
    try:
        assert read_line(witness, "witness key ").startswith("witness.example/w1+")
    finally:
        witness.terminate()
        witness.wait(timeout=30)
