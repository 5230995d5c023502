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
from typing import IO

from clients.device import DeviceHome
from tests.conftest import PASSPHRASE

#: The child: imports `prov` once, then for each line ``[K, OUT, ARGV]`` (JSON) on stdin
#: forks a process that counts the calls that change the file system and SIGKILLs itself
#: just before the k-th, running `prov ARGV` with its output to the file OUT; answers each
#: line with that process's exit status (-9 when killed). A fork of one process that has
#: imported `prov` (imports change no file: no .pyc is written) spares each try an
#: interpreter start and its imports (about 1 s), and counts the same calls.
_KILL_AT = r"""
import json, os, signal, sys, traceback
from clients.cli import main
CHANGES = {"os.rename", "os.mkdir", "os.remove", "os.rmdir", "os.symlink", "shutil.rmtree"}
def run(kill_at, argv):
    seen = 0
    def hook(event, args):
        nonlocal seen
        if event in CHANGES or (event == "open" and len(args) > 2 and isinstance(args[2], int)
                                and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
            seen += 1
            if seen == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
    sys.addaudithook(hook)
    return main(argv)
for line in sys.stdin:
    kill_at, out, argv = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # the lines are the parent's
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        rc = 1
        try:
            rc = run(kill_at, argv)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
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
    template = tmp_path / "template"
    before = _old_device(template)
    old_id = json.loads(before["device.json"])["device_id"]
    child = subprocess.Popen(
        [sys.executable, "-c", _KILL_AT],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        # pipes: a dialogue, a short line answered to each line sent
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        _kill_at_each_step(tmp_path, template, before, old_id, child.stdin, child.stdout)
    finally:
        child.stdin.close()
        child.wait(timeout=60)


def _kill_at_each_step(
    tmp_path: Path,
    template: Path,
    before: dict[str, bytes],
    old_id: str,
    to_child: IO[str],
    from_child: IO[str],
) -> None:
    """`prov device init --force` on a copy of ``template`` (files ``before``, device
    ``old_id``) killed at its 1st, 2nd, ... change until one run finishes, each run
    through `_KILL_AT`'s process (``to_child``, ``from_child``); each leaves the old
    device or the new one, and both are seen."""
    outcomes = set()
    for kill_at in range(1, 60):
        root = tmp_path / f"k{kill_at}" / "dev"
        shutil.copytree(template, root)
        out = tmp_path / f"k{kill_at}" / "out.txt"
        argv = ["device", "init", "--force", "--home", str(root)]
        to_child.write(json.dumps([kill_at, str(out), argv]) + "\n")
        to_child.flush()
        returncode = int(from_child.readline())
        killed = returncode == -9
        assert killed or returncode == 0, out.read_text()
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
