"""A second Ctrl-C while `prov scan` stops its workers ends it at once, saying so, with
the scan resumable; and a scan whose stop hangs after a SIGTERM ends 143, not 130.

The stop is held open for certain, not raced: the scan's fork server is stopped
(SIGSTOP), so it reaps no worker and tells the scan of no worker's end, and the scan's
wait for its workers (`clients.scan.engines._stop_workers`) never returns; only
`clients.interrupt`'s deadline (the workers' grace, 5 s, then `CTRL_C_GRACE_S`) or a
second signal ends it. Real CLI processes in a session of their own.

Before: a second Ctrl-C there did nothing (the scan ended about 35 s later,
"interrupted"), and the first said nothing of it; a SIGTERM there ended the scan
"interrupted", exit 130, the Ctrl-C's code, as the deadline knew no other signal.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.conftest import ROOT, SAMPLES, ServerProc, cli_process, read_line
from tests.drain import finish, logged
from tests.test_scan_interrupt_pool import _children, _cmdline, _gone_within, _session

#: The hint a Ctrl-C prints while the scan stops its workers.
HINT = "stopping the scan's workers (Ctrl-C again to stop at once)"
#: Seconds a stopped scan is given to end before it is held to have hung: past the
#: deadline of a hung stop (5 s of the workers' grace and `CTRL_C_GRACE_S`, 30 s).
STOP_WAIT_S = 120


def _until(done: Callable[[], bool], what: str, proc: subprocess.Popen[str]) -> None:
    """Waits until ``done()``; fails the test, with ``proc``'s stderr, when ``proc`` ends
    first or nothing came in `STOP_WAIT_S` seconds."""
    deadline = time.monotonic() + STOP_WAIT_S
    while not done():
        if proc.poll() is not None:
            raise AssertionError(
                f"the scan ended ({proc.returncode}) before {what}:\n{logged(proc)}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} in {STOP_WAIT_S} s:\n{logged(proc)}")
        time.sleep(0.01)


def _fork_server(proc: subprocess.Popen[str]) -> int:
    """The pid of the scan's fork server, once its first worker is up."""
    found: list[int] = []

    def up() -> bool:
        found[:] = [p for p in _session(proc.pid) if "forkserver" in _cmdline(p) and _children(p)]
        return bool(found)

    _until(up, "fork server with a worker", proc)
    return found[0]


@contextmanager
def _scan(args: list[str], module: str = "clients.cli") -> Iterator[subprocess.Popen[str]]:
    """`prov scan ARGS` in a session of its own (run by ``module``, as `cli_process` takes
    it); anything of it left (the fork server stopped, its workers) is let go on and must
    end with it."""
    proc = cli_process(["scan", *args], start_new_session=True, module=module)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pid in _session(proc.pid):
            os.kill(pid, signal.SIGCONT)
        left = _gone_within(proc.pid, 30)
        assert left == [], left


