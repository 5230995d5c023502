"""Child servers for the benches: `running` starts one and stops it after, its output
drained (tests/drain.py: a child writing to a pipe nobody reads stops once it holds 64
KiB); `enrolled_server` is a real `prov serve` with one enrolled device, for benches
that verify: it starts the server on a free port (no detector), creates and enrolls a
device in ``work``/dev, and points PROV_SERVER at it; the caller signs with `prov sign`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import psutil

from clients.api import ProvenanceClient
from clients.cli import main as prov

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # a bench runs as a script: the test helpers are not installed
    sys.path.append(str(ROOT))
from tests.drain import drain, logged, next_line  # noqa: E402  # on the path above

#: Seconds a child may take to print its ready line.
START_S = 180.0


def prov_command(*args: str) -> list[str]:
    """The command line of `prov ARGS` run by this interpreter."""
    return [sys.executable, "-m", "clients.cli", *args]


def typed(command: Sequence[str]) -> str:
    """``command`` as a person would type it, for a message: ``prov ARGS`` for a
    `prov_command`, else the command with this interpreter written ``python``."""
    words = list(command)
    if words[:3] == prov_command():
        words = ["prov", *words[3:]]
    elif words[:1] == [sys.executable]:
        words[0] = "python"
    return shlex.join(words)


def start(
    command: Sequence[str],
    ready: str = "listening on ",
    *,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """Start ``command`` in ``cwd`` with ``env`` (added to this process's environment),
    its stdout and stderr drained, and wait for its first stdout line that starts with
    ``ready``: (the process, that line's last word). Exits, saying what the child
    logged, where it ends or goes `START_S` seconds without that line."""
    proc = drain(
        subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
    )
    deadline = time.monotonic() + START_S
    while line := next_line(proc, max(0.0, deadline - time.monotonic())):
        if line.startswith(ready):
            return proc, line.split()[-1]
    stop(proc)
    raise SystemExit(f"{typed(command)} did not start (exit {proc.returncode}): {logged(proc)}")


def stop(proc: subprocess.Popen[str], timeout: float = 30) -> int:
    """Terminate ``proc`` and wait for it (killed past ``timeout`` seconds); its status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextmanager
def stopping(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """Yield ``proc``; `stop` it on exit."""
    try:
        yield proc
    finally:
        stop(proc)


@contextmanager
def running(
    command: Sequence[str],
    ready: str = "listening on ",
    *,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`start` ``command`` and yield (the process, its ready line's last word); `stop`
    it on exit."""
    proc, word = start(command, ready, cwd=cwd, env=env)
    with stopping(proc):
        yield proc, word


def served(db: Path) -> AbstractContextManager[tuple[subprocess.Popen[str], str]]:
    """`running` a ``prov serve`` child (no detector) on a free loopback port with its log
    in ``db``: (the process, its HOST:PORT)."""
    return running(
        prov_command("serve", "--db", str(db), "--listen", "127.0.0.1:0", "--no-detector")
    )


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
    with served(work / "bench.db") as (proc, address):
        os.environ["PROV_SERVER"] = address
        assert prov(["device", "init"]) == 0
        with ProvenanceClient(address, admin_token="bench-admin-token-0123456789") as c:
            token, _ = c.create_enrollment_token()
        assert prov(["device", "enroll", "--token", token]) == 0
        yield proc, address


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
