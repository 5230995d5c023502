"""SIGTERM that comes after `prov scan` or `prov serve` has done its work, while the
interpreter ends (a scan's worker pool takes about a second to wind down after its
summary is written), ends the process with the command's own exit code, as a Ctrl-C
there does (`clients.launch`). Before, SIGTERM's default action was put back once the
command returned: a scan whose report was complete, its summary printed, died of the
signal (-15, no word), so a supervisor read a finished scan as killed (found following
docs/cli.md: a SIGTERM 6.4 s into a 1,600-file scan that ended at 6.3 s). The signal is
sent by the process itself from an atexit hook: after the command, deterministically."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from clients.interrupt import TERMINATED_AFTER_CTRL_C
from provenance.log.checkpoint import generate_log_key
from tests.conftest import ROOT, cli_process, closed_port, read_line, signal_at_exit
from tests.stopping import owned, stop_by

#: ``prov ARGS`` as its console script starts it, with SIGTERM sent to itself at exit.
SCRIPT = """\
import atexit, os, signal, sys
from {module} import {function}
atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))
sys.exit({function}())
"""


def test_sigterm_after_scan_finished_keeps_its_exit_code(tmp_path: Path) -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        module, function = tomllib.load(f)["project"]["scripts"]["prov"].split(":")
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(module=module, function=function), "scan",
         "empty", "--report", "r.jsonl", "--server", closed_port()],
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "no files found in the paths given" in proc.stdout + proc.stderr, proc
    assert proc.returncode == 0, proc  # before: -15 (SIGTERM's default action)


@pytest.mark.parametrize("lead", [(), ("--launch",)], ids=["python-m", "console-script"])
def test_a_late_sigterm_after_a_ctrl_c_stop_says_so_and_exits_143(
    tmp_path: Path, lead: tuple[str, ...]
) -> None:
    """A command stopped by Ctrl-C (`prov log audit --tiles` waiting on a silent HTTP
    server) that gets a SIGTERM once it returned, while the process ends (its teardown
    held open: tests/exit_held.py), ends "terminated (SIGTERM) while stopping after
    Ctrl-C", 143, as a late Ctrl-C there ends "interrupted again", 130. Before, the
    console script left SIGTERM's default action in place after a stop by a signal
    (`clients.interrupt.leaving_by_signal`) and `python -m clients.cli` never changed it:
    the process died of the signal, -15, with no word."""
    vkey = generate_log_key(tmp_path / "log.pem", "media-provenance.local/log").verifier_key()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(120)
        tiles = f"http://127.0.0.1:{silent.getsockname()[1]}"
        args = ["log", "audit", "--tiles", tiles, "--log-key", vkey, "--state", "st.json"]
        with owned(cli_process([*lead, *args], tmp_path, module="tests.exit_held")) as proc:
            conn, _ = silent.accept()
            with conn:
                assert conn.recv(4096).startswith(b"GET "), "no request came"
                proc.send_signal(signal.SIGINT)  # the command waits on the answer
                read_line(proc, "exiting")  # the command returned: the process ends
                rc, _, err = stop_by(proc, signal.SIGTERM)
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    assert rc == 143, err  # before: -15
    assert lines[-1] == TERMINATED_AFTER_CTRL_C, err
    assert lines[-2] == "interrupted", err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
@pytest.mark.parametrize("lead", [(), ("--launch",)], ids=["python-m", "console-script"])
def test_a_late_signal_after_a_normal_end_keeps_the_commands_exit_code(
    tmp_path: Path, lead: tuple[str, ...], sig: signal.Signals
) -> None:
    """A command that ended by itself (`prov verify` of a file that is not there: a usage
    error, exit 2) and gets a Ctrl-C or SIGTERM once it returned, while the process ends
    (its teardown held open: tests/exit_held.py), ends with that exit code and no word
    more, started as ``python -m clients.cli`` as well as by its console script
    (`clients.launch`). Before, ``python -m clients.cli`` left Python's handlers in place:
    a late Ctrl-C printed a KeyboardInterrupt traceback ("Exception ignored in atexit
    callback"), a late SIGTERM killed the process (-15)."""
    proc = cli_process([*lead, "verify", "missing.jpg"], tmp_path, module="tests.exit_held")
    err = signal_at_exit(proc, sig)
    assert proc.returncode == 2, err  # before, python -m: -15 for SIGTERM
    assert "does not exist" in err, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


@pytest.mark.parametrize("lead", [(), ("--launch",)], ids=["python-m", "console-script"])
def test_a_late_sigterm_after_a_background_jobs_end_keeps_its_exit_code(
    tmp_path: Path, lead: tuple[str, ...]
) -> None:
    """As above, started with SIGINT ignored, as a shell starts a background job: a
    SIGTERM once the command returned ends the process with the command's exit code (2),
    no word more; SIGINT stays ignored. Before, both entry points left SIGTERM at its
    default action there: -15, though the command had finished."""
    proc = cli_process(
        [*lead, "verify", "missing.jpg"], tmp_path, ignore_sigint=True, module="tests.exit_held"
    )
    with owned(proc):
        read_line(proc, "exiting")
        proc.send_signal(signal.SIGINT)  # ignored: the teardown goes on holding
        rc, _, err = stop_by(proc, signal.SIGTERM)
    assert rc == 2, err  # before: -15
    assert "does not exist" in err, err
    assert "Traceback" not in err, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
@pytest.mark.parametrize("lead", [(), ("--launch",)], ids=["python-m", "console-script"])
def test_a_late_signal_while_python_frees_its_modules_keeps_the_commands_exit_code(
    tmp_path: Path, lead: tuple[str, ...], sig: signal.Signals
) -> None:
    """A Ctrl-C or SIGTERM that comes after the exit handlers, while the interpreter frees
    its modules (held open: tests/teardown_held.py; 0.1-0.45 s of every command on a busy
    2-core machine), ends the process with the command's own exit code (2: `prov verify`
    of a file that is not there), as one during the exit handlers does. Python has given up
    its handlers there: by the signal's default action the finished command would die
    (-2, -15)."""
    proc = cli_process([*lead, "verify", "missing.jpg"], tmp_path, module="tests.teardown_held")
    with owned(proc):
        read_line(proc, "finalizing")
        rc, _, err = stop_by(proc, sig)
    assert rc == 2, err  # not -2 or -15
    assert "does not exist" in err, err
    assert "Traceback" not in err, err