def _stop_hung(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    """Stop the fork server of the scan ``proc`` (its stop will hang: see the module
    docstring), then send ``sig`` to the scan. Called once the scan is past starting its
    workers (a worker's start waits for the fork server: stopped then, the scan would
    hold the signal for good, `clients.scan.engines._interrupt_after`)."""
    os.kill(_fork_server(proc), signal.SIGSTOP)
    proc.send_signal(sig)


@contextmanager
def _scan_in_its_call(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """`prov scan` of one photo (one batch: one worker started) against a socket that
    accepts and never answers, and its report's path, once a worker is in its call (the
    pool's starts are done: `_stop_hung` may be called)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLES / "rocket.jpg", photos / "r.jpg")
    report = tmp_path / "scan.jsonl"
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        server = f"127.0.0.1:{silent.getsockname()[1]}"
        args = [str(photos), "--report", str(report), "--workers", "2", "--server", server]
        with _scan(args) as proc:
            silent.settimeout(STOP_WAIT_S)
            conn, _ = silent.accept()
            with conn:
                yield proc, report


def test_sigterm_to_a_scan_whose_stop_hangs_ends_it_143(tmp_path: Path) -> None:
    """Before: "interrupted", exit 130, about 35 s after the SIGTERM."""
    with _scan_in_its_call(tmp_path) as (proc, report):
        _stop_hung(proc, signal.SIGTERM)
        _, err = finish(proc, timeout=STOP_WAIT_S)
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("terminated (SIGTERM)"), err
    assert f"the rows so far are kept in {report}" in last, err
    assert "interrupted" not in err, err
    assert HINT not in err, err  # no Ctrl-C: nobody to press it again
    assert "Traceback" not in err, err


def test_a_second_ctrl_c_while_the_scan_stops_ends_it_at_once_and_it_resumes(
    tmp_path: Path, server: ServerProc
) -> None:
    """A scan against a real server, stopped once it has rows: the first Ctrl-C says that
    its workers are being stopped and that a second Ctrl-C stops at once; the second ends
    it (130) without waiting for them (here it never could: their ends are not told),
    saying so and that the rows are kept (before: "interrupted", 130, at the deadline,
    after 35 s); its workers and fork server end with it. The report
    then holds whole rows, and --resume scans the rest: each file once, the CSV and HTML
    written, no CSV part left."""
    photos = tmp_path / "photos"
    photos.mkdir()
    names = [f"r{k:03}.jpg" for k in range(200)]
    for name in names:
        os.link(SAMPLES / "rocket.jpg", photos / name)
    report = tmp_path / "scan.jsonl"
    args = [str(photos), "--report", str(report), "--server", server.address]
    with _scan([*args, "--workers", "2", "--batch-size", "1"]) as proc:

        def has_rows() -> bool:
            return report.exists() and report.read_bytes().count(b"\n") >= 2

        _until(has_rows, "row in the report", proc)
        # both workers started (the pool starts no more): none is starting when the fork
        # server is stopped (see `_stop_hung`)
        _until(lambda: len(_children(_fork_server(proc))) == 2, "second worker", proc)
        _stop_hung(proc, signal.SIGINT)
        _until(lambda: HINT in logged(proc), "hint", proc)
        proc.send_signal(signal.SIGINT)
        _, err = finish(proc, timeout=STOP_WAIT_S)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last == (
        "interrupted again: stopped without finishing the clean-up; the rows so far are kept"
        f" in {report}; the same command with --resume continues the scan"
    ), err
    assert "Traceback" not in err, err

    lines = report.read_bytes().splitlines(keepends=True)
    kept = [json.loads(line) for line in lines if line.endswith(b"\n")]
    assert 2 <= len(kept) < len(names), len(kept)
    done = cli_process(["scan", *args, "--resume", "--workers", "2"], cwd=ROOT)
    out, err = finish(done, timeout=300)
    assert done.returncode == 0, err
    rows = [json.loads(line) for line in report.read_bytes().splitlines()]
    assert sorted(Path(row["path"]).name for row in rows) == names
    assert report.with_suffix(".csv").exists() and report.with_suffix(".html").exists()
    assert not report.with_suffix(".csv.part").exists()


def test_sigterm_while_a_worker_start_hangs_ends_the_scan_143(tmp_path: Path) -> None:
    """A SIGTERM while the pool starts a worker is held until the start is done
    (`clients.scan.engines._interrupt_after`); a start that never ends (the fork server
    stopped: tests/forkserver_held.py) must not hold it for good: the deadline runs from
    the signal, and the scan ends "terminated (SIGTERM)", 143, its fork server and
    anything else of it with it. Before, the scan ran on with the signal held (still
    running 120 s later: this test's wait ran out): no deadline, and a second SIGTERM
    or Ctrl-C was held the same way."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLES / "rocket.jpg", photos / "r.jpg")
    report = tmp_path / "scan.jsonl"
    with socket.socket() as silent:  # no worker ever gets to call it
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        server = f"127.0.0.1:{silent.getsockname()[1]}"
        args = [str(photos), "--report", str(report), "--workers", "2", "--server", server]
        with _scan(args, module="tests.forkserver_held") as proc:
            read_line(proc, "starting a worker")  # the start is in flight, and hangs
            proc.send_signal(signal.SIGTERM)
            _, err = finish(proc, timeout=STOP_WAIT_S)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("terminated (SIGTERM)"), err
    assert "Traceback" not in err, err


def test_a_sigterm_after_a_ctrl_c_while_the_scan_stops_says_so_143(tmp_path: Path) -> None:
    """A Ctrl-C stops the scan (its stop held open: see the module docstring), then a
    SIGTERM comes while it stops (a ``kill``, systemd's stop): the scan ends at once, 143
    for the SIGTERM, saying what came in that order. Before: "terminated again (SIGTERM)",
    though the first signal was a Ctrl-C and no SIGTERM came before."""
    with _scan_in_its_call(tmp_path) as (proc, report):
        _stop_hung(proc, signal.SIGINT)
        _until(lambda: HINT in logged(proc), "hint", proc)  # the Ctrl-C is in hand
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=STOP_WAIT_S)
        # the stopped fork server holds the scan's stderr open: let it go on and end (its
        # parent gone), so that the drain reads to the end now, not some 40 s later
        for pid in _session(proc.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        _, err = finish(proc, timeout=STOP_WAIT_S)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == (
        "terminated (SIGTERM) while stopping after Ctrl-C: stopped without finishing the"
        f" clean-up; the rows so far are kept in {report}; the same command with --resume"
        " continues the scan"
    ), err
    assert "again" not in err.replace(HINT, ""), err
    assert "Traceback" not in err, err
