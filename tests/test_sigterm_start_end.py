"""SIGTERM in the last steps of `prov serve`'s start, after its database, log key and
ports are all made but before its own SIGINT/SIGTERM handlers are in place (the heap's
collection and freeze, `provenance.server.allocator.collect_cycles_rarely`), is still a
stop of the start: exit 143, "terminated (SIGTERM) while starting", and the new
database and log key removed, as the line says. Before, the KeyboardInterrupt it raised
came outside the start's clean-up: the same line and 143, with the new database, its
-wal and the log key left behind. The signal is sent by the process itself as
`gc.freeze` is called (a ``sitecustomize`` on PYTHONPATH wraps it: only that step of
`prov serve` calls it), so it lands in exactly that step."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import prov_console_script, run_python, start_server

#: Exit status of `prov serve` stopped by SIGTERM while it starts (README, "Exit codes").
EXIT_TERMINATED = 143

#: Sends this process SIGTERM as `gc.freeze` is called, then freezes.
SITECUSTOMIZE = """\
import gc, os, signal
_freeze = gc.freeze
def _term_then_freeze():
    os.kill(os.getpid(), signal.SIGTERM)
    _freeze()
gc.freeze = _term_then_freeze
"""


def _start_stopped(tmp_path: Path, sitecustomize: str) -> Path:
    """`prov serve` of a new database in ``tmp_path/work``, as the console script, with
    ``sitecustomize`` sending its signals: it must end "terminated (SIGTERM) while
    starting", 143, leaving neither the database nor its log key. Returns the database."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(sitecustomize)
    work = tmp_path / "work"
    work.mkdir()
    db, key = work / "provenance.db", work / "provenance.db.logkey.pem"
    args = ["serve", "--db", str(db), "--listen", "127.0.0.1:0", "--no-detector"]
    run = run_python(["-c", prov_console_script(), *args], work, timeout=120, site=site)
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == EXIT_TERMINATED, (run.returncode, run.stdout, run.stderr)
    assert "listening on" not in run.stdout, run.stdout
    assert run.stderr.strip().splitlines()[-1].startswith("terminated (SIGTERM) while starting")
    assert not db.exists() and not key.exists(), (sorted(os.listdir(work)), run.stderr)
    return db


def test_sigterm_as_the_start_ends_removes_the_new_database_and_key(tmp_path: Path) -> None:
    db = _start_stopped(tmp_path, SITECUSTOMIZE)
    again = start_server(db)  # a second start makes them afresh and opens
    assert again.stop() == 0, again.stderr


#: Sends this process the signal FIRST as `gc.freeze` is called (in the start's last
#: step), then SECOND as the start's clean-up removes its first file (`os.unlink`).
_TWO_SIGNALS = """\
import gc, os, signal
_freeze, _unlink = gc.freeze, os.unlink
_stopping = []
def _first_then_freeze():
    _stopping.append("first")
    os.kill(os.getpid(), signal.FIRST)
    _freeze()
def _second_then_unlink(path, *args, **kwargs):
    if _stopping == ["first"]:
        _stopping.append("second")
        os.kill(os.getpid(), signal.SECOND)
    return _unlink(path, *args, **kwargs)
gc.freeze, os.unlink = _first_then_freeze, _second_then_unlink
"""

#: A Ctrl-C in the start's last step, then SIGTERM during the clean-up.
SITECUSTOMIZE_INT_THEN_TERM = _TWO_SIGNALS.replace("FIRST", "SIGINT").replace("SECOND", "SIGTERM")

#: SIGTERM in the start's last step, then a Ctrl-C during the clean-up.
SITECUSTOMIZE_TERM_THEN_INT = _TWO_SIGNALS.replace("FIRST", "SIGTERM").replace("SECOND", "SIGINT")


def test_sigterm_while_a_ctrl_c_stops_the_start_does_not_cut_its_clean_up(
    tmp_path: Path,
) -> None:
    """A Ctrl-C in `prov serve`'s start stops it, and its clean-up removes the new
    database and log key; a SIGTERM during that clean-up (systemd's or `make web`'s stop
    after a Ctrl-C to the process group) is only noted, as a second SIGTERM is: the
    clean-up ends, and the line says so truly. Before, that SIGTERM raised
    KeyboardInterrupt in the clean-up: "terminated (SIGTERM) while starting: ... is
    removed", with the new database and its log key left there."""
    _start_stopped(tmp_path, SITECUSTOMIZE_INT_THEN_TERM)


def test_ctrl_c_while_a_sigterm_stops_the_start_does_not_cut_its_clean_up(
    tmp_path: Path,
) -> None:
    """The other way round: SIGTERM in `prov serve`'s start stops it, and a Ctrl-C during
    its clean-up (a user's Ctrl-C just as systemd or `make web` stops it) is only noted:
    the clean-up ends, the new database and log key are removed, and the line
    "terminated (SIGTERM) while starting: ... is removed" and 143 are true. Before, that
    Ctrl-C's KeyboardInterrupt cut the clean-up short, leaving them there."""
    _start_stopped(tmp_path, SITECUSTOMIZE_TERM_THEN_INT)
