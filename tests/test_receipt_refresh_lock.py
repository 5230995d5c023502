"""`prov receipt refresh` reads, then rewrites, a sidecar holding the device folder's
lock, as `prov sign` does: before, it took no lock, so a `prov sign --force` of the same
file between its read and its write was overwritten by the old claim with a new
receipt. The real CLI in a child process against a real `prov serve`; the lock held here
as a running `prov sign` holds it."""

from __future__ import annotations

import fcntl
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Cli, cli_process, sign_sample
from tests.drain import finish, logged


def test_receipt_refresh_waits_for_the_device_folder(enrolled: Cli, tmp_path: Path) -> None:
    photo, _ = sign_sample(enrolled, tmp_path)
    sidecar = Path(f"{photo}.prov")
    with (enrolled.home / ".lock").open("ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running `prov sign --force` holds it
        proc = cli_process(["receipt", "refresh", str(sidecar), "--server", enrolled.server])
        try:
            deadline = time.monotonic() + 90
            while "waiting for another prov command" not in logged(proc):
                assert proc.poll() is None, f"it did not wait for the lock: {logged(proc)}"
                assert time.monotonic() < deadline, logged(proc)
                time.sleep(0.1)
            # the other command rewrites the sidecar meanwhile: refresh reads it afterwards
            sidecar.write_text("rewritten while the lock was held\n")
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        fcntl.flock(held, fcntl.LOCK_UN)
    try:
        _, err = finish(proc, timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still waiting 90 s after the lock was released: {logged(proc)}")
    assert proc.returncode == 2 and "not a usable sidecar" in err, err
    assert sidecar.read_text() == "rewritten while the lock was held\n"
