"""Shared fixtures: real servers on loopback ports, real keys, real database files."""

from __future__ import annotations

import base64
import itertools
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import grpc
import numpy as np
import pytest

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from clients.demo import DemoFiles, prepare
from clients.device import DeviceHome, DeviceState
from provenance.c2pa.authority import issue_device_certificate, load_authority
from provenance.core.binding import PerceptualHash
from provenance.core.claims import Claim, HardBinding, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.keys import DeviceKey
from provenance.v1 import provenance_pb2 as pb
from provenance.wire import convert as wire
from provenance.wire.contract import RETRY_AFTER_KEY
from tests.drain import Drained, drain, drain_stderr, drain_stdout, logged, next_line
from tests.pgserver import PgServer
from tests.pgserver import missing_reason as pg_missing_reason
from tests.stopping import owned, stop_by

ROOT = Path(__file__).resolve().parents[1]

# Rich draws an error box COLUMNS wide (80 when unset) and wraps a long path inside it;
# where the wrap falls depends on the temporary folder's name (longer under pytest-xdist's
# popen-gwN folders), so a test looking for a phrase in a box could pass or fail by the
# folder. Every test and every process it starts sees 400 columns unless it says otherwise.
os.environ["COLUMNS"] = "400"
FIXTURES = ROOT.parent / "shared" / "fixtures"
SAMPLES = ROOT / "clients" / "samples"
ADMIN_TOKEN = "test-admin-token-0123456789"
PASSPHRASE = "correct horse battery staple"


def enroll_key(client: ProvenanceClient, label: str = "") -> DeviceKey:
    """A fresh device key enrolled through ``client`` (which holds the admin token), under
    the enrollment token's ``label`` (the device's name in the registry)."""
    key = DeviceKey.generate()
    token, _ = client.create_enrollment_token(label=label)
    client.enroll(token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode()))
    return key


def certified_device(folder: Path, ca: Path) -> tuple[DeviceHome, DeviceState, bytes]:
    """A device key made in ``folder``/dev (passphrase `PASSPHRASE`) and its PEM chain
    from the (unencrypted) authority in ``ca``, also written to ``folder``/chain.pem, for
    `prov device enroll --certificate`."""
    home = DeviceHome(folder / "dev")
    state, _ = home.init(PASSPHRASE.encode())
    chain = issue_device_certificate(
        load_authority(ca), bytes.fromhex(state.public_key), state.device_id, now=datetime.now(UTC)
    )
    (folder / "chain.pem").write_bytes(chain)
    return home, state, chain


def signed_claim(
    key: DeviceKey, seq: int, sha: bytes | None = None, prev: bytes = b""
) -> SignedClaim:
    """A validly signed claim for a made-up capture (random SHA-256 unless given)."""
    claim = Claim(
        device_id=key.key_id,
        sequence=seq,
        captured_at=datetime.now(UTC),
        media_type="image/jpeg",
        size_bytes=10,
        hard_binding=HardBinding(sha256=sha if sha is not None else os.urandom(32)),
        soft_bindings=(PerceptualHash("pdq", bytes(32), 0),),  # a flat picture's
        width=4,
        height=3,
        prev_claim_hash=prev,
    )
    return sign_claim(key, claim)


def sign_claim(key: DeviceKey, claim: Claim) -> SignedClaim:
    """``claim`` serialized once and signed by ``key``, as a device does."""
    data = wire.encode_claim(claim)
    return SignedClaim(
        PAYLOAD_TYPE_CLAIM, data, key.key_id, sign_payload(key, PAYLOAD_TYPE_CLAIM, data)
    )


@dataclass
class ServerProc:
    """A `prov serve` child process on a loopback port. ``log``: its stderr, read as it
    is written (`drain_stderr`; ``proc.stderr`` is then None): read it with `stderr`."""

    proc: subprocess.Popen[str]
    address: str
    db: Path | str
    log: Drained | None = None
    out: Drained | None = None  # its stdout, drained, where it was (`start_server`)
    #: whether it still ran when `stop` was first called (None: not called yet)
    ran_to_stop: bool | None = None

    def stderr(self) -> str:
        """The server's stderr (its log): all of it once the server stopped (this waits
        up to 20 s for its end), what came so far while it runs; its start and its end
        past 2 MiB (`tests.drain.Drained`)."""
        if self.log is None:  # piped by whoever started it, and not drained
            assert self.proc.stderr is not None, "the server's stderr was not piped"
            return self.proc.stderr.read()
        if self.proc.poll() is not None:
            self.log.wait()
        return self.log.text()

    def stop(self, sig: int = 15) -> int:
        if self.ran_to_stop is None:
            self.ran_to_stop = self.proc.poll() is None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(db: Path | str, *extra: str, env: dict[str, str] | None = None) -> ServerProc:
    """Start `prov serve --db DB --listen 127.0.0.1:0` and wait for its address line.

    ``db``: a SQLite path, or a PostgreSQL URL from the ``pg_url`` fixture (its log key
    file is added)."""
    full_env = {**os.environ, "PROV_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})}
    if isinstance(db, str) and "--log-key" not in extra:
        extra = ("--log-key", str(PG_LOG_KEYS[db]), *extra)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clients.cli",
            "serve",
            "--db",
            str(db),
            "--listen",
            "127.0.0.1:0",
            "--no-detector",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        cwd=ROOT,
    )
    log = drain_stderr(proc)
    lines = drain_stdout(proc)
    deadline = time.monotonic() + 60
    while (line := lines.next_line(max(0.0, deadline - time.monotonic()))) is not None:
        if line.startswith("listening on "):
            _STARTED.append(ServerProc(proc, line.split()[-1], db, log, lines))
            return _STARTED[-1]
        if not line:  # the end of its stdout: it exits
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                break
            log.wait()
            raise RuntimeError(f"server exited {proc.returncode}: {log.text()}")
    proc.kill()
    proc.wait()
    log.wait()
    raise RuntimeError(f"server did not start in 60 s: {log.text()}")


