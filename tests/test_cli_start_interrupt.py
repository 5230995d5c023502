"""Ctrl-C (SIGINT) while ``prov`` is still loading its modules prints one line,
"interrupted", and exits 130, as a Ctrl-C later in the command does. Before, the console
script imported `clients.cli` (about a second of Typer, Rich, gRPC, cryptography) before
any of the CLI's handling existed: a Ctrl-C then printed a KeyboardInterrupt traceback
and the process died of the signal.

The command is started as its console script starts it: the ``prov`` entry of
pyproject.toml's [project.scripts], imported and called as pip's generated script does.
The interpreter's own start (before any of our code runs) is no part of the check: the
child runs with ``-X importtime`` and the SIGINT is sent at a few delays after it has
loaded `typer`, the first of `clients.cli`'s heavy imports."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, closed_port, prov_script
from tests.stopping import owned

#: After `typer` is loaded: in the imports, in the command, in its exit.
DELAYS = [0.0, 0.05, 0.1, 0.2, 0.4, 0.8]


def _run(args: list[str], cwd: Path, delay: float | None) -> tuple[int, str, str]:
    """``prov ARGS``; with ``delay``, SIGINT sent that many seconds after the child has
    imported `typer`. Its exit code, stdout and stderr (less ``-X importtime``'s lines)."""
    early: list[str] = []
    with owned(prov_script(args, cwd, {**os.environ, "COLUMNS": "400"})) as proc:
        assert proc.stderr is not None
        if delay is not None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                line = proc.stderr.readline()
                early.append(line)
                if not line or line.rsplit("|", 1)[-1].strip() == "typer":
                    break
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    lines = "".join(early).splitlines() + err.splitlines()
    return proc.returncode, out, "\n".join(x for x in lines if not x.startswith("import time:"))


@pytest.mark.parametrize(
    ("args", "delays"),
    [(["--help"], DELAYS), (["verify", "rocket.jpg", "--no-detect"], DELAYS[:4])],
    ids=["help", "verify"],
)
def test_ctrl_c_while_prov_starts_says_interrupted(
    tmp_path: Path, args: list[str], delays: list[float]
) -> None:
    """At each delay: "interrupted" and exit 130, or the command's own finish (the same
    exit code and output as without Ctrl-C; or, when the signal comes after Python has
    given up its handlers in its last moments, the default end by SIGINT, which a shell
    reports as 130), never a traceback."""
    (tmp_path / "rocket.jpg").write_bytes((SAMPLES / "rocket.jpg").read_bytes())
    if args[0] == "verify":
        args = [*args, "--server", closed_port()]
    code, finished, _ = _run(args, tmp_path, None)
    assert code in (0, 1), code
    outcomes = []
    for delay in delays:
        rc, out, err = _run(args, tmp_path, delay)
        assert "Traceback" not in err, (delay, err)
        if rc == 130:
            assert err.strip().splitlines()[-1] == "interrupted", (delay, err)
            outcomes.append("interrupted")
        else:
            assert rc in (code, -signal.SIGINT), (delay, rc, err)
            assert out == finished, (delay, out)
            outcomes.append("finished")
    assert "interrupted" in outcomes, outcomes  # at least the first delay lands in imports
