"""Write the ``--help`` text of every `prov` command and subcommand, at 80 columns with
no colour, to tests/data/prov_help.txt (tests/test_cli_lazy.py compares against it).
Run after changing any command's help: ``PYTHONPATH=. python scripts/help_golden.py``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from tests.test_cli_lazy import GOLDEN, HELP_ENV

_RENDER = """
import click
from clients import cli
root = cli.command_tree()
def walk(cmd, path):
    yield path
    if hasattr(cmd, "list_commands"):
        ctx = click.Context(cmd, info_name=path[-1] if path else "prov")
        for name in cmd.list_commands(ctx):
            yield from walk(cmd.get_command(ctx, name), [*path, name])
for path in walk(root, []):
    print(" ".join(path))
"""


def command_paths() -> list[list[str]]:
    """Every command path under `prov` ([] for prov itself), in listing order."""
    out = subprocess.run(
        [sys.executable, "-c", _RENDER], capture_output=True, text=True, check=True, env=_env()
    ).stdout
    return [line.split() for line in out.splitlines()]


def _env() -> dict[str, str]:
    return {**os.environ, **HELP_ENV}


def help_text(path: list[str]) -> str:
    """``prov PATH --help``'s stdout, run as a new process."""
    code = "import sys; from clients.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, *path, "--help"],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert done.returncode == 0, (path, done.stderr)
    return done.stdout


def render_all() -> str:
    """Every command's help, each under a ``=== prov PATH`` line."""
    return "".join(
        f"=== {' '.join(['prov', *path])}\n{help_text(path)}" for path in command_paths()
    )


if __name__ == "__main__":
    argparse.ArgumentParser(
        description="Write the --help text of every prov command and subcommand (80 columns,"
        " no colour) to tests/data/prov_help.txt, which tests/test_cli_lazy.py compares with.",
    ).parse_args()
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(render_all())
    print(f"wrote {GOLDEN}")
