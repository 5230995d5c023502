"""SIGTERM (``kill``, systemd's stop, ``timeout``) while `prov serve` or `prov scan` is
still starting stops it cleanly: "terminated (SIGTERM)" and exit 143, as `prov scan`
does later, and nothing half made: a new SQLite database and log key that start created
are removed, so the next start makes them afresh and works. Before, the signal's default
action killed either at once (-15), `prov serve` leaving its new database and log key
behind. The commands run as their console script starts them (pyproject.toml's ``prov``
entry); the signal goes at events read from the child's stderr: right after the spawn,
once `typer` is loaded (``-X importtime``), and for `prov serve` once its start has made
the database and key ("near-duplicate index" is logged in the middle of the start). The
interpreter's own start, before any of our code runs, is not covered (the default action
then ends it, -15, with nothing made)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, closed_port, prov_script, start_server
from tests.stopping import owned, stop_by

#: Exit status of a command stopped by SIGTERM (README, "Exit codes").
EXIT_TERMINATED = 143


def _env_without_token() -> dict[str, str]:
    """This environment without PROV_ADMIN_TOKEN: `prov serve` then warns of it inside
    its start (a line to wait for)."""
    return {k: v for k, v in os.environ.items() if k != "PROV_ADMIN_TOKEN"}


def _hit(line: str, marker: str) -> bool:
    """Whether stderr ``line`` is ``marker``: "import NAME", the line ``-X importtime``
    writes once module NAME is loaded; else text the line holds."""
    if marker.startswith("import "):
        return line.startswith("import time:") and line.rsplit("|", 1)[-1].strip() == marker[7:]
    return marker in line


def _terminated_at(args: list[str], cwd: Path, marker: str | None) -> tuple[int, str, str]:
    """``prov ARGS``, SIGTERM sent once a stderr line holds ``marker`` (None: at once);
    its exit code, stdout and stderr (less ``-X importtime``'s lines). A child that ends before
    the marker is a failure of the test (the marker never came)."""
    early: list[str] = []
    with owned(prov_script(args, cwd, _env_without_token())) as proc:
        assert proc.stderr is not None
        watchdog = threading.Timer(180, proc.kill)  # a marker that never comes: no hang
        watchdog.start()
        try:
            if marker is not None:
                while line := proc.stderr.readline():
                    early.append(line)
                    if _hit(line, marker):
                        break
                assert early and _hit(early[-1], marker), "".join(early)[-3000:]
            rc, out, err = stop_by(proc, signal.SIGTERM)
        finally:
            watchdog.cancel()
    lines = "".join(early).splitlines() + err.splitlines()
    return rc, out, "\n".join(x for x in lines if not x.startswith("import time:"))


#: Where the SIGTERM goes: at once, once `typer` is imported, once the command's module
#: is, once the start has made the database and log key (a line it logs).
SERVE_POINTS = {
    "spawn": None,
    "imports": "import typer",
    "command": "import provenance.core.keyhistory",  # of provenance.server.cli's imports
    "in serve": "no admin token configured",  # said before the database is opened
    "database made": "near-duplicate index",
}


@pytest.mark.parametrize("point", list(SERVE_POINTS))
def test_sigterm_while_serve_starts_stops_it_and_keeps_nothing_half_made(
    tmp_path: Path, point: str
) -> None:
    db = tmp_path / "provenance.db"
    key = tmp_path / "provenance.db.logkey.pem"
    args = ["serve", "--db", str(db), "--listen", "127.0.0.1:0", "--no-detector"]
    marker = SERVE_POINTS[point]
    rc, out, err = _terminated_at(args, tmp_path, marker)
    assert "Traceback" not in err, err
    if rc == 0 and "listening on" in out:
        # the start ended before the signal came (its last steps raced it): the running
        # server's clean stop, its store whole (opened again below)
        assert point == "database made" and "shutting down" in out, (point, out, err)
    else:
        if point == "spawn" and rc == -signal.SIGTERM:
            pass  # the interpreter's own start: nothing of ours ran (module docstring)
        else:
            assert rc == EXIT_TERMINATED, (rc, err)
            assert err.strip().splitlines()[-1].startswith("terminated (SIGTERM)"), err
        # nothing of that start is left: no database, no log key
        assert not db.exists() and not key.exists(), (sorted(os.listdir(tmp_path)), err)
    again = start_server(db)  # a second start makes them afresh and opens
    try:
        assert db.exists() and key.exists()
    finally:
        assert again.stop() == 0, again.stderr


#: As SERVE_POINTS, for `prov scan` (it makes no file before its scan starts).
SCAN_POINTS = {"spawn": None, "imports": "import typer", "command": "import clients.scan.progress"}


@pytest.mark.parametrize("point", list(SCAN_POINTS))
def test_sigterm_while_scan_starts_says_terminated_and_exits_143(
    tmp_path: Path, point: str
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "rocket.jpg").write_bytes((SAMPLES / "rocket.jpg").read_bytes())
    report = tmp_path / "out.jsonl"
    args = ["scan", str(photos), "--report", str(report), "--server", closed_port()]
    marker = SCAN_POINTS[point]
    rc, _, err = _terminated_at(args, tmp_path, marker)
    assert "Traceback" not in err, err
    if point == "spawn" and rc == -signal.SIGTERM:
        return  # the interpreter's own start: nothing of ours ran (module docstring)
    assert rc == EXIT_TERMINATED, (rc, err)
    assert err.strip().splitlines()[-1].startswith("terminated (SIGTERM)"), err
