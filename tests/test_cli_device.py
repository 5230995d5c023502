"""`prov device ...` on a folder that holds no device (a mistyped --home or $PROV_HOME)
says so instead of answering as if the device had nothing to do. The real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.cli import main as prov_main
from tests.conftest import closed_port


def test_sync_in_a_folder_without_a_device_says_there_is_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """(before: "nothing queued", exit 0, and the mistyped folder was created)"""
    home = tmp_path / "typo"
    for extra in ((), ("--retry-set-aside",)):
        capsys.readouterr()
        rc = prov_main(["device", "sync", "--home", str(home), "--server", closed_port(), *extra])
        got = capsys.readouterr()
        err = " ".join(got.err.split())
        assert rc == 1 and f"no device at {home}: run `prov device init` first" in err, err
        assert "nothing queued" not in got.out and not home.exists()