#: The servers `start_server` started for the test running now (its report names them).
_STARTED: list[ServerProc] = []


def _server_section(srv: ServerProc) -> tuple[str, str]:
    """A failed test's report section on ``srv``: whether it ran until the test stopped
    it (or had ended before: "shutting down" in its stdout, without the test's `stop`,
    means another process signalled it), whether a TCP connection to it is accepted now
    where it still runs, its stdout and its log (the last 20,000 characters). A test
    whose call to its server failed ("Connection refused" from a server that ran and
    listened, CI of 7 December) then says which side it was."""
    code = srv.proc.poll()
    if code is None:
        host, _, port = srv.address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
                state = "running; a TCP connection to it now: accepted"
        except OSError as e:
            state = f"running; a TCP connection to it now: {e}"
    else:
        if srv.log is not None:
            srv.log.wait(5)
        state = {
            True: f"ran until the test stopped it, then exited {code}",
            False: f"had exited {code} before the test stopped it",
            None: f"exited {code}, the test not having stopped it",
        }[srv.ran_to_stop]
    out = srv.out.text() if srv.out is not None else "(not drained)"
    log = srv.log.text()[-20_000:] if srv.log is not None else "(not drained)"
    return (
        f"server {srv.address} (pid {srv.proc.pid})",
        f"{state}\n--- its stdout ---\n{out}--- its stderr ---\n{log}",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report (setup, call or teardown) carries a section on each server
    `start_server` started for it (`_server_section`), beside the client's error in its
    traceback."""
    report = yield
    if report.failed:
        report.sections.extend(_server_section(srv) for srv in _STARTED)
    if call.when == "teardown":
        _STARTED.clear()
    return report


#: SIGINT's handler, and whether it is blocked, as every test finds it (`pytest_configure`).
_SIGINT_AT_START = (signal.default_int_handler, False)


def pytest_configure(config: pytest.Config) -> None:
    """Put SIGINT to Python's handler, unblocked, in each test process, as a run from a
    terminal has it. A run launched as a background job of a non-interactive shell
    (`make test &` in a script, or a harness that starts it so) begins with SIGINT
    ignored, or blocked, and every child inherits that through fork and exec: in CI of 5
    December every test that stops a child with Ctrl-C failed in both workers, and
    `_sigint_as_started` named no test (tests/test_sigint_at_start.py)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


@pytest.fixture(autouse=True)
def _sigint_as_started() -> Iterator[None]:
    """Fail a test that leaves SIGINT otherwise than every test finds it (its handler,
    or blocked), and put it back. A child process inherits an ignored or blocked
    SIGINT (through fork and exec): every later test of this process that stops a `prov`
    with Ctrl-C then saw it carry on (a full run under load, 5 December: a CLI that ran to
    its 20 s connect timeout and exited 1, the demo and its server to the end with exit 0,
    a scan worker whose SIGINT handler was never given back), failing far from the cause."""
    yield
    now = (
        signal.getsignal(signal.SIGINT),
        signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []),
    )
    if now != _SIGINT_AT_START:
        handler, blocked = _SIGINT_AT_START
        signal.signal(signal.SIGINT, handler)
        how = signal.SIG_BLOCK if blocked else signal.SIG_UNBLOCK
        signal.pthread_sigmask(how, [signal.SIGINT])
        pytest.fail(f"SIGINT left as (handler, blocked) {now}, not {_SIGINT_AT_START}")


@pytest.fixture
def server_db(tmp_path: Path) -> Path | str:
    """The database `server` runs on: SQLite here; a module that overrides this with
    ``any_db`` runs its tests on both backends."""
    return tmp_path / "prov.db"


@pytest.fixture
def server(server_db: Path | str) -> Iterator[ServerProc]:
    srv = start_server(server_db)
    yield srv
    srv.stop()


@pytest.fixture
def detecting(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerProc]:
    """A `prov serve --detector` on the CPU in place of ``server``, with PROV_SERVER
    (which ``cli`` reads) pointing at it."""
    srv = start_server(tmp_path / "det.db", "--detector", "--detector-device", "cpu")
    monkeypatch.setenv("PROV_SERVER", srv.address)
    cli.server = srv.address
    yield srv
    srv.stop()


