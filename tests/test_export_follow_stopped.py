"""`prov log export-tiles --follow` stopped by a signal says what its folder holds: the
tree size of the checkpoint there, every tile and entry bundle that checkpoint needs on
disk, and that the same command continues; and that is true: the folder audits as a
whole tiled log of that size (`prov log audit --tiles DIR`). A second signal while it
stops says the same after its words, as `prov scan`'s says where its rows are kept.

Real CLI processes, real signals, a real SQLite log grown while the export follows it."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.cli import main as prov_main
from provenance.log.checkpoint import Checkpoint, LogSigner
from provenance.store import open_store
from tests.conftest import cli_process, read_line
from tests.drain import logged, next_line
from tests.stopping import owned, stop_by
from tests.test_tiles import ORIGIN, _fill

#: Seconds a test waits for a state of the export before it fails (generous: CI is loaded).
WAIT_S = 120.0

KEPT = (
    "{out} holds a complete tiled log of {size} entries{more}: its checkpoint and every"
    " tile and entry bundle that checkpoint needs; the same command continues the export"
)


def _size_on_disk(folder: Path) -> int:
    """The tree size of the checkpoint in ``folder``."""
    text = (folder / "checkpoint").read_text()
    return Checkpoint.parse_body(text[: text.rfind("\n\n") + 1]).size


def _audited(tmp_path: Path, folder: Path, signer: LogSigner) -> int:
    """`prov log audit --tiles FOLDER`'s exit code, the log's key pinned."""
    state = tmp_path / f"audit-{time.monotonic_ns()}.json"
    return prov_main(
        ["log", "audit", "--state", str(state), "--tiles", str(folder), "--log-key",
         signer.verifier_key()]
    )  # fmt: skip


@contextmanager
def _following(
    tmp_path: Path, seed: int, module: str = "clients.cli", lead: tuple[str, ...] = ()
) -> Iterator[tuple[LogSigner, Path, subprocess.Popen[str]]]:
    """A log of 300 entries in ``tmp_path/log.db`` and `prov log export-tiles --follow`
    of it into ``tmp_path/tiles`` (run by ``module``, given the arguments ``lead`` before
    the command's), once it said it exported them:
    (the log's signer, the folder, the process); the process is killed if still running
    after the block."""
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    db = tmp_path / "log.db"
    store = open_store(db)
    _fill(store, signer, 300, seed=seed)
    store.close()
    out = tmp_path / "tiles"
    args = ["log", "export-tiles", str(out), "--db", str(db), "--follow", "--interval", "0.1"]
    with owned(cli_process([*lead, *args], module=module)) as proc:
        line = next_line(proc, timeout=WAIT_S)
        assert line is not None and line.startswith("exported 300 entries"), line
        yield signer, out, proc


def _stopped_by(proc: subprocess.Popen[str], sig: str) -> tuple[list[str], str]:
    """``proc`` sent the signal named ``sig`` (`tests.stopping.stop_by`), once it ended:
    its stderr's lines, blanks dropped and spaces made one, and its stderr."""
    _, _, err = stop_by(proc, getattr(signal, sig), timeout=WAIT_S)
    return [" ".join(line.split()) for line in err.splitlines() if line.strip()], err


@pytest.mark.parametrize("when", ["under-way", "after"])
@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated (SIGTERM)")],
)
def test_a_stopped_export_follow_says_the_size_it_kept_and_the_folder_audits_at_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    sig: str,
    code: int,
    word: str,
    when: str,
) -> None:
    """The log grows from 300 to 3,300 entries while the export follows it, and the
    signal comes once the export of the grown log is under way (its first new full entry
    bundle on disk: most often before its checkpoint, then the partial tiles of 300 were
    dropped for full ones, read from those), or once it said it exported 3,300. Either
    way the line names the size of the checkpoint on disk, and the folder audits as a
    whole tiled log of that size. Before, the line said only "the export in DIR stands at
    its last checkpoint; the same command continues it": no size, nothing of what is on
    disk."""
    with _following(tmp_path, 3) as (signer, out, proc):
        store = open_store(tmp_path / "log.db")
        _fill(store, signer, 3000, seed=4)
        store.close()
        if when == "after":
            line = next_line(proc, timeout=WAIT_S)
            assert line is not None and line.startswith("exported 3300 entries"), line
        deadline = time.monotonic() + WAIT_S
        while not (out / "tile/entries/001").exists():  # the grown log's export under way
            assert proc.poll() is None, logged(proc)
            assert time.monotonic() < deadline, f"no export of the grown log in {WAIT_S} s"
            time.sleep(0.01)
        lines, err = _stopped_by(proc, sig)
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    size = _size_on_disk(out)
    assert size in ((300, 3300) if when == "under-way" else (3300,)), size
    assert lines[-1] == f"{word}: " + KEPT.format(out=out, size=size, more=""), err
    capsys.readouterr()
    assert _audited(tmp_path, out, signer) == 0, capsys.readouterr()
    assert f"tiled log OK: has {size} entries" in capsys.readouterr().out


