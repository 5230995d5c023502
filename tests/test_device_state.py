"""A device's state file (``PROV_HOME/device.json``) damaged or edited by hand: every
device command says it is damaged, naming the file and the field, and exits 1, never a
traceback, and never signs with a sequence or chain link read wrongly. Through the real
CLI; the server is unreachable (127.0.0.1:1), as the state is read before any call."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clients.cli import main as prov_main
from clients.device import DeviceHome
from tests.conftest import PASSPHRASE, ROOT, SAMPLES, device_env

#: A damage done to the state (its JSON object, changed in place or replaced) -> words
#: the error names. Before, the first four signed on into a traceback (TypeError,
#: ValueError) or signed claim number 2 after a `true` (True + 1), and the last two said
#: "argument after ** must be a mapping".
DAMAGES: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "sequence as text": (lambda s: {**s, "last_sequence": "7"}, "last_sequence"),
    "sequence true": (lambda s: {**s, "last_sequence": True}, "last_sequence"),
    "negative sequence": (lambda s: {**s, "last_sequence": -5}, "last_sequence"),
    "sequence past uint64": (lambda s: {**s, "last_sequence": 2**64}, "last_sequence"),
    "claim hash not hex": (lambda s: {**s, "last_claim_hash": "zz"}, "last_claim_hash"),
    "claim hash short": (lambda s: {**s, "last_claim_hash": "ab" * 31}, "last_claim_hash"),
    "server a number": (lambda s: {**s, "server": 5}, "server"),
    "public key not hex": (lambda s: {**s, "public_key": "x" * 64}, "public_key"),
    "another device's id": (lambda s: {**s, "device_id": "0" * 64}, "device_id"),
    "null": (lambda s: None, "not a JSON object but null"),
    "a list": (lambda s: [s], "not a JSON object but an array"),
    # before: "DeviceState.__init__() got an unexpected keyword argument 'extra'" and
    # "... missing 1 required positional argument: 'device_id'", Python's words
    "a field it never writes": (
        lambda s: {**s, "extra": 1},
        "it has a field this program does not write: 'extra'",
    ),
    "no device id": (
        lambda s: {k: v for k, v in s.items() if k != "device_id"},
        "it has no device_id",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_state_is_an_error_naming_it_not_a_traceback(
    damage: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "device"
    device_env(monkeypatch, home, "127.0.0.1:1")
    assert prov_main(["device", "init"]) == 0
    state_path = DeviceHome(home).state_path
    change, words = DAMAGES[damage]
    state_path.write_text(json.dumps(change(json.loads(state_path.read_text()))))
    photo = tmp_path / "photo.jpg"
    shutil.copy(SAMPLES / "grace_hopper.jpg", photo)
    for command in (["sign", str(photo)], ["device", "show"], ["device", "sync"]):
        capsys.readouterr()
        rc = prov_main(command)
        err = capsys.readouterr().err
        assert rc == 1, (command, rc, err)
        assert f"{state_path} is damaged" in err and words in err, (command, err)
        assert "Traceback" not in err and "__init__" not in err, err
    assert not (tmp_path / "photo.jpg.prov").exists()
    assert not any((home / "queue").iterdir())


def test_a_state_as_init_and_signing_write_it_still_loads(tmp_path: Path) -> None:
    """The checks refuse nothing the device writes: a new device (no server, sequence 0,
    no claim hash) and one that has signed."""
    home = DeviceHome(tmp_path / "device")
    state, _ = home.init(PASSPHRASE.encode())
    assert home.state() == state and state.last_sequence == 0 and state.last_claim_hash == ""
    home.save_state(
        type(state)(state.device_id, state.public_key, "[::1]:50051", 2**64 - 1, "ab" * 32)
    )
    assert home.state().last_sequence == 2**64 - 1


@pytest.mark.parametrize("what", ["file", "fifo"])
def test_a_device_folder_that_is_a_file_is_a_usage_error(
    what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """PROV_HOME (or --home) naming a file or a FIFO: `prov device init` said "error: File
    exists: PATH", `prov device sync` "error: Not a directory: PATH/device.json" and `prov
    sign` "no device key at PATH/device_key.pem: run `prov device init` first", which
    then failed (exit 1 each). Now each is a usage error naming the folder option (exit
    2), as `prov witness serve --state` and `prov log export-tiles DIR` are; a folder
    not made yet is still created by `prov device init`."""
    home = tmp_path / "home"
    if what == "file":
        home.write_text("not a folder")
    else:
        os.mkfifo(home)
    device_env(monkeypatch, home, "127.0.0.1:1")
    photo = tmp_path / "photo.jpg"
    shutil.copy(SAMPLES / "grace_hopper.jpg", photo)
    for command in (
        ["device", "init"],
        ["device", "sync"],
        ["device", "show"],
        ["sign", str(photo)],
    ):
        capsys.readouterr()
        rc = prov_main(command)
        err = " ".join(capsys.readouterr().err.split())
        assert rc == 2, (command, rc, err)
        assert "--home" in err and "is not a folder" in err, (command, err)
    monkeypatch.setenv("PROV_HOME", str(tmp_path / "new" / "deeper"))
    assert prov_main(["device", "init"]) == 0


@pytest.mark.parametrize("special", ["fifo", "dev-zero"])
@pytest.mark.parametrize("name", ["device.json", "device_key.pem", ".lock"])
def test_a_device_file_that_is_a_fifo_or_endless_is_an_error_not_a_hang(
    name: str, special: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device's state, key or lock file replaced by a FIFO or a symbolic link to
    /dev/zero (a restored backup, a hostile disk): every device command says the file is
    not a regular file and exits 1. Before, `prov sign` waited for a writer (for the lock,
    a reader) of the FIFO for good, or read /dev/zero into memory until the kernel killed it (and `prov device
    show` and `sync` did the same with device.json). Each command runs in a child with a
    timeout."""
    home = tmp_path / "device"
    device_env(monkeypatch, home, "127.0.0.1:1")
    assert prov_main(["device", "init"]) == 0
    target = home / name
    if name == ".lock":
        assert prov_main(["device", "show"]) == 0  # a first command makes it
    target.unlink(missing_ok=True)
    if special == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/zero")
    photo = tmp_path / "photo.jpg"
    shutil.copy(SAMPLES / "grace_hopper.jpg", photo)
    commands = [["sign", str(photo)]]
    if name == "device.json":  # neither reads the key
        commands += [["device", "sync"], ["device", "show"]]
    for command in commands:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "clients.cli", *command],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=ROOT,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"prov {' '.join(command)} hung on {special} {name}")
        err = " ".join(done.stderr.split())
        assert done.returncode == 1, (command, done.returncode, err)
        assert str(target) in err and "not a regular file" in err, (command, err)
        assert "Traceback" not in err and "__init__" not in err, err
    assert not (tmp_path / "photo.jpg.prov").exists()


def test_a_lock_that_is_a_folder_is_named_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder where the device folder's lock file belongs (``PROV_HOME/.lock``: a
    restored backup, a mistaken `mkdir`): every command that takes the lock says which
    path it is and what to do, exit 1. Before: "error: Is a directory: PATH"."""
    home = tmp_path / "device"
    device_env(monkeypatch, home, "127.0.0.1:1")
    assert prov_main(["device", "init"]) == 0
    lock = home / ".lock"
    lock.unlink()
    lock.mkdir()
    photo = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "photo.jpg"))
    for command in (["sign", str(photo)], ["device", "sync"], ["device", "init", "--force"]):
        capsys.readouterr()
        rc = prov_main(command)
        err = " ".join(capsys.readouterr().err.split())
        assert rc == 1, (command, rc, err)
        assert f"{lock} is a folder, not the lock file" in err, (command, err)
        assert "rmdir" in err and "Is a directory" not in err, (command, err)
        assert "Traceback" not in err, err
    assert not (tmp_path / "photo.jpg.prov").exists() and lock.is_dir()
