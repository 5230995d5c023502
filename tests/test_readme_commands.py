"""Every `prov ...` command the README and docs/*.md show names a real command and only
options that command has, spelled as the README spells them; the README's shell block
parses as written (placeholders filled in), so a renamed option cannot leave the README
behind. `--help` of each command shown answers 0."""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.cli import command_tree
from clients.cli import main as prov_main
from provenance.log.checkpoint import LogSigner
from provenance.witness import cosigner_vkey
from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _shown(text: str) -> list[str]:
    """The `prov` command lines of a Markdown text: those in ```sh blocks (continuations
    joined, comments cut) and the inline `prov ...` spans."""
    found = []
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#", line, maxsplit=1)[0]
            if not line.lstrip().startswith("#") and (m := re.search(r"(?:^|\s)(prov\s.*)", line)):
                found.append(m.group(1))
    found += re.findall(r"`(prov [^`]*)`", text)
    return found


@functools.cache
def _root() -> Any:
    """`prov`'s click command tree, built once: typer builds the whole tree on each call
    (about 0.1 s), and this module resolves some 280 command lines at collection and again
    in its tests. Only read here (`make_context` does not change a command)."""
    return command_tree()


def _resolve(words: list[str]) -> tuple[str, Any]:
    """The command path named by the first words after ``prov``, and its click command."""
    cmd: Any = _root()
    path: list[str] = []
    for w in words:
        sub = getattr(cmd, "commands", {}).get(w)
        if sub is None:
            break
        cmd = sub
        path.append(w)
    return " ".join(path), cmd


def _options(cmd: Any) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}


def _commands() -> list[tuple[Path, str]]:
    return [(doc, line) for doc in DOCS for line in _shown(doc.read_text())]


def test_the_docs_show_commands() -> None:
    shown = _commands()
    assert len(shown) > 80, len(shown)
    assert any("prov admin revoke" in line for _, line in shown)


@pytest.mark.parametrize(
    "doc,line",
    [(d, x) for d, x in _commands() if "--+" not in x and "&&" not in x],  # diagrams, shell
    ids=lambda v: v.name if isinstance(v, Path) else v[:60],
)
def test_each_command_shown_names_only_its_options(doc: Path, line: str) -> None:
    words = re.sub(r"[\[\]|]", " ", line).split()
    path, cmd = _resolve(words[1:])
    # `prov --help` alone: the group's own options (the other checks of this file run
    # `--help` of every command shown, so its answer is checked there)
    assert path or words[1:2] == ["--help"], f"{doc.name}: {line!r} names no prov command"
    known = _options(cmd) | {"--help"}  # click adds --help to every command itself
    for w in words:
        if w.startswith("--"):
            flag = w.split("=")[0].rstrip(",.;:)`")
            assert flag in known, f"{doc.name}: prov {path} has no {flag} ({line!r})"


def _protected(ctx: Any) -> list[str]:
    """A group context's subcommand and its arguments (click 8.2 renamed the attribute)."""
    return list(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", []))


def _readme_block_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Using it") :]
    block = block[block.index("```sh\n") + 6 : block.index("```\n", block.index("```sh\n") + 6)]
    lines = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.split(r"\s#", line, maxsplit=1)[0].strip()
        if line.startswith("#") or not (m := re.search(r"(?:^|\s)(prov\s.*)", line)):
            continue
        cmd = m.group(1).split(" > ")[0]
        while (opened := re.sub(r"\[(--[^\[\]]*)\]", r"\1", cmd)) != cmd:
            cmd = opened  # innermost first: `[--resume [--retry-errors]]`
        cmd = cmd.replace(" ...", "")
        lines.append(cmd.replace("<DEVICE_ID>", "ab" * 32).replace("<TOKEN>", "tok"))
    return lines


def _placeholders(folder: Path) -> dict[str, str]:
    """Real values for the README block's placeholders: a log verifier key (``KEY``, also
    in ``log.vkey``) and two cosigner keys (``WKEY1``, ``WKEY2``), freshly generated, so
    that the options' own checks of their values pass as they would for a user."""
    log_key = LogSigner(Ed25519PrivateKey.generate(), "example.com/log").verifier_key()
    (folder / "log.vkey").write_text(log_key + "\n")
    values = {"KEY": log_key}
    for k in ("WKEY1", "WKEY2"):
        public = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        values[k] = cosigner_vkey(f"witness.example/{k.lower()}", public)
    return values


def test_the_readme_usage_block_parses_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each command of README's "Using it" block parses strictly (click's own parser and
    the options' checks: option names, arity, counts of arguments, required options), run
    in a folder where the files and folders it names exist (empty files, a fresh SQLite
    file name, real keys for its placeholders)."""
    lines = _readme_block_lines()
    assert len(lines) > 25, lines
    monkeypatch.chdir(tmp_path)
    values = _placeholders(tmp_path)
    root = _root()
    for line in lines:
        # an absolute folder (`/archive/photos`) is made under tmp_path, not on this machine
        args = [
            str(tmp_path / a.lstrip("/")) if re.fullmatch(r"(/[\w.-]+)+", a) else values.get(a, a)
            for a in shlex.split(line)[1:]
        ]
        for a in args:
            if re.fullmatch(r"[\w./-]+\.(jpg|prov|json|pem|jsonl|zip|db)", a):
                (tmp_path / a).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / a).touch()
            elif re.fullmatch(r"[\w.-]+/", a):
                (tmp_path / a).mkdir(exist_ok=True)
            elif a.startswith(str(tmp_path)):
                Path(a).mkdir(parents=True, exist_ok=True)
        try:
            cur: Any = root.make_context("prov", [*args])
            rest = [*_protected(cur), *cur.args]
            while hasattr(cur.command, "resolve_command"):
                name, sub, rest = cur.command.resolve_command(cur, rest)
                assert sub is not None, line
                cur = sub.make_context(name, rest, parent=cur)
                rest = [*_protected(cur), *cur.args]
        except click.UsageError as e:
            pytest.fail(f"{line!r}: {e.format_message()}")
        assert not cur.args, f"{line!r}: left over {cur.args}"


@pytest.mark.parametrize(
    "path", sorted({_resolve(line.split()[1:])[0] for _, line in _commands()} - {""})
)
def test_help_of_each_command_shown(path: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert prov_main([*path.split(), "--help"]) == 0
    assert "Usage:" in capsys.readouterr().out
