"""Ctrl-C while `prov sign` waits for another command using the device folder stops it
at once (exit 130), nothing signed. Before, the first Ctrl-C only printed "stopping after
this file" and the command went on waiting for the lock, for good while the other
command held it. And the device key is read only once the lock is held. The real CLI
in a child process; the lock held here as a running `prov sign` (or `prov device init
--force`) holds it."""

from __future__ import annotations

import fcntl
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from clients.device import DeviceHome
from provenance.wire.sidecar import decode_sidecar
from tests.conftest import PASSPHRASE, SAMPLES, cli_process, closed_port
from tests.drain import logged
from tests.stopping import ended, owned, stop_by


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


def test_a_key_replaced_while_sign_waits_for_the_folder_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov sign` reads the device key once it holds the device folder's lock. A `prov
    sign` that read it first, then waited while `prov device init --force` replaced the
    key, signed with the old key a claim numbered in the new device's state (#1, a
    number the old key had already used) and queued it in the new device's queue. Two
    real processes: the lock held here as `prov device init --force` holds it, the key
    replaced under it, and `prov sign` in a child waiting for it."""
    home = DeviceHome(tmp_path / "dev")
    home.init(PASSPHRASE.encode())
    photo = shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg")
    monkeypatch.setenv("PROV_HOME", str(home.root))
    monkeypatch.setenv("PROV_PASSPHRASE", PASSPHRASE)
    proc = cli_process(["sign", "--server", closed_port(), str(photo)])
    with owned(proc):
        with home.locked():
            deadline = time.monotonic() + 90
            while "waiting for another prov command" not in logged(proc):
                assert proc.poll() is None and time.monotonic() < deadline, logged(proc)
                time.sleep(0.1)
            new, old_folder = home.init(PASSPHRASE.encode(), force=True)
        rc, out, err = ended(proc, timeout=120)
    assert rc == 4 and "signed (#1), queued" in out, (out, err)
    claim = decode_sidecar(Path(f"{photo}.prov").read_bytes()).signed_claim
    assert claim.key_id.hex() == new.device_id  # was the replaced key's
    assert [e.sidecar.signed_claim for e in home.pending() if e.sidecar] == [claim]
    assert old_folder is not None and DeviceHome(old_folder).pending() == []


def test_a_wrong_passphrase_is_said_before_waiting_for_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The passphrase is checked (the key file decrypted) before `prov sign` waits for
    another command holding the device folder: a mistyped one is said at once, exit 1,
    not once that command lets go (up to $PROV_LOCK_WAIT, 600 s, later). The real CLI in
    a child process; the lock held here for the whole test."""
    home = DeviceHome(tmp_path / "dev")
    home.init(PASSPHRASE.encode())
    photo = shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg")
    monkeypatch.setenv("PROV_HOME", str(home.root))
    monkeypatch.setenv("PROV_PASSPHRASE", PASSPHRASE + "x")
    with (home.root / ".lock").open("ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running `prov sign` holds it
        with owned(cli_process(["sign", "--server", closed_port(), str(photo)])) as proc:
            try:
                rc, out, err = ended(proc, timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"a wrong passphrase waited for the lock: {logged(proc)}")
    assert rc == 1 and "the passphrase is wrong" in err, (out, err)
    assert "waiting for another prov command" not in err, err
    assert not Path(f"{photo}.prov").exists() and home.pending() == []


def test_a_new_passphrase_signs_after_an_init_killed_once_decided(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `prov device init --force` killed once its new key was decided (``.init-new/``
    left, the old key still in place): `prov sign` with the new key's passphrase is not
    refused by the early passphrase check (the old key file does not take it); the
    replacement is finished under the lock and the new key signs. The killed init is
    made here by leaving its last step undone; `prov sign` is the real CLI in a child."""
    home = DeviceHome(tmp_path / "dev")
    home.init(b"the old passphrase")
    with monkeypatch.context() as m:
        m.setattr(DeviceHome, "finish_init", lambda self: None)  # killed at the commit point
        new, _ = home.init(PASSPHRASE.encode(), force=True)
    assert (home.root / ".init-new").is_dir()
    assert json.loads(home.state_path.read_bytes())["device_id"] != new.device_id  # the old
    photo = shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg")
    monkeypatch.setenv("PROV_HOME", str(home.root))
    monkeypatch.setenv("PROV_PASSPHRASE", PASSPHRASE)
    rc, out, err = ended(cli_process(["sign", "--server", closed_port(), str(photo)]), 120)
    assert rc == 4 and "signed (#1), queued" in out, (out, err)
    claim = decode_sidecar(Path(f"{photo}.prov").read_bytes()).signed_claim
    assert claim.key_id.hex() == new.device_id
