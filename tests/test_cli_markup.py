"""Names that look like Rich markup, through the real `prov` CLI: a file name, a report
path, a server address or an error message is printed as it is. Before, Rich read it as
markup: "[foo].jpg" lost "[foo]", "[/red]x.jpg" raised MarkupError (a traceback for a
hostile file name), "w\\[i]v.jpg" lost its backslash and ":smile:z.jpg" became an emoji.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from tests.conftest import ADMIN_TOKEN, ROOT, SAMPLES, Cli, ServerProc, start_server

#: Paths Rich would read as markup (a closing tag: the folder "[" holding "red]x.jpg"; a
#: style; an unknown tag), an emoji code, and a backslash before a tag.
NAMES = ("[/red]x.jpg", "[bold]y.jpg", "[foo].jpg", ":smile:z.jpg", "w\\[i]v.jpg")


def _copy(sample: str, path: Path) -> Path:
    """The bundled sample copied to ``path`` (its folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(SAMPLES / sample, path))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One server for the module (conftest's `cli` and `enrolled` use it)."""
    s = start_server(tmp_path_factory.mktemp("srv") / "prov.db")
    yield s
    s.stop()


def _prov(*args: str, columns: str = "400") -> subprocess.CompletedProcess[str]:
    """`prov` in a child process, ``columns`` wide (Rich wraps a table at the width)."""
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PROV_ADMIN_TOKEN": ADMIN_TOKEN, "COLUMNS": columns},
    )


@pytest.mark.parametrize("name", NAMES)
def test_sign_verify_detect_print_the_file_name_as_it_is(
    enrolled: Cli, tmp_path: Path, name: str
) -> None:
    photo = _copy("rocket.jpg", tmp_path / name)
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0 and f"{photo}: signed (#1) and logged at leaf" in out, (out, err)
    assert f"-> {photo.name}.prov" in out, out
    rc, out, err = enrolled("verify", str(photo))
    assert rc == 0 and str(photo) in out and "SIGNED_ORIGINAL" in out, (out, err)
    rc, out, err = enrolled("detect", str(photo))  # the server runs without a detector
    assert rc == 1 and f"{photo}: not scored:" in out, (out, err)


@pytest.mark.parametrize("name", NAMES)
def test_a_file_not_signed_is_named_as_it_is(enrolled: Cli, tmp_path: Path, name: str) -> None:
    notes = tmp_path / name
    notes.parent.mkdir(exist_ok=True)
    notes.write_text("caption: launch\n")  # not media
    rc, out, err = enrolled("sign", str(notes))
    assert rc == 1 and f"{notes}: not signed: " in err, (out, err)


def test_an_error_names_the_file_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An error raised to `main` (here: a video given to `detect --local`, refused before
    any model loads) says "error: " and the message, the file name in it intact."""
    clip = _copy("fabric_pattern.mp4", tmp_path / "[/x]clip.mp4")
    capsys.readouterr()
    rc = prov_main(["detect", "--local", str(clip)])
    err = capsys.readouterr().err
    assert rc == 1 and f"error: {clip}: --local scores still images" in err, err


def test_an_unreachable_server_is_named_as_it_is(tmp_path: Path) -> None:
    photo = _copy("rocket.jpg", tmp_path / "[foo].jpg")
    run = _prov("verify", str(photo), "--server", "[foo]:1")
    assert run.returncode == 1, run.stderr
    assert "error: cannot reach the server at [foo]:1 (" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_scan_prints_the_report_path_as_it_is(server: ServerProc, tmp_path: Path) -> None:
    desk = tmp_path / "[bold]desk"
    for name in NAMES:
        _copy("rocket.jpg", desk / name)
    report = tmp_path / "[/red]out" / "[foo]scan.jsonl"
    report.parent.mkdir(parents=True)
    # 80 columns: the report paths' line is longer, and is written whole (a script reads
    # it); before, it was folded at 80
    run = _prov(
        "scan", str(desk), "--report", str(report), "--server", server.address, columns="80"
    )
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    # the title, a line of its own above the table: whole, not folded to the table's width
    title = f"scan report {report} ({len(NAMES)} files, "
    assert run.stdout.splitlines()[0].startswith(title), run.stdout
    csv, html = report.with_suffix(".csv"), report.with_suffix(".html")
    assert f"reports: {report}, {csv}, {html}" in run.stdout, run.stdout
