"""Ctrl-C while `prov sign` waits for another command using the device folder stops it
at once (exit 130), nothing signed. Before, the first Ctrl-C only printed "stopping after
this file" and the command went on waiting for the lock, for good while the other
command held it. The real CLI in a child process; the lock held here as a running
`prov sign` holds it."""

from __future__ import annotations

import fcntl
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from clients.device import DeviceHome
from tests.conftest import PASSPHRASE, SAMPLES, cli_process, closed_port
from tests.drain import logged
from tests.stopping import owned, stop_by


def test_ctrl_c_while_sign_waits_for_the_device_folder_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = DeviceHome(tmp_path / "dev")
    home.init(PASSPHRASE.encode())
    photo = shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg")
    monkeypatch.setenv("PROV_HOME", str(home.root))
    monkeypatch.setenv("PROV_PASSPHRASE", PASSPHRASE)
    with (home.root / ".lock").open("ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running `prov sign` holds it
        with owned(cli_process(["sign", "--server", closed_port(), str(photo)])) as proc:
            deadline = time.monotonic() + 90
            while "waiting for another prov command" not in logged(proc):
                assert proc.poll() is None and time.monotonic() < deadline, logged(proc)
                time.sleep(0.1)
            try:
                rc, _, err = stop_by(proc, signal.SIGINT, timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still waiting for the lock 30 s after Ctrl-C: {logged(proc)}")
    assert rc == 130, err
    assert "interrupted after 0 of 1 files" in err, err
    assert not Path(f"{photo}.prov").exists() and home.pending() == []
