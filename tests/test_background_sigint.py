"""A long-running command started as a shell script's background job (``prov serve ...
&``: SIGINT ignored, the same process group as the script's foreground job) is not
stopped by a Ctrl-C at the terminal, which goes to that whole group: SIGINT stays ignored
in it, as `prov scan` already kept it (tests/test_scan_interrupt_pool.py); SIGTERM still
stops it as before. Until h-bgserve60, `prov serve`, `prov web` and `prov witness serve`
put their own SIGINT handler in place of the ignored SIGINT and shut down on it, and `prov
sign` (its "stopping after this file") stopped after the file in hand, exit 130.

Each test starts the command as such a job (`tests.conftest.cli_process`, its own
process group), reads from /proc that SIGINT is ignored once it serves (the kernel then
drops it: nothing of the process runs for it), sends SIGINT to the group, and checks by a
real call (or, for `prov sign`, more files signed) that it carries on; then SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from clients.api import ProvenanceClient
from provenance.log.checkpoint import generate_log_key
from tests.conftest import SAMPLES, Cli, cli_process, closed_port, read_line
from tests.stopping import owned, stop_by


def _ignores_sigint(pid: int) -> bool:
    """Whether process ``pid`` has SIGINT ignored (its ``SigIgn`` mask in /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = next(line for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask.split()[1], 16) >> (signal.SIGINT - 1) & 1)


def _background(args: list[str]) -> subprocess.Popen[str]:
    """`prov ARGS` started as a shell's background job: SIGINT ignored, in a process
    group of its own (the script's, to which the test sends the terminal's Ctrl-C)."""
    return cli_process(args, ignore_sigint=True, start_new_session=True)


def _ctrl_c(proc: subprocess.Popen[str]) -> None:
    """The terminal's Ctrl-C: SIGINT to ``proc``'s whole process group, once SIGINT is
    seen ignored there (before h-bgserve60, caught by the command's own handler)."""
    assert _ignores_sigint(proc.pid), "SIGINT is caught: a Ctrl-C would stop it"
    os.killpg(proc.pid, signal.SIGINT)


def _http_status(url: str, body: bytes | None = None) -> int:
    """The HTTP status of a GET of ``url`` (a POST of ``body`` when given)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=60) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_a_background_prov_serve_is_not_stopped_by_ctrl_c(tmp_path: Path) -> None:
    args = ["serve", "--db", str(tmp_path / "p.db"), "--listen", "127.0.0.1:0", "--no-detector"]
    with owned(_background(args)) as proc:
        address = read_line(proc, "listening on ")
        key = read_line(proc, "log key: ")
        _ctrl_c(proc)
        with ProvenanceClient(address) as c:  # still serving
            assert c.log_key()[0] == key
        assert proc.poll() is None
        rc, out, err = stop_by(proc, signal.SIGTERM)
    assert rc == 0, (rc, out, err)
    assert out.splitlines()[-1:] == ["shutting down"], out
    assert "interrupted" not in err and "Traceback" not in err, err


def test_a_background_prov_web_is_not_stopped_by_ctrl_c() -> None:
    with owned(_background(["web", "--server", closed_port(), "--listen", "127.0.0.1:0"])) as proc:
        url = read_line(proc, "web on ")
        _ctrl_c(proc)
        assert _http_status(url + "/") == 200  # still serving
        assert proc.poll() is None
        rc, out, err = stop_by(proc, signal.SIGTERM)
    assert rc == 0, (rc, out, err)
    assert out.splitlines()[-2:] == ["shutting down", "web stopped"], out
    assert "Traceback" not in err, err


def test_a_background_witness_is_not_stopped_by_ctrl_c(tmp_path: Path) -> None:
    vkey = generate_log_key(tmp_path / "log.pem", "example.org/log").verifier_key()
    args = ["witness", "serve", "--key", str(tmp_path / "w.pem"), "--log-key", vkey]
    args += ["--state", str(tmp_path / "wstate"), "--listen", "127.0.0.1:0"]
    with owned(_background(args)) as proc:
        url = read_line(proc, "witness on ")
        _ctrl_c(proc)
        # still serving: a body that is no checkpoint is refused as such
        assert _http_status(url + "/add-checkpoint", b"not a checkpoint") == 400
        assert proc.poll() is None
        rc, out, err = stop_by(proc, signal.SIGTERM)
    assert rc == 0, (rc, out, err)
    assert out.splitlines()[-2:] == ["shutting down", "witness stopped"], out
    assert "Traceback" not in err, err


def _sidecars(folder: Path, at_least: int, proc: subprocess.Popen[str]) -> int:
    """The number of sidecars in ``folder`` once there are ``at_least`` (within 120 s,
    while ``proc`` runs; else AssertionError with its exit status)."""
    deadline = time.monotonic() + 120
    while (n := len(list(folder.glob("*.prov")))) < at_least:
        assert proc.poll() is None, f"prov sign ended with {proc.returncode} after {n} files"
        assert time.monotonic() < deadline, f"{n} sidecars in 120 s"
        time.sleep(0.01)
    return n


def test_a_background_prov_sign_is_not_stopped_by_ctrl_c(enrolled: Cli, tmp_path: Path) -> None:
    """Files are signed after the Ctrl-C, past the one in hand; SIGTERM then ends it by
    its default action, as it ends `prov sign` run in the foreground."""
    folder = tmp_path / "many"
    folder.mkdir()
    files = [shutil.copy(SAMPLES / "rocket.jpg", folder / f"r{k:03d}.jpg") for k in range(300)]
    with owned(_background(["sign", *map(str, files)])) as proc:
        done = _sidecars(folder, 3, proc)
        _ctrl_c(proc)
        _sidecars(folder, done + 3, proc)  # before: exit 130 after the file in hand
        rc, _, err = stop_by(proc, signal.SIGTERM)
    assert rc == -signal.SIGTERM, (rc, err[-2000:])
    assert "stopping after this file" not in err, err[-2000:]
