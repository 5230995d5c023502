"""`prov --help` and every command's help teach: each ends with an "examples:" block of
2-4 real command lines (each names only options its command has), shown as written, and
the description flows to the terminal's width (a line breaks only where the next word
would not fit; before, the docstring's own line breaks showed as ragged short lines)."""

from __future__ import annotations

import functools
import re
import shlex
from typing import Any

import pytest

from clients.cli import command_tree
from clients.cli import main as prov_main
from clients.helptext import EXAMPLES

WIDTH = 80


@functools.cache
def _root() -> Any:
    """`prov`'s click command tree, built once (typer builds the whole tree on each call,
    about 0.1 s; `_resolve` runs for every example line). Only read here."""
    return command_tree()


def _commands() -> list[tuple[str, Any]]:
    """(path, command) of `prov` and every command under it."""
    found: list[tuple[str, Any]] = []

    def walk(cmd: Any, path: str) -> None:
        found.append((path, cmd))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(_root(), "")
    return found


def _resolve(words: list[str]) -> tuple[str, Any]:
    """The command an example line runs (after ``prov``), and its path."""
    cmd, path = _root(), ""
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
    assert "``" not in out, f"prov {path} --help shows a docstring's reST markup"
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


def _option_names(cmd: Any) -> list[str]:
    """Every name of every option `prov ... --help` lists for ``cmd`` (``--help`` too)."""
    ctx = cmd.make_context(cmd.name, [], resilient_parsing=True)
    names = []
    for param in cmd.get_params(ctx):
        if param.param_type_name == "option" and not getattr(param, "hidden", False):
            names += [*param.opts, *param.secondary_opts]
    return names


@pytest.mark.parametrize("width", [80, 60])
def test_every_option_name_is_shown_in_full(
    width: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each option name heads a line of its panel, whole (Typer's table cut 16 of
    `prov serve`'s to ``--admin-token-f…`` at 80 columns), and usage lines name
    arguments as Click does (``FILES...``, not ``{files}...``)."""
    monkeypatch.setenv("COLUMNS", str(width))
    checked = 0
    for path, cmd in _commands():
        capsys.readouterr()
        assert prov_main([*path.split(), "--help"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert all(len(line.rstrip()) <= width for line in lines), f"prov {path}: too wide"
        usage = next(line for line in lines if line.lstrip().startswith("Usage:"))
        assert "{" not in usage, usage
        shown: set[str] = set()
        for line in lines:
            if line.startswith("│"):
                cell = line.strip("│ ").lstrip("*").strip().split("  ")[0]
                shown.update(n for n in re.split(r"[ ,]+", cell) if n.startswith("-"))
        for name in _option_names(cmd):
            assert name in shown, f"prov {path} --help at {width} columns: {name} not in full"
            checked += 1
    assert checked > 150


def test_on_off_flags_say_on_or_nothing_for_their_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``--X/--no-X`` flag's default reads "[default: on]" (or nothing when off), not
    Click's option name without dashes ("--detect ... [default: detect]", "--resume ...
    [default: no-resume]"); another pair names its option ("[default: --full]")."""
    monkeypatch.setenv("COLUMNS", "250")
    pairs = 0
    for path, cmd in _commands():
        flags = [p for p in getattr(cmd, "params", []) if getattr(p, "secondary_opts", None)]
        if not flags:
            continue
        capsys.readouterr()
        assert prov_main([*path.split(), "--help"]) == 0
        out = capsys.readouterr().out
        for p in flags:
            for name in (*p.opts, *p.secondary_opts):
                assert f"[default: {name.lstrip('-')}]" not in out, f"prov {path}: {name}"
            pairs += 1
    assert pairs > 10
    helps = {}
    for path in ("verify", "scan", "log audit"):
        capsys.readouterr()
        assert prov_main([*path.split(), "--help"]) == 0
        helps[path] = capsys.readouterr().out
    assert "Ask for the advisory detector's score.  [default: on]" in helps["verify"]
    assert "ranks them by score." in helps["scan"] and "[default: no-" not in helps["scan"]
    assert "[default: --full]" in helps["log audit"]
