"""`clients.interrupt`: a second Ctrl-C (or SIGTERM) while the first one's clean-up runs
ends the process at once, saying so and what stays done; a SIGTERM's KeyboardInterrupt
that no command reported ends `prov` "terminated (SIGTERM)", 143.

Each case runs in a child Python process that signals itself (``os.kill`` of its own
pid: the handler runs at the next bytecode, so the order is certain) and prints what it
reached on stdout; its exit code and stderr are checked. Before: a second Ctrl-C raised
one more KeyboardInterrupt into the clean-up, or none at all (`prov sign`'s second one
started no deadline), and main said "interrupted", 130, after a SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients.interrupt import INTERRUPTED_AGAIN, TERMINATED_AFTER_CTRL_C
from tests.conftest import ROOT, SAMPLES, Cli, cli_process, read_line
from tests.stopping import owned, stop_by

_PRELUDE = """
import os, signal, sys
from clients.interrupt import (
    StopBetweenFiles, ctrl_c_deadline, ctrl_c_notes, stopped_by, terminate_as_interrupt,
)
def kill(sig):
    os.kill(os.getpid(), sig)
    for _ in range(1000):  # the handler runs between these bytecodes
        pass
"""


def _run(body: str, *python_args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *python_args, "-c", _PRELUDE + body],
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard: each case ends in a second
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_a_second_ctrl_c_in_the_clean_up_ends_the_process_at_once() -> None:
    done = _run("""
with ctrl_c_deadline(), ctrl_c_notes("the rows so far are kept\\x1b[2J in R"):
    try:
        kill(signal.SIGINT)
    except KeyboardInterrupt:
        print("cleaning up", flush=True)
        kill(signal.SIGINT)
        print("clean-up finished", flush=True)
""")
    assert done.stdout.split("\n")[:1] == ["cleaning up"], done
    assert "clean-up finished" not in done.stdout, done
    assert done.returncode == 130, done
    # the note's escape sequence shown escaped, not sent to the terminal
    assert done.stderr == (
        "interrupted again: stopped without finishing the clean-up; the rows so far are"
        " kept\\x1b[2J in R\n"
    ), done


def test_a_ctrl_c_after_the_block_is_a_first_one_again() -> None:
    """Leaving `ctrl_c_deadline` stands its deadline down: the next block's first Ctrl-C
    raises KeyboardInterrupt, as the first did."""
    done = _run("""
for k in range(2):
    with ctrl_c_deadline():
        try:
            kill(signal.SIGINT)
        except KeyboardInterrupt:
            print("stopped", k, stopped_by() == signal.SIGINT, flush=True)
""")
    assert done.returncode == 0, done
    assert done.stdout.split("\n")[:2] == ["stopped 0 True", "stopped 1 True"], done


def test_sign_s_third_ctrl_c_ends_at_once() -> None:
    """`StopBetweenFiles` (`prov sign`): the first Ctrl-C asks to stop after the file in
    hand, the second stops at once (KeyboardInterrupt) and starts the deadline, so a third
    in the clean-up that follows ends the process."""
    done = _run("""
with ctrl_c_deadline():
    try:
        with StopBetweenFiles("stopping after this file") as stop:
            kill(signal.SIGINT)
            print("asked", stop.requested, flush=True)
            kill(signal.SIGINT)
            print("not stopped", flush=True)
    except KeyboardInterrupt:
        print("stopping", stopped_by() == signal.SIGINT, flush=True)
        kill(signal.SIGINT)
        print("clean-up finished", flush=True)
""")
    assert done.stdout.split("\n")[:2] == ["asked True", "stopping True"], done
    assert done.returncode == 130, done
    assert done.stderr.splitlines() == [
        "stopping after this file",
        "interrupted again: stopped without finishing the clean-up",
    ], done


def test_a_second_sigterm_ends_the_process_at_once_143() -> None:
    """Also with SIGINT ignored (a command started in the background), where the first
    SIGTERM still raises KeyboardInterrupt and starts the deadline."""
    for ignore in ("pass", "signal.signal(signal.SIGINT, signal.SIG_IGN)"):
        done = _run(f"""
{ignore}
got = []
with ctrl_c_deadline(), terminate_as_interrupt(got):
    try:
        kill(signal.SIGTERM)
    except KeyboardInterrupt:
        print("cleaning up", got == [signal.SIGTERM], stopped_by() == signal.SIGTERM, flush=True)
        kill(signal.SIGTERM)
        print("clean-up finished", flush=True)
