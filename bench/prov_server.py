"""A real `prov serve` child process with one enrolled device, for benches that verify.

`enrolled_server` starts the server on a free port (no detector), creates and enrolls a
device in ``work``/dev, and points PROV_SERVER at it; the caller signs with `prov sign`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from clients.api import ProvenanceClient
from clients.cli import main as prov

ROOT = Path(__file__).resolve().parents[1]


def start_server(db: Path) -> tuple[subprocess.Popen[str], str]:
    """A ``prov serve`` child (no detector) on a free loopback port with its log in ``db``,
    and its HOST:PORT; the caller terminates it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "serve", "--db", str(db)]
        + ["--listen", "127.0.0.1:0", "--no-detector"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()[-1]


def tree_cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` and of its children still running."""
    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def wait_settled(
    proc: subprocess.Popen[str], quiet_s: float = 0.5, timeout_s: float = 60.0
) -> float:
    """Wait until ``proc`` and its children together use at most 2% of a CPU over ``quiet_s``
    seconds (at most ``timeout_s`` in all); the seconds waited. A server says it listens
    before its start is done: its pre-started video decoder process still imports PyAV and
    NumPy (about 0.3 s of CPU on the 2-core bench machine, in its first second), which a
    bench timing the server's work from its first call would otherwise share its cores
    with."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        before = tree_cpu(proc.pid)
        time.sleep(quiet_s)
        if tree_cpu(proc.pid) - before <= 0.02 * quiet_s:
            break
    return time.monotonic() - start


@contextmanager
def enrolled_server(work: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Yield (the server process, its HOST:PORT); terminate it on exit."""
    os.environ.update(
        PROV_ADMIN_TOKEN="bench-admin-token-0123456789",
        PROV_HOME=str(work / "dev"),
        PROV_PASSPHRASE="bench",
    )
    proc, address = start_server(work / "bench.db")
    try:
        os.environ["PROV_SERVER"] = address
        assert prov(["device", "init"]) == 0
        with ProvenanceClient(address, admin_token="bench-admin-token-0123456789") as c:
            token, _ = c.create_enrollment_token()
        assert prov(["device", "enroll", "--token", token]) == 0
        yield proc, address
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class PeakRss:
    """Samples a process's resident memory every ``period_s`` seconds inside a ``with``;
    ``growth`` is then the peak over the value at entry, in bytes."""

    def __init__(self, process: psutil.Process, period_s: float = 0.005) -> None:
        self._process = process
        self._period_s = period_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample)
        self.base = self.peak = 0

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self._period_s)

    def __enter__(self) -> PeakRss:
        self.base = self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        """Peak RSS minus RSS at entry, bytes."""
        return self.peak - self.base