def _stopped_twice(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: tuple[str, str, int, str],
    module: str,
    held: str,
    lead: tuple[str, ...] = (),
) -> tuple[list[str], str, Path]:
    """The export of `_following`, run by ``module`` (a harness that holds a moment open
    and prints ``held`` on stdout there), sent ``case``'s first signal, then its second
    once ``held`` came; checks that it ended with ``case``'s code and, last, its words
    and what the folder holds, which audits at that size. Returns its stderr's lines (as
    `_stopped_by`), its stderr and the folder."""
    first, second, code, words = case
    with _following(tmp_path, 5, module, lead) as (signer, out, proc):
        proc.send_signal(getattr(signal, first))
        read_line(proc, held, timeout=WAIT_S)
        lines, err = _stopped_by(proc, second)
    assert proc.returncode == code, err
    kept = KEPT.format(out=out, size="300", more=" or more")
    assert lines[-1] == f"{words}: stopped without finishing the clean-up; {kept}", err
    assert _size_on_disk(out) == 300
    capsys.readouterr()
    assert _audited(tmp_path, out, signer) == 0, capsys.readouterr()
    return lines, err, out


@pytest.mark.parametrize(
    "case",
    [
        ("SIGTERM", "SIGTERM", 143, "terminated again (SIGTERM)"),
        ("SIGINT", "SIGINT", 130, "interrupted again"),
    ],
)
def test_a_second_signal_while_the_export_stops_says_what_it_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: tuple[str, str, int, str]
) -> None:
    """A second signal while the stopped export still ends (its store's close held open:
    tests/close_held.py) ends it at once, saying what the folder holds after its words.
    Before, a second Ctrl-C said only "interrupted again: stopped without finishing the
    clean-up", and a second SIGTERM ended the process silently by the signal's default
    action (-15): the store was closed outside the block that handles SIGTERM."""
    # the first handled: its clean-up held
    _stopped_twice(tmp_path, capsys, case, "tests.close_held", "closing")


@pytest.mark.parametrize("lead", [(), ("--launch",)], ids=["python-m", "console-script"])
@pytest.mark.parametrize(
    "case",
    [
        ("SIGINT", "SIGINT", 130, "interrupted again"),
        ("SIGTERM", "SIGTERM", 143, "terminated again (SIGTERM)"),
        ("SIGINT", "SIGTERM", 143, "terminated (SIGTERM) while stopping after Ctrl-C"),
        ("SIGTERM", "SIGINT", 130, "interrupted (Ctrl-C) while stopping after SIGTERM"),
    ],
)
def test_a_late_second_signal_after_the_stop_was_said_exits_with_its_code(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: tuple[str, str, int, str],
    lead: tuple[str, ...],
) -> None:
    """A second signal that comes after the stopped export said what its folder holds,
    once the command returned and the process ends (its teardown held open:
    tests/exit_held.py), ends it at once with the second signal's documented code and
    words, and what the folder holds; the first line stays as it was, and true (the
    folder audits at its size). Before, the command's blocks had given the signals back
    to Python's handling on the way out: a late SIGINT raised KeyboardInterrupt wherever
    the process stood (-2 out of `clients.cli`'s main, a traceback in an exit handler), a
    late SIGTERM ended it by the default action, -15; run as the `prov` console script
    (`clients.launch`), a late Ctrl-C ended it silently with the command's code (143
    after a SIGTERM), a late SIGTERM by its default action."""
    # the command returned: its line said
    lines, err, out = _stopped_twice(tmp_path, capsys, case, "tests.exit_held", "exiting", lead)
    assert "Traceback" not in err, err
    word = {"SIGINT": "interrupted", "SIGTERM": "terminated (SIGTERM)"}[case[0]]
    assert lines[-2] == f"{word}: " + KEPT.format(out=out, size=300, more=""), err
