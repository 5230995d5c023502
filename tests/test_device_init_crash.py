"""`prov device init --force` killed (SIGKILL) at each step that changes the device folder:
the next command finds one intact device, the old one or the new one, never a folder
split in two (the old device's state in replaced/DEVICE_ID/ while its queue and key stay
behind, or the new key beside no state). A real `prov` process, killed for real by the
kernel at the k-th file system change it makes (counted by a Python audit hook the test
installs in the child; the product has no fault switch)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from clients.device import DeviceHome
from tests.conftest import PASSPHRASE

#: The child: count the calls that change the file system and SIGKILL the process
#: just before the k-th (argv[1]); argv[2:] is the prov command line.
_KILL_AT = r"""
import os, signal, sys
from clients.cli import main
kill_at, seen = int(sys.argv[1]), 0
CHANGES = {"os.rename", "os.mkdir", "os.remove", "os.rmdir", "os.symlink", "shutil.rmtree"}
def hook(event, args):
    global seen
    if event in CHANGES or (event == "open" and len(args) > 2 and isinstance(args[2], int)
                            and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
        seen += 1
        if seen == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(hook)
sys.exit(main(sys.argv[2:]))
"""


def _old_device(root: Path) -> dict[str, bytes]:
    """An enrolled-looking device with a key, state, certificate, a queued claim, a
    set-aside claim and a kept sidecar; returns its files (relative path -> bytes)."""
    home = DeviceHome(root)
    home.init(PASSPHRASE.encode())
    home.cert_path.write_bytes(b"-----BEGIN CERTIFICATE-----\nold\n")
    (home.queue_dir / "000000000001.json").write_bytes(b'{"queued": 1}')
    home.set_aside_dir.mkdir()
    (home.set_aside_dir / "000000000002.json").write_bytes(b'{"aside": 2}')
    home.sidecar_dir.mkdir()
    (home.sidecar_dir / "000000000003.prov").write_bytes(b'{"sidecar": 3}')
    return _files(root)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_init_force_killed_at_any_step_leaves_the_old_or_the_new_device(tmp_path: Path) -> None:
    """(before: killed after the old state moved to replaced/ID/, the folder kept the old
    key, queue and certificate with no state: every command said "no device", and a
    second `init --force` split the old device over replaced/ID/ and
    replaced/unknown-TIME/)"""
    env = {
        **os.environ,
        "PROV_PASSPHRASE": PASSPHRASE,
        "PYTHONDONTWRITEBYTECODE": "1",  # no .pyc written by the child's imports
    }
    outcomes = set()
    template = tmp_path / "template"
    before = _old_device(template)
    old_id = json.loads(before["device.json"])["device_id"]
    for kill_at in range(1, 60):
        root = tmp_path / f"k{kill_at}" / "dev"
        shutil.copytree(template, root)
        run = subprocess.run(
            [sys.executable, "-c", _KILL_AT, str(kill_at), "device", "init", "--force",
             "--home", str(root)],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        killed = run.returncode == -9
        assert killed or run.returncode == 0, run.stderr
        home = DeviceHome(root)
        state = home.state()  # the next command: an intact device, or ConfigError
        key = home.load_key(PASSPHRASE.encode())  # its key matches its state
        after = _files(root)
        if state.device_id == old_id:
            assert {k: v for k, v in after.items() if not k.startswith(".")} == before, kill_at
            outcomes.add("old")
        else:
            assert key.key_id.hex() == state.device_id
            kept = {
                k.removeprefix(f"replaced/{old_id}/"): v
                for k, v in after.items()
                if k.startswith("replaced/")
            }
            assert kept == {k: v for k, v in before.items() if k != "device_key.pem"}, kill_at
            assert home.pending() == [] and not home.cert_path.exists(), kill_at
            assert sorted(p.name for p in root.iterdir()) == [
                ".lock", "device.json", "device_key.pem", "queue", "replaced",
            ], kill_at  # fmt: skip
            outcomes.add("new")
        if not killed:
            break
    else:
        raise AssertionError("init --force never finished")
    assert outcomes == {"old", "new"}, outcomes
