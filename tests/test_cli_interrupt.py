"""Ctrl-C (SIGINT) stops a `prov` command with exit 130 and says so; `prov scan` also
says that its rows are kept and that --resume continues. Before, Typer turned the
KeyboardInterrupt into a silent exit 130: `clients.cli.main`'s "interrupted" never
printed, and a scan stopped by Ctrl-C left no word of --resume.

Real CLI processes against a real TCP socket that accepts and never answers: the
accepted connection says the command is waiting on its call, when SIGINT is sent."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES, cli_process, read_line
from tests.drain import finish
from tests.stopping import owned, stop_by

#: Seconds a command is given to end after the signal before it is held to have hung.
STOP_WAIT_S = 60


def _interrupted(
    args: list[str],
    cwd: Path,
    sig: signal.Signals = signal.SIGINT,
    module: str = "clients.cli",
    ready: str | None = None,
) -> tuple[int, str]:
    """Run ``prov ARGS --server S`` where S accepts connections and never answers; send
    ``sig`` once the command has connected (and, with ``ready``, printed a line starting
    so); its exit code and stderr. ``module``: run as `cli_process` takes it. A command still
    running `STOP_WAIT_S` after the signal fails the test with every thread's stack
    (SIGABRT: the child runs with ``PYTHONFAULTHANDLER=1``) and its stderr."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(120)
        server = f"127.0.0.1:{silent.getsockname()[1]}"
        env = {"PYTHONFAULTHANDLER": "1"}
        proc = cli_process([*args, "--server", server], cwd, env=env, module=module)
        with owned(proc):
            conn, _ = silent.accept()  # the command is in its call now
            with conn:
                if ready is not None:
                    read_line(proc, ready)
                try:
                    _, _, err = stop_by(proc, sig, timeout=STOP_WAIT_S)
                    hung = False
                except subprocess.TimeoutExpired:  # faulthandler: every thread's stack
                    _, _, err = stop_by(proc, signal.SIGABRT, timeout=30)
                    hung = True
    if hung:
        pytest.fail(
            f"still running {STOP_WAIT_S} s after {sig.name}; its stderr and stacks:\n{err}"
        )
    return proc.returncode, err


def ctrl_c_held(proc: subprocess.Popen[str], again: bool = False) -> str:
    """Ctrl-C (SIGINT) to ``proc``, a `prov` run by tests/sigint_held.py, once it holds
    gRPC's call lock ("holding"), and with ``again`` a second one once the first was
    raised there ("raised": its clean-up hangs now); ``proc``'s stderr once it has ended,
    within `STOP_WAIT_S` (else TimeoutExpired). It is killed on the way out if still
    running."""
    with owned(proc):
        read_line(proc, "holding")
        proc.send_signal(signal.SIGINT)
        if again:
            read_line(proc, "raised")
            proc.send_signal(signal.SIGINT)
        return finish(proc, timeout=STOP_WAIT_S)[1]


def test_ctrl_c_says_interrupted_and_exits_130(tmp_path: Path) -> None:
    photo = shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg")
    rc, err = _interrupted(["verify", str(photo), "--no-detect"], tmp_path)
    assert rc == 130, err
    assert err.strip().splitlines()[-1] == "interrupted", err
    assert "Traceback" not in err, err


def test_ctrl_c_that_leaves_a_grpc_lock_taken_still_ends_the_command(tmp_path: Path) -> None:
    """A Ctrl-C whose KeyboardInterrupt is raised inside ``threading.Condition.__enter__``
    after gRPC's call-state lock was taken (tests/sigint_held.py holds that moment open;
    CPython can run the handler there) leaves the lock taken: gRPC's channel thread, and
    the channel's close after it, wait for good. The command still ends, "interrupted",
    exit 130 (`clients.interrupt.ctrl_c_deadline`). Before, it hung: once in a CI run
    of the test above, and here every time (still running after 60 s, its main
    thread in ``Channel.close``, the channel thread in ``handle_event``)."""
    photo = shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg")
    args = ["verify", str(photo), "--no-detect"]
    rc, err = _interrupted(args, tmp_path, module="tests.sigint_held", ready="holding")
    assert rc == 130, err
    assert err.strip().splitlines()[-1] == "interrupted", err
    assert "Traceback" not in err, err


