"""A process killed between creating and renaming a `write_atomically` temporary file
(``.tmp-TAG-PID-RANDOM``) leaves it beside the target; the writer's next run removes
those of the same target, and only those: the exact name pattern, a regular file of this
user (never a link, never followed), of a process no longer running and not locked by a
live writer. Real writer processes killed with SIGKILL mid-write, planted leftovers of a
dead process, and the real commands: `prov witness serve`, `prov log export-tiles`,
`prov scan`, `prov sign --c2pa`; the detector secret's copies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from detector.secret import load_or_create_secret
from provenance.cli.atomicfile import (
    TEMP_NAMES,
    remove_leftovers,
    temp_name_for,
    temp_names_of,
)
from provenance.core import merkle
from provenance.log import tiles
from provenance.log.checkpoint import Checkpoint, LogSigner, generate_log_key
from provenance.store import open_store
from tests.conftest import ROOT, SAMPLES, Cli, ServerProc, post_checkpoint, witness_serve
from tests.test_tiles import ORIGIN, _fill

#: a writer of argv[1] that stops after its temporary file is written and synced, before
#: the rename: it prints the temporary file's name, then waits for a line on stdin
#: ("kill": it SIGKILLs itself, as a crash would; anything else: it goes on)
_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from provenance.cli.atomicfile import TEMP_NAMES, write_atomically

    target = Path(sys.argv[1])

    def stop():
        (name,) = [n for n in os.listdir(target.parent) if TEMP_NAMES.fullmatch(n)]
        print(name, flush=True)
        if sys.stdin.readline().strip() == "kill":
            os.kill(os.getpid(), signal.SIGKILL)

    write_atomically(target, b"new" * 100_000, before_replace=stop)
    """
)


def _writer(target: Path) -> tuple[subprocess.Popen[str], str]:
    """A `_WRITER` of ``target`` stopped before its rename, and its temporary file's name."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,  # pipes: one line, read here
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _reaped() -> int:
    """The id of a process that ran and was reaped (no process has it now)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _leftover_of(target: Path, pid: int) -> Path:
    """Plant the temporary file a writer of ``target`` of process ``pid`` left."""
    name = temp_name_for(target).split("-")
    path = target.with_name("-".join([name[0], name[1], str(pid), name[3]]))
    path.write_bytes(b"cut sh")
    return path


def test_a_writer_killed_before_its_rename_leaves_a_file_the_next_run_removes(
    tmp_path: Path,
) -> None:
    """SIGKILL between the write and the rename: the target keeps its old bytes, the
    temporary file stays (nothing of the killed process runs to remove it); the next
    run's `remove_leftovers` of that target removes it."""
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    proc, name = _writer(target)
    assert temp_names_of(target).fullmatch(name), name
    assert proc.stdin is not None
    proc.stdin.write("kill\n")
    proc.stdin.flush()
    assert proc.wait(timeout=30) == -9
    assert (tmp_path / name).is_file() and target.read_bytes() == b"old"
    assert remove_leftovers(tmp_path, temp_names_of(tmp_path / "other.json")) == []
    assert remove_leftovers(tmp_path, temp_names_of(target)) == [tmp_path / name]
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_a_live_writers_temporary_file_is_left_and_its_write_completes(tmp_path: Path) -> None:
    """A writer stopped between its write and its rename, alive: its temporary file is
    not removed (its process runs, and it holds the file's lock); it then renames it
    in place."""
    target = tmp_path / "state.json"
    proc, name = _writer(target)
    assert proc.stdin is not None
    try:
        assert remove_leftovers(tmp_path) == []
        assert (tmp_path / name).is_file()
    finally:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    assert proc.wait(timeout=30) == 0
    assert target.read_bytes() == b"new" * 100_000
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_a_locked_file_of_a_dead_looking_process_id_is_left(tmp_path: Path) -> None:
    """A live writer whose process id reads as gone here (another pid namespace, another
    machine on a shared folder) still holds its file's flock: the file stays."""
    leftover = _leftover_of(tmp_path / "state.json", _reaped())
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1]);"
         " fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
         str(leftover)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,  # pipes: one line, read here
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        assert remove_leftovers(tmp_path) == []
        assert leftover.is_file()
    finally:
        holder.communicate("", timeout=30)
    assert remove_leftovers(tmp_path) == [leftover]


def test_only_regular_files_of_the_exact_pattern_are_removed(tmp_path: Path) -> None:
    """Of names a dead process would leave: a symbolic link (to a file of that pattern
    elsewhere: neither is touched), a FIFO and a folder stay; so do names near the
    pattern (a ninth hex digit, upper case, another prefix) and a live process's file."""
    dead = _reaped()
    target = tmp_path / "state.json"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = _leftover_of(elsewhere / "state.json", dead)
    (tmp_path / victim.name).symlink_to(victim)
    fifo = _leftover_of(target, dead)
    fifo.unlink()
    os.mkfifo(fifo)
    folder = _leftover_of(target, dead)
    folder.unlink()
    folder.mkdir()
    live = _leftover_of(target, os.getpid())
    real = _leftover_of(target, dead)
    near = [real.name + "0", real.name.upper(), "x" + real.name, real.name + ".tmp"]
    for name in near:
        (tmp_path / name).write_bytes(b"")
    assert remove_leftovers(tmp_path) == [real]
    assert victim.is_file() and (tmp_path / victim.name).is_symlink()
    assert fifo.exists() and folder.is_dir() and live.is_file()
    assert all((tmp_path / name).is_file() for name in near)
    assert not TEMP_NAMES.fullmatch(real.name + "0")