@dataclass
class Cli:
    """Runs `prov` in-process with a device home and the test credentials."""

    home: Path
    server: str
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        rc = prov_main(list(args))
        cap = self.capsys.readouterr()
        return rc, cap.out, cap.err


def device_env(patch: pytest.MonkeyPatch, home: Path, server: str) -> None:
    """Set the environment `prov` reads for a device: its folder ``home`` (PROV_HOME),
    the test passphrase and admin token, and the server address ``server`` (host:port;
    127.0.0.1:1 for one that is never reached)."""
    patch.setenv("PROV_HOME", str(home))
    patch.setenv("PROV_PASSPHRASE", PASSPHRASE)
    patch.setenv("PROV_ADMIN_TOKEN", ADMIN_TOKEN)
    patch.setenv("PROV_SERVER", server)


@pytest.fixture
def cli(
    tmp_path: Path,
    server_db: Path | str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """`prov` in-process with a device home in tmp_path/device, talking to ``server``; in
    a test of ``ca_server`` or ``detecting``, to that server once it has started (until
    then to a closed port: ``ca_server``'s `admin ca init` reaches no server), so no plain
    server is started only to be stopped (29 tests, about 2 s each). ``server`` is asked
    for when the test runs, so ``server_db`` is named here: a module whose ``server_db``
    is ``any_db`` runs each test of ``cli`` on both backends, as when ``cli`` named
    ``server``."""
    del server_db  # ``server`` uses it; named for the parametrisation alone
    home = tmp_path / "device"
    if {"ca_server", "detecting"} & set(request.fixturenames):
        address = closed_port()
    else:
        address = request.getfixturevalue("server").address
    device_env(monkeypatch, home, address)
    return Cli(home, address, capsys)


def hide_writes(patch: pytest.MonkeyPatch, path: Path) -> None:
    """Make ``path``'s file look, to ``os.stat`` and ``os.fstat``, as it is now whatever is
    written to it later: a filesystem whose timestamps do not show a write (FAT keeps
    times to 2 s, older kernels to a clock tick). Another file (a new inode renamed over
    ``path``) is reported as it is."""
    old = os.stat(path)
    real_stat, real_fstat = os.stat, os.fstat

    def unseen(st: os.stat_result) -> os.stat_result:
        return old if (st.st_dev, st.st_ino) == (old.st_dev, old.st_ino) else st

    patch.setattr(os, "stat", lambda *a, **k: unseen(real_stat(*a, **k)))
    patch.setattr(os, "fstat", lambda fd: unseen(real_fstat(fd)))


@pytest.fixture
def ca_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> Iterator[ServerProc]:
    """A server with an enrollment authority (its key encrypted, the passphrase in
    $PROV_CA_PASSPHRASE for `ca init` and every server started), and a device enrolled
    with it; ``cli`` talks to it."""
    monkeypatch.setenv("PROV_CA_PASSPHRASE", "the authority's passphrase")
    rc, pem, err = cli("admin", "ca", "init", "--dir", str(tmp_path / "ca"))
    assert rc == 0 and "BEGIN CERTIFICATE" in pem, err
    srv = start_server(tmp_path / "ca.db", "--ca", str(tmp_path / "ca"))
    monkeypatch.setenv("PROV_SERVER", srv.address)
    cli.server = srv.address
    assert cli("device", "init")[0] == 0
    rc, token, err = cli("admin", "enroll-token")
    assert rc == 0, err
    rc, out, err = cli("device", "enroll", "--token", token.strip())
    assert rc == 0 and "certificate saved" in out, err
    yield srv
    srv.stop()


@pytest.fixture
def enrolled(cli: Cli) -> Cli:
    """A device initialised and enrolled with the running server."""
    return enroll(cli)


def enroll(cli: Cli, label: str = "test-camera") -> Cli:
    """``cli``'s device initialised and enrolled, as ``label``, with its server (through
    the environment `device_env` set): the ``enrolled`` fixture's steps, for a test's
    second device. Returns ``cli``."""
    rc, _, err = cli("device", "init")
    assert rc == 0, err
    rc, token, err = cli("admin", "enroll-token", "--label", label)
    assert rc == 0, err
    rc, _, err = cli("device", "enroll", "--token", token.strip())
    assert rc == 0, err
    return cli


def sign_sample(cli: Cli, folder: Path, name: str = "rocket.jpg") -> tuple[Path, str]:
    """Copy the sample ``name`` into ``folder`` and sign it with the device of ``cli``
    (enrolled: the claim is logged). Returns the copy and the device id (hex)."""
    photo = Path(shutil.copy(SAMPLES / name, folder / name))
    rc, _, err = cli("sign", str(photo))
    assert rc == 0, err
    return photo, DeviceHome(cli.home).state().device_id


# ---------------------------------------------------------------- PostgreSQL

#: The log key file of each PostgreSQL database the fixtures made (servers share it).
PG_LOG_KEYS: dict[str, Path] = {}


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server for the session; its tests fail, saying what to install,
    where the Debian package is not installed (`.ci/run` installs it)."""
    reason = pg_missing_reason()
    if reason is not None:
        pytest.fail(f"{reason}: apt-get install postgresql (as .ci/run does)")
    srv = PgServer.start()
    yield srv
    srv.stop()


@pytest.fixture
def pg_url(pg_server: PgServer, tmp_path: Path) -> str:
    """A fresh PostgreSQL database (URL) with a log key file for its servers."""
    url = pg_server.new_database()
    PG_LOG_KEYS[url] = tmp_path / "pg.logkey.pem"
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """A database on each backend in turn: a SQLite path, then a PostgreSQL URL."""
    if request.param == "sqlite":
        return tmp_path / "prov.db"
    return str(request.getfixturevalue("pg_url"))


if TYPE_CHECKING:
    from tests.inproc import InProc


@pytest.fixture
def inproc(tmp_path: Path) -> Iterator[InProc]:
    """`ProvenanceService` in-process on a temporary SQLite store (tests/inproc.py)."""
    from tests.inproc import open_inproc

    h = open_inproc(tmp_path)
    yield h
    h.service.close()


# ---------------------------------------------------------------- web (issue 13)


#: The sockets holding `closed_port`'s ports, bound and never listening, for as long as
#: the test process runs.
_CLOSED_PORTS: list[socket.socket] = []


def closed_port() -> str:
    """A loopback address nothing listens on: HOST:PORT. Its port stays bound by this
    process without listening (a connection to it is refused, as to a closed one), so no
    server another test starts meanwhile can be given it by the kernel; bound and closed
    at once, as before, it was free for the next bind to port 0, such as a server of the
    other pytest-xdist worker, which a test meaning to reach nothing then reached."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _CLOSED_PORTS.append(s)
    return f"127.0.0.1:{s.getsockname()[1]}"


def cli_process(
    args: Iterable[str],
    cwd: Path = ROOT,
    start_new_session: bool = False,
    ignore_sigint: bool = False,
    soft_open_files: int | None = None,
    env: Mapping[str, str] | None = None,
    module: str = "clients.cli",
    site: Path | None = None,
) -> subprocess.Popen[str]:
    """`prov ARGS` in a child process (``python -m clients.cli``, this checkout first on
    its path, 400 columns so that no message wraps), stdout and stderr piped as text and
    drained (`tests.drain.drain`: read them with `read_line`, `tests.drain.finish`);
    ``start_new_session`` as `subprocess.Popen` takes it; ``ignore_sigint``: started with
    SIGINT ignored, as a shell starts a background job (``sh -c 'trap "" INT; exec ...'``,
    the same pid); ``soft_open_files``: started under that soft RLIMIT_NOFILE, its hard
    limit as it is (``sh -c 'ulimit -S -n N; exec ...'``); ``env``: variables set in its
    environment beside this process's (``PYTHONFAULTHANDLER=1``: a SIGABRT dumps every
    thread's stack to its stderr); ``module``: run in its place (``python -m MODULE
    ARGS``; tests/sigint_held.py runs `prov` so); ``site``: a folder put before this
    checkout on its PYTHONPATH, whose ``sitecustomize.py`` runs as the child starts (as
    `run_python`'s).

    Never `subprocess.Popen`'s ``preexec_fn`` in this test process: it makes Python
    fork() instead of vfork(), grpcio's fork handlers then restart gRPC's poller in the
    child, and closing the inherited descriptors before exec pulls its epoll descriptor
    away: the child aborts ("epoll_wait error: Bad file descriptor") before it runs
    anything, about 1 start in 100 once this process holds gRPC channels (grpc/grpc issue
    43055; CI of 0b3c766 lost two witness starts so)."""
    command = [sys.executable, "-m", module, *args]
    if ignore_sigint:
        command = ["/bin/sh", "-c", 'trap "" INT; exec "$@"', "sh", *command]
    if soft_open_files is not None:
        limit = f'ulimit -S -n {soft_open_files} && exec "$@"'
        command = ["/bin/sh", "-c", limit, "sh", *command]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {}), "PYTHONPATH": _python_path(site), "COLUMNS": "400"},
        start_new_session=start_new_session,
    )
    return drain(proc)


