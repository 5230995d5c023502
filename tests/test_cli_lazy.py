"""`prov` imports a command's module only when that command runs (`clients.cli.COMMANDS`):
every command's ``--help`` stays as it was when the whole CLI was imported up front
(tests/data/prov_help.txt, first written from the eager CLI; scripts/help_golden.py
writes it again from the lazy one), ``prov --help`` lists each command by the first
sentence of its own help, and loads neither the server, the detector (torch) nor gRPC.
Real processes, but for the summaries' check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

#: Every command's help as the eager CLI printed it (scripts/help_golden.py writes it).
GOLDEN = ROOT / "tests" / "data" / "prov_help.txt"
#: The environment each help is rendered in: fixed width, no colour, no terminal.
HELP_ENV = {"COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb", "PROV_LOG_LEVEL": "INFO"}

#: Renders ``prov PATH --help`` for each path on stdin's JSON list, in one process, as
#: the golden file lays them out.
_ALL_HELP = """
import contextlib, io, json, sys
from clients.cli import main
for path in json.load(sys.stdin):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*path, "--help"])
    assert code == 0, path
    sys.stdout.write("=== " + " ".join(["prov", *path]) + "\\n" + out.getvalue())
"""


def _env() -> dict[str, str]:
    return {**os.environ, **HELP_ENV, "PYTHONPATH": str(ROOT)}


def test_every_command_help_is_as_the_eager_cli_printed_it() -> None:
    golden = GOLDEN.read_text()
    paths = [line.split()[2:] for line in golden.splitlines() if line.startswith("=== prov")]
    assert len(paths) > 30  # every command and subcommand, prov itself included
    done = subprocess.run(
        [sys.executable, "-c", _ALL_HELP],
        input=json.dumps(paths),
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
    )
    assert done.stdout == golden


def test_no_help_shows_a_python_type_for_a_value() -> None:
    """A value's type reads as Typer's plain words (``<path>``, ``<str>``, ``<int>``), never
    as a Python annotation: before, ``--home <Path>`` beside ``--report <path>``, and
    ``PATHS... <list[Path]>`` (the golden file is every help as `prov` prints it, checked
    by the test above)."""
    golden = GOLDEN.read_text()
    for leaked in ("<Path>", "<list["):
        assert leaked not in golden, [line for line in golden.splitlines() if leaked in line]


def test_each_listed_summary_is_the_first_sentence_of_its_commands_help() -> None:
    """`COMMANDS` copies each command's one line so that ``prov --help`` imports none;
    the golden file alone does not hold the copy to its source, as scripts/help_golden.py
    renders both the listing (the copies) and each command's help (its docstring): a
    docstring changed and the golden file written again passed with the listing stale."""
    from clients.cli import COMMANDS, load_command

    for name, spec in COMMANDS.items():
        assert spec.summary == load_command(name).short_help, name


def _modules_after(*argv: str) -> set[str]:
    """The modules loaded once ``prov ARGV`` has run (exit 0), in a new process."""
    code = (
        "import sys\nfrom clients.cli import main\ncode = main(sys.argv[1:])\n"
        "print('\\n'.join(sys.modules), file=sys.stderr)\nsys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=_env()
    )
    assert done.returncode == 0, done.stderr
    return set(done.stderr.split())


def _loaded(modules: set[str], *packages: str) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in packages or m in packages)


def test_prov_help_imports_no_command(tmp_path: Path) -> None:
    modules = _modules_after("--help")
    heavy = ("torch", "grpc", "numpy", "PIL", "cryptography", "detector", "uvicorn")
    assert _loaded(modules, *heavy) == []
    ours = {"clients.api", "clients.logcmd", "clients.device", "clients.scan", "clients.report"}
    assert sorted(ours & modules) == []
    assert [m for m in modules if m.startswith(("provenance.server", "provenance.web"))] == []
    # `prov log` loads the server's store, index and service only where a command reads a
    # database (`prov log audit --db`, `export-tiles`), gRPC where it calls a server, the
    # device's code where it reads a device folder: before, clients.logcmd imported them
    # all at its top, for every `prov log` and `prov receipt` command
    from provenance.log.checkpoint import generate_log_key

    key = tmp_path / "log.pem"
    generate_log_key(key, "example.org/log")
    unused = ("provenance.server", "provenance.store", "provenance.index", "clients.api")
    for argv in (
        ["log", "--help"],
        ["log", "key", "--key-file", str(key), "--origin", "x.org/log"],
    ):
        modules = _modules_after(*argv)
        assert "clients.logcmd" in modules, argv
        assert [m for m in modules if m.startswith(unused)] == [], argv
        assert _loaded(modules, "grpc", "torch", "PIL", "av", "clients.device") == [], argv


def test_a_command_imports_only_what_it_needs() -> None:
    modules = _modules_after("verify", "--help")
    assert "clients.verifycmd" in modules
    assert _loaded(modules, "torch") == []
    assert [m for m in modules if m.startswith(("provenance.server", "clients.scan"))] == []
    modules = _modules_after("log", "--help")
    assert "clients.logcmd" in modules
    assert _loaded(modules, "torch") == []
    assert [m for m in modules if m.startswith(("clients.scan", "provenance.web"))] == []


def test_a_mistyped_command_is_answered_with_the_nearest_names() -> None:
    """``prov verfy`` says "Did you mean 'verify'?", as ``prov device enrol`` does for its
    group: the lazy group holds no command until one runs, and Typer suggests only among
    those held, so the top level suggested nothing."""
    for argv, suggestion in (
        (["verfy", "x.jpg"], "Did you mean 'verify'?"),
        (["recipt"], "Did you mean 'receipt'?"),
        (["device", "enrol"], "Did you mean 'enroll'?"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "clients.cli", *argv],
            capture_output=True,
            text=True,
            env=_env(),
        )
        assert done.returncode == 2, done.stderr
        assert "No such command" in done.stderr
        assert suggestion in " ".join(done.stderr.split()), done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "clients.cli", "zzzz"], capture_output=True, text=True, env=_env()
    )
    assert done.returncode == 2
    assert "No such command 'zzzz'." in done.stderr and "Did you mean" not in done.stderr


def test_a_file_named_with_a_leading_dash_gets_a_hint(tmp_path: Path) -> None:
    """``prov sign -dash.jpg`` (a file of that name in the folder) said only "No such
    option: -d" (Click reads the name as the flags -d -a -s ...): it now asks whether a
    file was meant and says how to name one, in a group's command too. A dash option that
    names no file gets no hint."""
    (tmp_path / "-dash.jpg").write_bytes(b"not a photo")
    (tmp_path / "--long.jpg").write_bytes(b"not a photo")
    for argv, name in (
        (["sign", "-dash.jpg"], "-dash.jpg"),
        (["verify", "--long.jpg"], "--long.jpg"),
        (["device", "enroll", "--token", "T", "-dash.jpg"], "-dash.jpg"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "clients.cli", *argv],
            capture_output=True,
            text=True,
            env={**_env(), "COLUMNS": "400"},
            cwd=tmp_path,
        )
        said = " ".join(done.stderr.replace("│", " ").split())
        assert done.returncode == 2, (argv, done.stderr)
        assert "No such option" in said, (argv, said)
        assert f"a file named {name}? put `--` before it or write ./{name}" in said, (argv, said)
    done = subprocess.run(
        [sys.executable, "-m", "clients.cli", "sign", "-nofile.jpg"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "No such option: -n" in done.stderr, done.stderr
    assert "a file named" not in done.stderr, done.stderr