def test_prov_witness_serve_removes_what_a_killed_witness_left(tmp_path: Path) -> None:
    """A state folder holding a temporary file of a killed witness (a dead process's)
    and one of a live process: the next `prov witness serve` removes the first, logs
    it, keeps the second, and cosigns as before."""
    origin = "log.test/leftovers"
    log = generate_log_key(tmp_path / "log.pem", origin)
    state = tmp_path / "wstate"
    state.mkdir()
    dead = _leftover_of(state / "0123456789abcdef0123456789abcdef.json", _reaped())
    live = _leftover_of(state / "0123456789abcdef0123456789abcdef.json", os.getpid())
    stderr: list[str] = []
    with witness_serve(tmp_path, log.verifier_key(), stderr) as (url, _):
        assert not dead.exists() and live.is_file()
        note = log.sign(Checkpoint(origin, 0, merkle.EMPTY_ROOT))
        assert post_checkpoint(url, f"old 0\n\n{note}")[0] == 200
    assert f"removed {dead}, a temporary file a killed witness left" in stderr[0], stderr
    assert [n for n in os.listdir(state) if n.startswith(".tmp-")] == [live.name]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip


def test_prov_log_export_tiles_removes_what_a_killed_export_left(tmp_path: Path) -> None:
    """An export killed while writing a partial tile (its temporary file in
    ``tile/0/001.p/``) and while writing the checkpoint: the next export over the same
    log removes both; a leftover of another file beside the checkpoint (not the
    export's) stays."""
    store = open_store(tmp_path / "a.db")
    _fill(store, LogSigner(Ed25519PrivateKey.generate(), ORIGIN), 300, seed=3)
    store.close()
    out = tmp_path / "tiles"
    export = ["log", "export-tiles", str(out), "--db", str(tmp_path / "a.db")]
    assert _cli(*export).returncode == 0
    (out / tiles.CHECKPOINT_PATH).unlink()  # as a first export killed before its checkpoint
    dead = _reaped()
    partial = next((out / "tile" / "0").glob("001.p/*"))
    in_tile = _leftover_of(partial, dead)
    beside = _leftover_of(out / tiles.CHECKPOINT_PATH, dead)
    others = _leftover_of(out / "notes.txt", dead)
    assert _cli(*export).returncode == 0
    assert not in_tile.exists() and not beside.exists()
    assert others.is_file()


def test_prov_scan_removes_what_a_scan_killed_writing_its_page_left(tmp_path: Path) -> None:
    """A temporary file of OUT.html left by a scan killed while writing the page: the
    next scan that writes the page removes it; one of another file in that folder
    stays."""
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    dead = _reaped()
    page = _leftover_of(out / "r.html", dead)
    other = _leftover_of(out / "photo.jpg", dead)
    run = _cli("scan", str(tmp_path / "empty"), "--report", str(out / "r.jsonl"),
               "--server", "127.0.0.1:1")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (out / "r.html").is_file() and not page.exists() and other.is_file()


def test_prov_sign_c2pa_removes_what_a_signing_killed_writing_the_file_left(
    ca_server: ServerProc, cli: Cli, tmp_path: Path
) -> None:
    """`prov sign --c2pa` replaces the file itself: a signing killed mid-write leaves a
    whole or partial copy of it. The next signing of that file removes such a copy of a
    dead process, not one of a live process, nor one of another file."""
    folder = tmp_path / "photos"
    folder.mkdir()
    path = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", folder / "photo.jpg"))
    dead = _reaped()
    killed = _leftover_of(path, dead)
    live = _leftover_of(path, os.getpid())
    other = _leftover_of(folder / "other.jpg", dead)
    rc, out, err = cli("sign", "--c2pa", str(path))
    assert rc == 0, (out, err)
    assert not killed.exists() and live.is_file() and other.is_file()


def test_the_detector_secret_s_killed_copies_are_removed_at_the_next_load(tmp_path: Path) -> None:
    """A start killed while creating the detector secret leaves a copy of it
    (``.NAME.PID.<8 hex>.tmp``, a secret): the next load removes a dead process's, not a
    live one's."""
    path = tmp_path / "detector.secret"
    dead = tmp_path / f".{path.name}.{_reaped()}.0123abcd.tmp"
    live = tmp_path / f".{path.name}.{os.getpid()}.0123abcd.tmp"
    for copy in (dead, live):
        copy.write_bytes(os.urandom(32))
    assert len(load_or_create_secret(path)) == 32
    assert not dead.exists() and live.is_file()