def _python_path(site: Path | None) -> str:
    """The PYTHONPATH of a child: this checkout, after ``site`` where given."""
    return os.pathsep.join([str(ROOT)] if site is None else [str(site), str(ROOT)])


def run_python(
    args: Iterable[str], cwd: Path, timeout: float, site: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` (this interpreter, e.g. ``["-c", CODE]``) run to its end in ``cwd``
    with this checkout on its PYTHONPATH, after the folder ``site`` where given: a
    ``sitecustomize.py`` there runs as the child starts, so a test can change one step
    of it without replacing any code of ours. Its stdout and stderr are captured as
    text; its exit status is not checked. Raises `subprocess.TimeoutExpired` (the child
    killed) past ``timeout`` seconds."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": _python_path(site)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_line(proc: subprocess.Popen[str], prefix: str, timeout: float = 90) -> str:
    """The last word of the first stdout line of ``proc`` starting with ``prefix``
    (`tests.drain.next_line`: drained or not). Raises RuntimeError (``proc`` killed when
    no such line came in ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while (line := next_line(proc, max(0.0, deadline - time.monotonic()))) is not None:
        if line.startswith(prefix):
            return line.split()[-1]
        if not line:  # the end of its stdout: it exits, or closed it
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                break
            raise RuntimeError(f"process exited {proc.returncode}: {logged(proc)}")
        if time.monotonic() >= deadline:
            break
    proc.kill()
    raise RuntimeError(f"no {prefix!r} line in {timeout} s")


def signal_at_exit(proc: subprocess.Popen[str], sig: int, timeout: float = 120) -> str:
    """Send ``sig`` to ``proc``, a `prov` run by tests/exit_held.py, once its command has
    returned (its "exiting" line: the process ends, its teardown held open); its stderr
    once it has ended within ``timeout`` seconds (else TimeoutExpired). It is killed on
    the way out if still running (`tests.stopping.owned`)."""
    with owned(proc):
        read_line(proc, "exiting")
        return stop_by(proc, sig, timeout)[2]


def pacer_refusal(error: BaseException | None, flag: str, deadline: float) -> float:
    """The seconds to wait that ``error`` (a gRPC call's exception, None when it was
    answered) gives in its ``RETRY_AFTER_KEY`` trailer, once checked to be a `ReadPacer`
    refusal: RESOURCE_EXHAUSTED, naming ``flag`` (the `prov serve` option), asking to wait
    past ``deadline`` (the call's, seconds) and at most a minute. Raises AssertionError."""
    assert isinstance(error, grpc.RpcError), error
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, (error.code(), error.details())
    assert flag in (error.details() or ""), error.details()
    trailers = {m.key: m.value for m in error.trailing_metadata() or ()}
    retry = float(trailers[RETRY_AFTER_KEY])
    assert deadline < retry <= 60, trailers
    return retry


def pacer_refuses_behind_a_held_call(
    start: Callable[[float], Any], srv: ServerProc, flag: str, rpc: str, refill_s: float
) -> None:
    """With the flooding client's bucket empty and one of its calls held waiting its turn
    (one refill, ``refill_s`` seconds), check that the calls of it that ``start`` makes
    (given a deadline, seconds; returns the gRPC future) are refused, each by the count
    of tokens: its next call would wait 2 refills, past a deadline of 1.5 refills (had
    the held call not taken its turn's token, 1 refill: answered), and 6 more in flight
    together, each with half a refill, all; ``srv``'s /metrics count the 7 refusals of
    ``rpc``. Raises AssertionError."""
    probe = start(1.5 * refill_s)
    assert pacer_refusal(probe.exception(), flag, 1.5 * refill_s) <= 2 * refill_s
    calls = [start(refill_s / 2) for _ in range(6)]
    for call in calls:
        pacer_refusal(call.exception(), flag, refill_s / 2)
    assert read_refusals(srv, rpc) == 1 + len(calls)


def read_refusals(srv: ServerProc, rpc: str) -> float:
    """``prov_read_refusals_total{rpc=rpc}``, scraped from the /metrics of ``srv`` (started
    with --metrics-listen)."""
    with urllib.request.urlopen(read_line(srv.proc, "metrics on "), timeout=10) as r:
        text = r.read().decode()
    found = re.search(rf'^prov_read_refusals_total\{{rpc="{rpc}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def rpc_calls(url: str, rpc: str) -> int:
    """How many ``rpc`` calls (a method name: ``GetLogKey``) the server whose /metrics is
    at ``url`` answered, whatever their status (``prov_rpc_requests_total``)."""
    with urllib.request.urlopen(url, timeout=30) as r:
        text = r.read().decode()
    found = re.findall(rf'^prov_rpc_requests_total\{{[^}}]*rpc="{rpc}"[^}}]*\}} (\S+)$', text, re.M)
    return sum(int(float(value)) for value in found)


@contextmanager
def witness_serve(
    tmp_path: Path,
    log_vkey: str,
    stderr: list[str] | None = None,
    max_file_bytes: int | None = None,
) -> Iterator[tuple[str, str]]:
    """A `prov witness serve` (named witness.test/w1, key and state in ``tmp_path``) of
    the log ``log_vkey`` on a loopback port: (its URL, its cosigner key); stopped after,
    its whole stderr (its log) then appended to ``stderr`` when given. ``max_file_bytes``:
    the process's RLIMIT_FSIZE (a write past it fails with EFBIG, as on a full disk)."""

    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "witness", "serve", "--key",
         str(tmp_path / "witness.pem"), "--log-key", log_vkey, "--state",
         str(tmp_path / "wstate"), "--name", "witness.test/w1", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    log = drain_stderr(proc)
    drain_stdout(proc)
    if max_file_bytes is not None:  # set from here: no preexec_fn (see cli_process)
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    try:
        vkey = _first_line(proc, log, "witness key ")
        yield _first_line(proc, log, "witness on "), vkey
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.wait()
        if stderr is not None:
            stderr.append(log.text())


def wait_cosigned(address: str, size: int) -> tuple[str, int]:
    """The server's cosigned checkpoint and its quorum, once the checkpoint covers
    ``size`` entries (within 60 s; else AssertionError)."""
    from provenance.log.checkpoint import NoteVerifier, open_checkpoint

    deadline = time.monotonic() + 60
    with ProvenanceClient(address) as c:
        verifier = NoteVerifier.from_vkey(c.log_key()[0])
        while time.monotonic() < deadline:
            note, quorum, _ = c.cosigned_checkpoint()
            if note and open_checkpoint(note, verifier).size >= size:
                return note, quorum
            time.sleep(0.05)
    raise AssertionError(f"no cosigned checkpoint of {size} entries in 60 s")


def _first_line(proc: subprocess.Popen[str], log: Drained, prefix: str) -> str:
    """`read_line` of ``proc``, whose stderr ``log`` drains: a failure says what it
    logged. Raises RuntimeError (``proc`` killed)."""
    try:
        return read_line(proc, prefix)
    except RuntimeError as e:
        proc.kill()
        proc.wait()
        log.wait()
        raise RuntimeError(f"{e}: {log.text()}") from None


def write_video(path: Path, frames: Iterable[np.ndarray], fps: int = 1, crf: int = 30) -> None:
    """Encode RGB ``frames`` ((H, W, 3) uint8, all one size) as H.264 MP4 at ``fps``
    frames a second (libx264 ultrafast, ``crf``)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(
            "libx264", rate=fps, options={"crf": str(crf), "preset": "ultrafast"}
        )
        rest = iter(frames)
        first = next(rest)
        stream.width, stream.height, stream.pix_fmt = first.shape[1], first.shape[0], "yuv420p"
        for pixels in itertools.chain([first], rest):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_slow_video(path: Path, seconds: int = 140, fps: int = 30) -> None:
    """Write a WebM (VP8) of ``seconds`` of flat grey 3840x2160 frames at ``fps`` that is
    cheap to build and slow to verify: one key frame, then one inter frame's packet (every
    block skipped, so the picture stays the same) muxed again for every later frame.
    Every frame is decoded (4K, about 3 ms each here) and each 1 Hz sample converted and
    PDQ-hashed, all within the decoding budgets (140 s: 1.16 billion sampled and 34.8
    billion decoded pixels): about 17 s a verify here in a quiet minute, built in 1 s.
    Encoding every frame instead took 43 s."""
    grey = np.full((2160, 3840, 3), 128, np.uint8)
    frame = av.VideoFrame.from_ndarray(grey, format="rgb24").reformat(format="yuv420p")
    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 3840, 2160, "yuv420p"
        encoded = []
        for i in range(2):
            frame.pts = i
            encoded += stream.encode(frame)
        encoded += stream.encode()
        key, inter = encoded[0], encoded[-1]
        for i in range(seconds * fps):
            packet = av.Packet(bytes(key if i == 0 else inter))
            packet.stream, packet.time_base = stream, key.time_base
            packet.pts = packet.dts = int(i / fps / key.time_base)
            packet.is_keyframe = i == 0
            out.mux(packet)


@pytest.fixture(scope="session")
def slow_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """140 s of flat 4K at 30 fps, every frame decoded and each 1 Hz sample hashed (about
    17 s to verify here; `write_slow_video`). Before, 140 flat 4K frames at 1 fps: 11-25
    s to verify until the frame hashing got faster, then about 3 s, less than the
    tests' deadlines, and the tests raced the video's end. Made once per test process
    for tests/test_decode_call_end.py and tests/test_decode_slot_wait.py (before, once
    per module: about 3 s here, more under a full run's load)."""
    path = tmp_path_factory.mktemp("v") / "slow4k.webm"
    write_slow_video(path)
    return path


def post_checkpoint(url: str, body: str) -> tuple[int, str]:
    """POST ``body`` to the witness at ``url`` (its /add-checkpoint): (status, reply text),
    an HTTP error's too."""
    request = urllib.request.Request(f"{url}/add-checkpoint", body.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


#: A command that runs the one after it without the capabilities that let root read or
#: list what its mode bits refuse (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so that a test
#: run as root (CI) can make a folder that cannot be listed; empty for any other user.
WITHOUT_DAC_OVERRIDE: tuple[str, ...] = (
    (
        "setpriv",
        "--inh-caps=-dac_override,-dac_read_search",
        "--bounding-set=-dac_override,-dac_read_search",
    )
    if os.geteuid() == 0
    else ()
)


def start_web(
    server: str,
    *extra: str,
    root: Path = ROOT,
    wrapper: Sequence[str] = (),
    module: Sequence[str] = ("clients.cli",),
) -> ServerProc:
    """Start `prov web --server SERVER --listen 127.0.0.1:0` of the checkout ``root``
    (this one unless a bench compares another), run by the command ``wrapper`` when given
    (`setpriv ...`: see `WITHOUT_DAC_OVERRIDE`) as ``python -m MODULE...`` (``module``:
    tests/opens_watched.py and its argument, say); its address is http://HOST:PORT."""
    proc = subprocess.Popen(
        [*wrapper, sys.executable, "-m", *module, "web", "--server", server]
        + ["--listen", "127.0.0.1:0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    log = drain_stderr(proc)
    drain_stdout(proc)
    return ServerProc(proc, _first_line(proc, log, "web on "), Path(), log)


#: Addresses `run_in_netns` gives its namespace's loopback, each in its /64: the
#: server's, three more of the same /64 (one host's, as its SLAAC and privacy addresses
#: are) and one of another /64 (another host).
NETNS_SERVER = "fd00:1::1"
NETNS_ONE_HOST = ("fd00:1::a", "fd00:1::b", "fd00:1::c")
NETNS_OTHER_HOST = "fd00:2::a"


def run_in_netns(script: str, timeout: float = 120) -> str:
    """Run ``script`` (Python source, run from the repository root) with this interpreter
    in a fresh network namespace (``unshare -n``: needs root) whose loopback holds
    `NETNS_SERVER`, `NETNS_ONE_HOST` and `NETNS_OTHER_HOST`; returns the last line it
    printed. Fails the test when no namespace can be made (a skip would pass CI as if the
    test had run) or the script exits non-zero."""
    addresses = (NETNS_SERVER, *NETNS_ONE_HOST, NETNS_OTHER_HOST)
    setup = "ip link set lo up" + "".join(
        f" && ip -6 addr add {a}/64 dev lo nodad" for a in addresses
    )
    probe = subprocess.run(["unshare", "-n", "sh", "-c", setup], capture_output=True)
    if probe.returncode != 0:
        pytest.fail(
            f"no network namespace to add IPv6 addresses in (needs root and"
            f" unshare): {probe.stderr!r}"
        )
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", f'{setup} && exec "$0" -c "$1"', sys.executable, script],
        capture_output=True, text=True, cwd=ROOT, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@dataclass
class DemoSite:
    """A `prov serve` holding the demo's signed captures, a web front-end to it, and
    the demo's files (`clients.demo.DemoFiles`)."""

    grpc: ServerProc
    web: str
    files: DemoFiles


@contextmanager
def demo_site(work: Path, web_separate: bool) -> Iterator[DemoSite]:
    """The demo's captures signed into a fresh `prov serve`, with the web app either in
    the same process (`--http`) or as a separate `prov web`."""
    extra = () if web_separate else ("--http", "127.0.0.1:0")
    srv = start_server(work / "prov.db", *extra)
    web: ServerProc | None = None
    try:
        if web_separate:
            web = start_web(srv.address)
            address = web.address
        else:
            address = read_line(srv.proc, "web on ")
        with pytest.MonkeyPatch.context() as mp:
            device_env(mp, work / "device", srv.address)
            files = prepare(work)
        yield DemoSite(srv, address, files)
    finally:
        if web is not None:
            web.stop()
        srv.stop()


def pbkdf2_iterations(pem: bytes) -> int:
    """The PBKDF2 iteration count of an encrypted PKCS#8 PEM (RFC 8018 PBKDF2-params:
    after the PBKDF2 OID, SEQUENCE { OCTET STRING salt, INTEGER iterationCount, ... })."""
    der = base64.b64decode(b"".join(pem.splitlines()[1:-1]))
    at = der.index(bytes.fromhex("06092a864886f70d01050c")) + 11  # the PBKDF2 OID
    assert der[at] == 0x30 and der[at + 2] == 0x04  # short lengths, as written
    at += 4 + der[at + 3]  # past the salt
    assert der[at] == 0x02
    return int.from_bytes(der[at + 2 : at + 2 + der[at + 1]], "big")


def refusal(address: str, method: str, request: bytes, code: grpc.StatusCode) -> str:
    """The words of the error the server at ``address`` answers ``request`` (a message's
    bytes) to ``method`` (``/provenance.v1.Service/Method``) with, asserted to be ``code``."""
    with grpc.insecure_channel(address) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        with pytest.raises(grpc.RpcError) as refused:
            call(request, timeout=30)
    said = refused.value.details() or ""
    assert refused.value.code() is code, said
    return said


#: What the hostile server answers to each method it is asked (the rest: UNIMPLEMENTED).
Answers = dict[str, Callable[[], bytes]]


class Refusal(Exception):
    """Raised by an answer of the `hostile` server: the call fails with ``code`` and
    ``details`` instead."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _Hostile(grpc.GenericRpcHandler):
    def __init__(self, answers: Answers) -> None:
        self.answers = answers

    def service(self, details: Any) -> grpc.RpcMethodHandler[Any, Any] | None:
        name = str(details.method).rsplit("/", 1)[-1]
        if name not in self.answers:
            return None
        answer = self.answers[name]
        if name in ("VerifyFile", "DetectFile"):

            def upload(requests: Iterator[bytes], context: Any) -> bytes:
                for _ in requests:
                    pass
                return answer()

            return grpc.stream_unary_rpc_method_handler(upload)

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                return answer()
            except Refusal as e:
                context.abort(e.code, e.details)

        return grpc.unary_unary_rpc_method_handler(unary)


@pytest.fixture
def hostile() -> Iterator[Callable[[Answers], str]]:
    """Starts a gRPC server answering as told (each method named in the answers, with
    the bytes of its answer: a stranger's or a hostile server, never a stand-in for the
    project's own); returns its HOST:PORT."""
    servers: list[grpc.Server] = []

    def start(answers: Answers) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(4))
        server.add_generic_rpc_handlers((_Hostile(answers),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None)


#: A relay's own answer to one unary method: (the request, the call's context, a function
#: that forwards a request to the real server) -> the answer's bytes.
RelayAnswer = Callable[[bytes, Any, Callable[[bytes], bytes]], bytes]


class _Relay(grpc.GenericRpcHandler):
    """Forwards every unary call to ``upstream`` as it is (its metadata with it, the real
    server's refusal as its own), but those of ``answers``, which it answers itself
    (forwarding, if at all, as they do); an upload (a client stream) of ``uploads`` is
    read to its end and answered with those bytes."""

    def __init__(
        self, upstream: str, answers: dict[str, RelayAnswer], uploads: dict[str, bytes]
    ) -> None:
        self.channel = grpc.insecure_channel(upstream)
        self.answers = answers
        self.uploads = uploads

    def service(self, details: Any) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = str(details.method)
        if method in self.uploads:
            answer = self.uploads[method]

            def upload(requests: Iterator[bytes], context: Any) -> bytes:
                for _ in requests:
                    pass
                return answer

            return grpc.stream_unary_rpc_method_handler(upload)
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(method)

        def forward(request: bytes) -> bytes:
            return bytes(call(request, timeout=60))

        def handle(request: bytes, context: Any) -> bytes:
            try:
                if method in self.answers:
                    return self.answers[method](request, context, forward)
                answer: bytes = call(request, timeout=60, metadata=context.invocation_metadata())
            except grpc.RpcError as e:
                context.abort(e.code(), e.details())
            return answer

        return grpc.unary_unary_rpc_method_handler(handle)


@contextmanager
def relay(
    upstream: str, answers: dict[str, RelayAnswer], uploads: dict[str, bytes] | None = None
) -> Iterator[str]:
    """HOST:PORT, while in the block, of a gRPC server on a real port in front of the real
    server at ``upstream`` (a hostile server or proxy holding its genuine evidence): it
    relays every unary call there, but answers the methods of ``answers`` (full names,
    "/provenance.v1.Captures/SubmitCapture") itself, and the uploads of ``uploads`` with
    their bytes."""
    yield from serving(_Relay(upstream, answers, uploads or {}))


#: GetEntries' full name, for a relay answering it (`paged_entries`).
GET_ENTRIES = "/provenance.v1.Log/GetEntries"


def paged_entries(by: Callable[[int, int], tuple[int, int]]) -> RelayAnswer:
    """A relay's GetEntries answer (`relay`, `GET_ENTRIES`): the real server's page of
    ``n`` entries from ``start`` cut to its first ``keep`` with ``next`` set to ``nxt``,
    where ``(keep, nxt) = by(start, n)``."""

    def answer(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        page = pb.GetEntriesResponse.FromString(forward(request))
        keep, page.next = by(page.start, len(page.entries))
        del page.entries[keep:]
        return bytes(page.SerializeToString())

    return answer


def overfull_entries(next_after: bool) -> RelayAnswer:
    """A relay's GetEntries answer (`relay`, `GET_ENTRIES`): the real server's page with
    its last entry sent once more (one entry more than asked for when the page was full),
    ``next`` after that extra entry with ``next_after``, else where the real page ended
    (as a server that ignores the limit but counts ``next`` from it would)."""

    def answer(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        page = pb.GetEntriesResponse.FromString(forward(request))
        if page.entries:
            page.entries.append(page.entries[-1])
            if next_after:
                page.next = page.start + len(page.entries)
        return bytes(page.SerializeToString())

    return answer


def serving(handler: Any) -> Iterator[str]:
    """HOST:PORT of a gRPC server on loopback answering with ``handler`` (a generic
    handler with a ``channel`` to the real server, closed after) while in the block (a
    generator: ``yield from`` it, or wrap it in a context manager)."""
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)
        handler.channel.close()


#: Another process holding a SQLite database's write lock until its stdin closes.
HOLD_SQLITE_WRITE_LOCK = (
    "import sqlite3, sys\n"
    "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "c.execute('BEGIN EXCLUSIVE')\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


def prov_console_script() -> str:
    """Python code that runs ``prov`` as its console script does: the ``prov`` entry of
    pyproject.toml's [project.scripts] imported and called, its return the exit status,
    as pip's generated script does (``python -c`` it, the arguments after it)."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        module, function = tomllib.load(f)["project"]["scripts"]["prov"].split(":")
    return f"import sys\nfrom {module} import {function}\nsys.exit({function}())\n"


def prov_script(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``prov ARGS`` started as its console script starts it (`prov_console_script`),
    under ``-X importtime`` so that a test can wait for a module to be loaded;
    ``env`` is its whole environment (PYTHONPATH set to the repository here). Its stdout
    and stderr are pipes: the caller reads stderr line by line, then communicates."""
    return subprocess.Popen(  # pipes: stderr read by the caller, then both communicated
        [sys.executable, "-X", "importtime", "-c", prov_console_script(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
