"""`make web` (python -m clients.webdemo): the page comes up over the demo's signed
captures, says where, and stops cleanly on Ctrl-C, even when started as a background job
of a non-interactive shell (`(make web &)`), which begins with SIGINT ignored."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from clients.demo import DemoFiles
from clients.webdemo import drop_list
from tests.conftest import ROOT, read_line, start_server
from tests.drain import drain, finish

pytestmark = pytest.mark.slow


def _kill_group(pgid: int) -> None:
    """SIGKILL whatever is left of the process group ``pgid`` (the demo and the
    `prov serve` it started), so a failing test leaves nothing running."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _last_run(tmp_path: Path) -> Path:
    """A `make web` folder as the last run left it: its marker and a database whose bytes
    a refused run must leave as they are."""
    from clients.webdemo import MARKER

    work = tmp_path / "web-demo"
    work.mkdir()
    (work / MARKER).write_text("made by `make web`\n")
    (work / "provenance.db").write_bytes(b"the previous run's log")
    return work


def _web_demo(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m clients.webdemo --dir WORK --no-detector ARGS...` run to its end (a run
    these tests expect to be refused before it starts a server)."""
    return subprocess.run(
        [sys.executable, "-m", "clients.webdemo", "--dir", str(work), "--no-detector", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_make_web_serves_the_demo_captures(tmp_path: Path) -> None:
    work = tmp_path / "web-demo"
    # started as `(make web &)` starts it: SIGINT ignored (inherited through exec), in a
    # process group of its own that the cleanup below can kill whole
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clients.webdemo", "--listen", "127.0.0.1:0"]
            + ["--grpc-listen", "127.0.0.1:0", "--no-detector", "--dir", str(work)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            start_new_session=True,
        )
        drain(proc)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        url = read_line(proc, "The verification page is at ", timeout=180)
        address = read_line(proc, "  log explorer: ", timeout=30)
        admin_hint = read_line(proc, "  for the admin commands", timeout=30)
        log_key = read_line(proc, "  log key (`prov receipt verify FILE.prov", timeout=30)
        # the README's "Using it" against make web: the admin commands too (before, its
        # admin token was drawn at random and shown nowhere: "admin credential is wrong")
        token_file = work / "admin-token"
        assert admin_hint == f"{token_file})", admin_hint  # ... PROV_ADMIN_TOKEN=$(cat FILE)
        assert token_file.stat().st_mode & 0o777 == 0o600
        env = {**os.environ, "PROV_SERVER": address}
        env["PROV_ADMIN_TOKEN"] = token_file.read_text().strip()
        enroll = subprocess.run(
            [sys.executable, "-m", "clients.cli", "admin", "enroll-token", "--label", "cam"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=120,
        )
        assert enroll.returncode == 0, enroll.stderr
        assert len(enroll.stdout.split()) == 1, enroll.stdout  # the token alone
        read_line(proc, "Ctrl-C stops", timeout=30)
        with httpx.Client(base_url=url, timeout=60) as c:
            assert "Is this the signed original?" in c.get("/").text
            assert c.get("/api/v1/checkpoint").json()["log_key"] == log_key  # the server's
            assert c.get("/api/v1/checkpoint").json()["size"] == 4  # enrollment + 3 captures
            derived = work / "newsroom" / "rocket_resized.jpg"
            r = c.post("/api/v1/verify", files={"file": (derived.name, derived.read_bytes())})
            assert r.json()["status"] == "DERIVED", json.dumps(r.json())[:400]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = finish(proc, timeout=60)
        finally:
            _kill_group(proc.pid)
    assert proc.returncode == 0
    assert "server stopped" in out
    # a second run replaces its own folder, and refuses to touch anyone else's
    other = tmp_path / "not-ours"
    other.mkdir()
    res = subprocess.run(
        # port 0: the default 8080 may be held by a `make web` someone runs on this machine
        [sys.executable, "-m", "clients.webdemo", "--dir", str(other), "--listen", "127.0.0.1:0"]
        + ["--grpc-listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert res.returncode != 0 and "was not made by `make web`" in res.stderr


def test_second_make_web_leaves_a_running_one_alone(tmp_path: Path) -> None:
    """A second `make web` on the folder of a running one refuses before touching it:
    before, it deleted the folder, and the first server went on running on a deleted database."""
    from clients.webdemo import MARKER

    work = tmp_path / "web-demo"
    work.mkdir()
    (work / MARKER).write_text("made by `make web`\n")
    srv = start_server(work / "provenance.db")  # holds provenance.db.lock, as make web's does
    try:
        second = subprocess.Popen(
            [sys.executable, "-m", "clients.webdemo", "--dir", str(work), "--no-detector"]
            + ["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            out, err = second.communicate(timeout=60)
        finally:
            _kill_group(second.pid)  # before the fix it ran a server of its own
        assert second.returncode != 0, out
        assert "another `make web` (or `prov serve`) is running on" in err
        assert "provenance.db.lock" in err
        assert (work / "provenance.db").exists() and (work / MARKER).exists()
        assert srv.proc.poll() is None
    finally:
        srv.stop()
    # once that server has stopped, its lock is free again: the folder is ours to replace
    from clients.webdemo import _fresh

    _fresh(work)
    assert sorted(p.name for p in work.iterdir()) == [MARKER]


def test_a_second_make_web_on_the_same_folder_names_the_running_one(tmp_path: Path) -> None:
    """With the gRPC port the same on every run, a second `make web` in the same folder
    found the port taken and said only "cannot listen on 127.0.0.1:50051"; it says first
    what holds it: the `make web` running there (its database lock held)."""
    from clients.webdemo import MARKER

    work = tmp_path / "web-demo"
    work.mkdir()
    (work / MARKER).write_text("made by `make web`\n")
    srv = start_server(work / "provenance.db")  # holds the lock and its port, as make web's
    try:
        second = subprocess.run(
            [sys.executable, "-m", "clients.webdemo", "--dir", str(work), "--no-detector"]
            + ["--listen", "127.0.0.1:0", "--grpc-listen", srv.address],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert second.returncode == 1, (second.stdout, second.stderr)
        assert "another `make web` (or `prov serve`) is running on" in second.stderr
        assert "cannot listen" not in second.stderr, second.stderr
        assert srv.proc.poll() is None
    finally:
        srv.stop()


def test_the_files_to_drop_line_up_with_their_verdicts(tmp_path: Path) -> None:
    """`make web` lists the files to try with their verdicts in one column (before: padded
    by hand for names in one folder, so captures/hopper.jpg's verdict stood 8 columns
    left of the newsroom copies')."""
    cap, news = tmp_path / "captures", tmp_path / "newsroom"
    files = DemoFiles(
        hopper=cap / "hopper.jpg",
        rocket=cap / "rocket.jpg",
        video=cap / "fabric.mp4",
        derived=news / "rocket_resized.jpg",
        tampered=news / "hopper_edited.jpg",
        small_video=news / "fabric_small.mp4",
        unsigned=news / "cat.png",
        generated=news / "generated.png",
    )
    lines = drop_list(files).splitlines()
    assert len(lines) == 6 and lines[0].startswith(f"    {cap / 'hopper.jpg'} "), lines
    assert len({line.index("(") for line in lines}) == 1, lines
    assert lines[0].endswith("(SIGNED_ORIGINAL)") and lines[2].endswith(
        "(TAMPERED, with its .prov sidecar)"
    ), lines


@pytest.mark.parametrize(
    ("listen", "code", "said"),
    [
        ("::1:8096", 2, "put an IPv6 address in brackets"),
        ("127.0.0.1:99999", 2, "is not HOST:PORT"),
        ("192.0.2.1:0", 1, "not an address of this machine"),
    ],
)
def test_make_web_refuses_a_bad_address_before_touching_its_folder(
    tmp_path: Path, listen: str, code: int, said: str
) -> None:
    """`make web WEB=::1:8096` (an address the server refuses) leaves the previous run's
    folder as it was: before, `_fresh` deleted it and only then did the server refuse."""
    work = _last_run(tmp_path)
    res = _web_demo(work, "--listen", listen, "--grpc-listen", "127.0.0.1:0")
    assert res.returncode == code, (res.stdout, res.stderr)
    assert said in res.stderr, res.stderr
    assert (work / "provenance.db").read_bytes() == b"the previous run's log"
    assert "working in" not in res.stdout


def test_make_web_refuses_a_grpc_address_grpc_cannot_read(tmp_path: Path) -> None:
    """`make web GRPC=0:0`: Python reads host 0 as 0.0.0.0, gRPC reads no such host; refused
    as `prov serve --listen 0:0` is (exit 2, what to write instead), the previous run's
    folder untouched. Before, the check passed, the folder was emptied and the server it
    started failed to bind."""
    work = _last_run(tmp_path)
    res = _web_demo(work, "--listen", "127.0.0.1:0", "--grpc-listen", "0:0")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "--grpc-listen: '0:0': gRPC reads an IPv4 address only as" in res.stderr, res.stderr
    assert "give 0.0.0.0:0" in res.stderr, res.stderr
    assert (work / "provenance.db").read_bytes() == b"the previous run's log"


def test_make_web_says_how_to_use_its_server_from_a_shell() -> None:
    """`make web` printed the gRPC address among the web page's links, but not what to do
    with it: a newcomer trying `prov verify` on the files it lists got "cannot reach the
    server at 127.0.0.1:50051" (make web's port was then drawn afresh each run)."""
    from clients.webdemo import shell_hint

    text = shell_hint("127.0.0.1:33467", Path("/r/.web-demo/admin-token"))
    assert "source .venv/bin/activate" in text
    assert "export PROV_SERVER=127.0.0.1:33467" in text
    assert "export PROV_ADMIN_TOKEN=$(cat /r/.web-demo/admin-token)" in text
    for command in ("prov verify FILE", "prov scan FOLDER --report scan.jsonl"):
        assert command in text, text


def test_a_second_make_web_names_a_python_that_runs_it(tmp_path: Path) -> None:
    """The refusal of a second `make web` suggests running one elsewhere; it said `python -m
    clients.webdemo`, which the system's python (no packages, or no `python` at all)
    cannot run: it names this venv's."""
    import fcntl

    from clients.webdemo import MARKER, _fresh

    work = tmp_path / "web-demo"
    work.mkdir()
    (work / MARKER).write_text("made by `make web`\n")
    with (work / "provenance.db.lock").open("wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running server holds it
        with pytest.raises(SystemExit) as refused:
            _fresh(work)
    said = str(refused.value)
    expected = (
        os.path.relpath(sys.executable, ROOT)
        if sys.executable.startswith(str(ROOT))
        else sys.executable
    )
    assert f"{expected} -m clients.webdemo --dir DIR --listen HOST:PORT" in said, said
    assert " python -m" not in said, said


@pytest.mark.skipif(shutil.which("make") is None, reason="no make here")
@pytest.mark.parametrize(
    ("setting", "other"),
    [("WEB=::1:8096", "GRPC=127.0.0.1:0"), ("GRPC=::1:8097", "WEB=127.0.0.1:0")],
)
def test_make_web_names_what_was_set_for_a_bad_address(setting: str, other: str) -> None:
    """`make web WEB=::1:8096` names WEB=, what the person typed: before, argparse's
    "usage: make web [-h] [--listen LISTEN] ..." and "argument --listen: ..." named an
    option they never saw; GRPC= (the service's address) likewise. The real Makefile's
    recipe, run by real `make` (the venv rule left out with -o, this interpreter as its
    python); a bad address is refused before the demo's folder is touched."""
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "web", setting, other, f"BIN={bin_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0, done.stdout + done.stderr
    said = done.stderr
    assert f"make web: error: {setting}: put an IPv6 address in brackets" in said, said
    assert "usage:" not in said and "-listen" not in said, said
    assert "working in" not in done.stdout


def test_make_web_serves_grpc_on_a_stable_port_and_says_when_it_is_taken(
    tmp_path: Path,
) -> None:
    """`make web` drew its gRPC port afresh each run, so the `export PROV_SERVER=...` a
    person typed in another shell went stale on every restart. It listens on 127.0.0.1:50051
    (what `prov` uses when PROV_SERVER is not set), GRPC=HOST:PORT moves it, and a port
    already taken is refused before the last run's folder is touched, naming GRPC=."""
    import socket

    shown = subprocess.run(
        [sys.executable, "-m", "clients.webdemo", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert "default: 127.0.0.1:50051" in " ".join(shown.stdout.split()), shown.stdout
    work = _last_run(tmp_path)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = f"127.0.0.1:{held.getsockname()[1]}"
        res = _web_demo(
            work, "--listen", "127.0.0.1:0", "--grpc-listen", taken, "--grpc-listen-set-by", "GRPC"
        )
    assert res.returncode == 1, (res.stdout, res.stderr)
    said = " ".join(res.stderr.split())
    assert f"make web: cannot listen on {taken}: address already in use" in said, said
    assert "set another address with GRPC=HOST:PORT" in said, said
    assert (work / "provenance.db").read_bytes() == b"the previous run's log"


@pytest.mark.parametrize(
    "web_host",
    # one spelling; a name resolving to it (was: the folder emptied, then "demo: the
    # server did not start"); every interface, which holds the port on 127.0.0.1 too
    ["127.0.0.1", "localhost", "0.0.0.0"],
)
def test_make_web_refuses_one_address_for_both_servers(tmp_path: Path, web_host: str) -> None:
    """`make web GRPC=127.0.0.1:8080` (WEB's address too) emptied the last run's folder,
    then the server refused the pair and make web said only "demo: the server did not
    start"; it is refused first, naming both settings, the folder left as it was, however
    WEB spells an address of GRPC's."""
    work = _last_run(tmp_path)
    res = _web_demo(
        work,
        *("--listen", f"{web_host}:18123", "--listen-set-by", "WEB"),
        *("--grpc-listen", "127.0.0.1:18123", "--grpc-listen-set-by", "GRPC"),
    )
    assert res.returncode == 2, (res.stdout, res.stderr)
    said = " ".join(res.stderr.split())
    assert f"make web: error: WEB={web_host}:18123 and GRPC=127.0.0.1:18123 name" in said, said
    assert (work / "provenance.db").read_bytes() == b"the previous run's log"


def test_make_web_ends_at_once_on_a_fifo_at_its_database_lock(tmp_path: Path) -> None:
    """A FIFO at ``.web-demo/provenance.db.lock``: `make web` ends at once, exit 1, saying
    what is there (as `prov serve` does), the folder untouched. Before, its check for a
    running server opened the lock file blocking, and waited for a writer until Ctrl-C."""
    work = _last_run(tmp_path)
    os.mkfifo(work / "provenance.db.lock")
    res = _web_demo(work, "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0")
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "make web: the database lock file" in res.stderr, res.stderr
    assert "provenance.db.lock is a FIFO (named pipe), not a regular file" in res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert (work / "provenance.db").read_bytes() == b"the previous run's log"
    assert "working in" not in res.stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["--listen", "foo", "--listen-set-by", "WEB", "--grpc-listen", "127.0.0.1:0"],
            "make web: error: WEB=foo is not HOST:PORT with a port 0-65535",
        ),
        (
            ["--listen", "127.0.0.1:0", "--grpc-listen", "0:0", "--grpc-listen-set-by", "GRPC"],
            "make web: error: GRPC=0:0: gRPC reads an IPv4 address only as",
        ),
    ],
)
def test_make_web_says_a_bad_address_before_a_running_one(
    tmp_path: Path, args: list[str], said: str
) -> None:
    """`make web WEB=foo` while another `make web` runs in its folder said only that the
    other one runs (exit 1); told to stop it, the person then met the bad address. The
    address is a usage error of this command line, said first (exit 2, as without a
    running one); the running server is left alone."""
    from clients.webdemo import MARKER

    work = tmp_path / "web-demo"
    work.mkdir()
    (work / MARKER).write_text("made by `make web`\n")
    srv = start_server(work / "provenance.db")  # holds provenance.db.lock, as make web's does
    try:
        res = _web_demo(work, *args)
        assert res.returncode == 2, (res.stdout, res.stderr)
        assert said in res.stderr, res.stderr
        assert "is running on" not in res.stderr, res.stderr
        assert srv.proc.poll() is None
    finally:
        srv.stop()
