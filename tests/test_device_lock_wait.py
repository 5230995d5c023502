"""A device command waited for good while another held the device folder's lock (a
`prov sign` of a thousand files, or one stopped with Ctrl-Z): it said "waiting for
another prov command" once and nothing more, until Ctrl-C. Now it names the lock file and
the holder's PID (recorded in the lock file by the holder), and gives up after
$PROV_LOCK_WAIT seconds (default 600) with exit 1, saying what to do. The holder is a
real second process taking the lock as every device command does (`DeviceHome.locked`);
the waiter is the real CLI in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from clients.device import DeviceHome
from tests.conftest import PASSPHRASE, ROOT, cli_process, closed_port, device_env
from tests.drain import drain, finish, next_line
from tests.photos import noise_photo
from tests.stopping import ended

_HOLD = (
    "import sys\n"
    "from pathlib import Path\n"
    "from clients.device import DeviceHome\n"
    "with DeviceHome(Path(sys.argv[1])).locked():\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"  # until the test closes it
)


def _holder(home: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    drain(proc)
    assert next_line(proc, timeout=90) == "held\n"
    return proc


def test_a_command_gives_up_waiting_for_the_lock_and_names_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = DeviceHome(tmp_path / "dev")
    home.init(PASSPHRASE.encode())
    monkeypatch.setenv("PROV_HOME", str(home.root))
    monkeypatch.setenv("PROV_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("PROV_LOCK_WAIT", "2")
    holder = _holder(home.root)
    try:
        started = time.monotonic()
        waiter = cli_process(["device", "repair"])
        out, err = finish(waiter, timeout=120)
        took = time.monotonic() - started
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        finish(holder, timeout=60)
    said = " ".join(err.split())
    assert waiter.returncode == 1, (out, err)
    assert err.count("waiting for another prov command") == 1, err
    lock = str(home.root / ".lock")
    assert f"{lock} (PID {holder.pid})" in said, said
    assert "gave up after 2 s" in said and "PROV_LOCK_WAIT" in said, said
    assert "Traceback" not in err and "Error" not in err, err
    assert 2 <= took < 100, took

    monkeypatch.setenv("PROV_LOCK_WAIT", "a while")
    waiter = cli_process(["device", "repair"])
    out, err = finish(waiter, timeout=120)
    assert waiter.returncode == 2 and "PROV_LOCK_WAIT" in err, (out, err)

    monkeypatch.setenv("PROV_LOCK_WAIT", "2")  # the lock free again: done at once
    waiter = cli_process(["device", "repair"])
    out, err = finish(waiter, timeout=120)
    assert waiter.returncode == 0 and "nothing to repair" in out, (out, err)
    assert "waiting" not in err, err


def test_the_pid_is_never_written_into_a_file_the_lock_only_points_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder wrote its PID into whatever ``.lock`` opened, and emptied it when done:
    a ``.lock`` that was a symbolic or hard link to another file, or a file some other
    program keeps there, lost its content to a `prov device repair` that changed nothing
    else (seen failing first: each file below emptied)."""
    home = DeviceHome(tmp_path / "dev")
    home.init(PASSPHRASE.encode())
    monkeypatch.setenv("PROV_HOME", str(home.root))
    monkeypatch.setenv("PROV_PASSPHRASE", PASSPHRASE)
    lock = home.root / ".lock"
    notes = tmp_path / "notes.txt"
    cases: dict[str, Callable[[], object]] = {
        "symbolic link": lambda: lock.symlink_to(notes),
        "hard link": lambda: os.link(notes, lock),
        "another program's lock file": lambda: lock.write_bytes(b"owner=backup\n4242\n"),
    }
    emptied = []
    for kind, make in cases.items():
        notes.write_bytes(b"my notes: keep them\n4242\n")
        lock.unlink(missing_ok=True)
        make()
        before = lock.read_bytes()
        out, err = finish(cli_process(["device", "repair"]), timeout=120)
        assert "nothing to repair" in out, (kind, out, err)
        if lock.read_bytes() != before or notes.read_bytes() != b"my notes: keep them\n4242\n":
            emptied.append(kind)
    assert emptied == [], emptied


def test_a_removed_lock_file_does_not_let_a_second_command_sign_beside_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``.lock`` removed while a command holds it (taken for a stale lock): before, the
    next `prov sign` made a new ``.lock``, took it at once and signed beside the holder,
    both numbering claims from one last sequence (exit 4 here, claim #2 queued while the
    holder ran). Now the folder itself is locked too: it gives up, nothing signed."""
    home = DeviceHome(tmp_path / "dev")
    home.init(PASSPHRASE.encode())
    device_env(monkeypatch, home.root, closed_port())  # claims queue: no server answers
    monkeypatch.setenv("PROV_LOCK_WAIT", "0")
    first, second = (noise_photo(tmp_path, f"p{i}.png", i) for i in range(2))
    rc, out, err = ended(cli_process(["sign", str(first)]), 120)
    assert rc == 4 and [e.sequence for e in home.pending()] == [1], (out, err)
    holder = _holder(home.root)
    try:
        (home.root / ".lock").unlink()
        rc, out, err = ended(cli_process(["sign", str(second)]), 120)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        finish(holder, timeout=60)
    said = " ".join(err.split())
    assert rc == 1, (out, err)
    assert (
        f"gave up after 0 s: another prov command still holds the device folder {home.root} (its lock file"
        in said
    ), err
    assert "was removed or replaced" in said, err
    assert not Path(f"{second}.prov").exists()
    assert [e.sequence for e in home.pending()] == [1]