""")
        assert done.stdout.split("\n")[:1] == ["cleaning up True True"], done
        assert done.returncode == 143, done
        assert done.stderr == (
            "terminated again (SIGTERM): stopped without finishing the clean-up\n"
        ), done


def test_prov_says_terminated_for_a_sigterm_no_command_reported() -> None:
    """A SIGTERM's KeyboardInterrupt that leaves the command (Typer makes it an exit 130)
    is said as "terminated (SIGTERM)", exit 143, by `clients.cli.main`. A command that
    handles SIGTERM stands in: one whose block lets the KeyboardInterrupt through."""
    done = _run("""
import typer
from clients import cli
from clients.cli import main

def stand_in() -> None:
    with terminate_as_interrupt([]):
        kill(signal.SIGTERM)

cli.app = typer.Typer()
cli.app.command()(stand_in)
sys.exit(main([]))
""")
    assert done.returncode == 143, done
    assert done.stderr.strip().splitlines()[-1] == "terminated (SIGTERM)", done


def test_the_other_signal_in_the_clean_up_says_which_came_after_which() -> None:
    """A SIGTERM while the command stops after a Ctrl-C ends it at once, 143 (the
    SIGTERM's code), and a Ctrl-C after a SIGTERM, 130; each says which came after which.
    Before: "terminated again (SIGTERM)" and "interrupted again", as if the same signal
    had come twice. (A real `prov scan` so: tests/test_scan_interrupt_again.py.)"""
    said = {}
    for first, second in (("SIGINT", "SIGTERM"), ("SIGTERM", "SIGINT")):
        done = _run(f"""
got = []
with ctrl_c_deadline(), terminate_as_interrupt(got), ctrl_c_notes("the rows are kept"):
    try:
        kill(signal.{first})
    except KeyboardInterrupt:
        print("cleaning up", flush=True)
        kill(signal.{second})
        print("clean-up finished", flush=True)
""")
        assert done.stdout.split("\n")[:2] == ["cleaning up", ""], done
        said[first, second] = (done.returncode, done.stderr)
    assert said == {
        ("SIGINT", "SIGTERM"): (
            143,
            "terminated (SIGTERM) while stopping after Ctrl-C: stopped without finishing"
            " the clean-up; the rows are kept\n",
        ),
        ("SIGTERM", "SIGINT"): (
            130,
            "interrupted (Ctrl-C) while stopping after SIGTERM: stopped without finishing"
            " the clean-up; the rows are kept\n",
        ),
    }


@pytest.mark.parametrize(
    ("late", "words", "code"),
    [(signal.SIGINT, INTERRUPTED_AGAIN, 130), (signal.SIGTERM, TERMINATED_AFTER_CTRL_C, 143)],
    ids=["ctrl-c", "sigterm"],
)
@pytest.mark.parametrize("lead", [(), ("--launch",)], ids=["python-m", "console-script"])
def test_a_late_signal_after_prov_sign_stopped_says_so(
    enrolled: Cli, tmp_path: Path, lead: tuple[str, ...], late: int, words: str, code: int
) -> None:
    """A real `prov sign` of many files stopped by Ctrl-C (`StopBetweenFiles`: after the
    file in hand, its summary said) that gets a second signal once it returned, while
    the process ends (its teardown held open: tests/exit_held.py), ends as the other
    commands a Ctrl-C stopped do (docs/cli.md): "interrupted again", 130, or
    "terminated (SIGTERM) while stopping after Ctrl-C", 143. Before, that first Ctrl-C
    started no deadline (`StopBetweenFiles.check` raised KeyboardInterrupt itself), so
    the signals were given back to Python on the way out: out of ``python -m
    clients.cli`` a late Ctrl-C was a KeyboardInterrupt traceback ("Exception ignored in
    atexit callback"), a late SIGTERM its default action (-15); out of the console
    script a late Ctrl-C ended it silently, 130."""
    folder = tmp_path / "many"
    folder.mkdir()
    files = [shutil.copy(SAMPLES / "rocket.jpg", folder / f"r{k:03d}.jpg") for k in range(300)]
    with owned(cli_process([*lead, "sign", *map(str, files)], module="tests.exit_held")) as proc:
        deadline = time.monotonic() + 120
        while len(list(folder.glob("*.prov"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        read_line(proc, "exiting")  # the command returned, its summary said: the process ends
        rc, _, err = stop_by(proc, late)
    assert "Traceback" not in err, err[-2000:]
    assert rc == code, (rc, err[-2000:])
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    assert lines[-2].startswith("interrupted after "), lines[-3:]
    assert lines[-1] == words, lines[-3:]