def test_a_second_ctrl_c_ends_a_command_whose_clean_up_hangs_at_once(tmp_path: Path) -> None:
    """The `prov verify` of the test above, hung after its first Ctrl-C: a second one ends
    it at once, "interrupted again: stopped without finishing the clean-up", exit 130.
    Before, the command was still running 120 s after the second Ctrl-C (this test's wait
    ran out): its KeyboardInterrupt likely left `ctrl_c_deadline`'s block, standing the
    deadline down, and Python's exit then waited for gRPC's stuck thread."""
    photo = shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(120)
        server = f"127.0.0.1:{silent.getsockname()[1]}"
        args = ["verify", str(photo), "--no-detect", "--server", server]
        with owned(cli_process(args, tmp_path, module="tests.sigint_held")) as proc:
            conn, _ = silent.accept()
            with conn:
                err = ctrl_c_held(proc, again=True)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "interrupted again: stopped without finishing the clean-up"
    ], err


@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
)
def test_a_stopped_scan_points_to_resume(
    tmp_path: Path, sig: signal.Signals, code: int, word: str
) -> None:
    """Ctrl-C, and SIGTERM (``kill``, ``timeout 1h prov scan ...``, a scheduler ending the
    job) as Ctrl-C with its own word and exit 143 (128 + 15), say that the rows are kept
    and that --resume continues. Before, SIGTERM ended the process where it stood: exit
    -15, and with a pool Python's 'leaked semaphore objects' warning its only output."""
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg")
    report = tmp_path / "scan.jsonl"
    args = ["scan", str(tmp_path), "--report", str(report), "--workers", "0"]
    rc, err = _interrupted(args, ROOT, sig)
    flat = " ".join(err.split())
    assert rc == code, err
    assert (
        f"{word}: the rows so far are kept in {report}; the same command with --resume"
        " continues the scan" in flat
    ), err
    # said once: not also main's bare "interrupted" line
    assert "interrupted" not in (line.strip() for line in err.splitlines()), err
    assert "Traceback" not in err, err


@pytest.mark.parametrize("sigint", [signal.default_int_handler, signal.SIG_IGN])
def test_sigterm_while_a_scan_starts_a_worker_waits_for_the_start(sigint: object) -> None:
    """`prov scan`'s SIGTERM (`clients.interrupt.terminate_as_interrupt`) while its pool
    starts a worker (`clients.scan.engines._interrupt_after`) is held until the start is
    done, as a Ctrl-C is, also in a scan started with SIGINT ignored (``prov scan ... &``
    in a script, then ``kill``), where SIGTERM cannot go by SIGINT. Before, that scan's
    KeyboardInterrupt was raised inside the start: the pool did not know its worker."""
    from clients.interrupt import terminate_as_interrupt
    from clients.scan.engines import _interrupt_after

    previous = signal.signal(signal.SIGINT, sigint)  # type: ignore[arg-type]
    reached: list[str] = []
    got: list[int] = []
    try:
        with pytest.raises(KeyboardInterrupt), terminate_as_interrupt(got):
            with _interrupt_after():
                os.kill(os.getpid(), signal.SIGTERM)  # its handler runs at the next line
                reached.append("the start's end")
            reached.append("past the block")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert reached == ["the start's end"], reached
    assert got == [signal.SIGTERM]


@pytest.mark.parametrize("sigint", [signal.default_int_handler, signal.SIG_IGN])
def test_sigterm_while_the_fork_server_starts_waits_for_the_start(
    sigint: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov scan`'s SIGTERM (`clients.interrupt.terminate_as_interrupt`) while the fork
    server is spawned (`clients.scan.engines._start_fork_server`, SIGINT ignored then) is
    held until the spawn is done, then stops the scan as before. Before, the handler saw
    SIGINT ignored and raised KeyboardInterrupt inside ``forkserver.ensure_running``. The
    spawn is stood in for by a function that gets the SIGTERM half-way."""
    import multiprocessing.forkserver

    from clients.interrupt import terminate_as_interrupt
    from clients.scan.engines import _start_fork_server

    reached: list[str] = []

    def spawning() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs at the next line
        reached.append("the spawn's end")

    monkeypatch.setattr(multiprocessing.forkserver, "ensure_running", spawning)
    previous = signal.signal(signal.SIGINT, sigint)  # type: ignore[arg-type]
    got: list[int] = []
    try:
        with pytest.raises(KeyboardInterrupt), terminate_as_interrupt(got):
            _start_fork_server()
            reached.append("past the start")
        assert signal.getsignal(signal.SIGINT) is sigint
    finally:
        signal.signal(signal.SIGINT, previous)
    assert reached == ["the spawn's end"], reached
    assert got == [signal.SIGTERM]
