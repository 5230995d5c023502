"""`prov --help` and every command's help teach: each ends with an "examples:" block of
2-4 real command lines (each names only options its command has), shown as written, and
the description flows to the terminal's width (a line breaks only where the next word
would not fit; before, the docstring's own line breaks showed as ragged short lines)."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
import typer

from clients.cli import app
from clients.cli import main as prov_main
from clients.helptext import EXAMPLES

WIDTH = 80


def _commands() -> list[tuple[str, Any]]:
    """(path, command) of `prov` and every command under it."""
    found: list[tuple[str, Any]] = []

    def walk(cmd: Any, path: str) -> None:
        found.append((path, cmd))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def _resolve(words: list[str]) -> tuple[str, Any]:
    """The command an example line runs (after ``prov``), and its path."""
    cmd, path = typer.main.get_command(app), ""
    for w in words:
        sub = getattr(cmd, "commands", {}).get(w)
        if sub is None:
            break
        cmd, path = sub, f"{path} {w}".strip()
    return path, cmd


def test_every_command_has_2_to_4_examples_of_its_real_options() -> None:
    commands = _commands()
    assert len(commands) > 30
    for path, cmd in commands:
        lines = EXAMPLES.get(path, ())
        assert 2 <= len(lines) <= 4, f"prov {path}: {len(lines)} examples"
        assert cmd.epilog and cmd.epilog.startswith("examples:\n"), path
        for line in lines:
            assert len(line) <= WIDTH - 2, f"too wide for {WIDTH} columns: {line}"
            words = shlex.split(line, comments=True)
            while "=" in words[0]:  # VAR=value before the command
                words.pop(0)
            assert words[0] == "prov", line
            where, target = _resolve(words[1:])
            assert where, f"{line}: no such command"
            known = {o for p in target.params for o in (*p.opts, *p.secondary_opts)}
            for w in words:
                if w.startswith("--"):
                    assert w.split("=")[0] in known, f"{line}: prov {where} has no {w}"


@pytest.mark.parametrize("path", [p for p, _ in _commands()])
def test_help_flows_and_shows_its_examples_as_written(
    path: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    capsys.readouterr()
    assert prov_main([*path.split(), "--help"]) == 0
    out = capsys.readouterr().out
    lines = [line.rstrip() for line in out.splitlines()]
    for example in EXAMPLES[path]:
        assert f" {example}" in lines, f"prov {path} --help: {example!r} not on one line"
    # the description: from after the usage line to the first panel
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("Usage:")) + 1
    end = next((i for i, line in enumerate(lines) if line.startswith("╭")), len(lines))
    text = lines[start:end]
    for line, after in zip(text, text[1:], strict=False):
        if line.strip() and after.strip():
            room = WIDTH - 2 - len(line)
            assert len(after.split()[0]) >= room, f"prov {path}: ragged at {line!r}"
