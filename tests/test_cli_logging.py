"""Log lines of the servers (`prov serve`, `prov web`, `prov witness serve`) carry the
UTC time, the level and the logger, configured once at the `prov` entry point."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from tests.conftest import start_server

LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO provenance\.server\.service: near-duplicate index: "
)


def test_server_log_lines_have_time_level_and_logger(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "prov.db")
    srv.stop()
    assert srv.proc.stderr is not None
    logged = srv.proc.stderr.read()
    assert any(LINE.match(line) for line in logged.splitlines()), logged


def test_an_unknown_log_level_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROV_LOG_LEVEL", "loud")
    assert prov_main(["log", "key", "--key-file", "/nonexistent"]) == 1
    assert "PROV_LOG_LEVEL='LOUD' is not DEBUG, INFO" in capsys.readouterr().err
