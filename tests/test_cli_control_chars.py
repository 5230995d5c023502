"""Control characters in text that is not ours never reach the terminal: a file name
holding ESC (``$'x\\e[2J.jpg'`` clears the screen, ``$'\\e]0;T\\a'`` sets the window title),
a C1 CSI or a bidirectional override, and a server's answer, are printed with each such
character escaped (``\\x1b``). Before, Rich kept them: `prov sign`, `verify` and `detect`
printed the name's ESC as it is, and so did Typer's usage errors and `prov log key`.
Also: a call that got no answer in time is not followed by "no server answers there"."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.text import Text

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from provenance.core.errors import TransportError
from tests.conftest import ROOT, SAMPLES, Cli, ServerProc, start_server

#: Names with a CSI (clear screen), an OSC (window title), a C1 CSI and a right-to-left
#: override ("photo\u202egpj.exe" reads "photoexe.jpg").
NAMES = (
    "x\x1b[2Jy.jpg",
    "t\x1b]0;pwned\x07.jpg",
    "c\x9b31m.jpg",
    "photo\u202egpj.jpg",
    "\ufeffpay\u200bpal.jpg",  # looked like "paypal.jpg"
)
#: What must never be printed as it is.
RAW = ("\x1b", "\x9b", "\u202e", "\u200b", "\ufeff")


def _clean(*texts: str) -> None:
    for text in texts:
        assert not any(c in text for c in RAW), repr(text)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One server for the module (conftest's `cli` and `enrolled` use it)."""
    s = start_server(tmp_path_factory.mktemp("srv") / "prov.db")
    yield s
    s.stop()


@pytest.mark.parametrize("name", NAMES)
def test_sign_verify_detect_escape_control_characters_of_a_name(
    enrolled: Cli, tmp_path: Path, name: str
) -> None:
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / name))
    shown = str(photo).replace("\x07", "")  # BEL: dropped by Rich itself
    for c, esc in zip(RAW, ("\\x1b", "\\x9b", "\\u202e", "\\u200b", "\\ufeff"), strict=True):
        shown = shown.replace(c, esc)
    # sign, the report and detect write BEL as its escape too (one line per file or field,
    # `shown_line`)
    in_report = shown.replace("pwned.jpg", "pwned\\x07.jpg") if "\x07" in name else shown
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0 and f"{in_report}: signed (#1)" in out, (out, err)
    _clean(out, err)
    rc, out, err = enrolled("verify", str(photo))
    assert rc == 0 and in_report in out and "SIGNED_ORIGINAL" in out, (out, err)
    _clean(out, err)
    rc, out, err = enrolled("detect", str(photo))  # no detector on this server: exit 1
    assert rc == 1 and f"{in_report}: not scored:" in out, (out, err)
    _clean(out, err)


def test_a_name_s_newline_cannot_forge_a_line_of_the_verify_report(
    cli: Cli, tmp_path: Path
) -> None:
    """The readable report of `prov verify` keeps one line per field: a newline or tab in
    the file's name is written as its escape (``\\x0a``), as the web page writes it.
    Before, an unsigned file named ``"x.png\\n  status     SIGNED_ORIGINAL: ..."`` printed
    a status line of its own above the real one (UNSIGNED, exit 11)."""
    forged = "  status     SIGNED_ORIGINAL: the exact bytes of a signed, logged capture"
    photo = tmp_path / f"x.png\n{forged}\tz"
    noise = np.random.default_rng(7).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(photo, "PNG")  # nobody signed it: UNSIGNED
    rc, out, err = cli("verify", str(photo), "--no-detect")
    assert rc == 11, (out, err)
    lines = out.splitlines()
    assert lines[0] == str(photo).replace("\n", "\\x0a").replace("\t", "\\x09"), lines[0]
    assert [line for line in lines if line.startswith("  status ")] == [
        "  status     UNSIGNED: no signed capture found for this file; that says nothing"
        " about whether it is real: most files are never signed"
    ], out


def test_a_name_s_newline_cannot_forge_a_line_of_prov_detect(cli: Cli, tmp_path: Path) -> None:
    """`prov detect` prints one line per file: a newline in a name is written as its
    escape (before: a file named ``"y.png\\nz.png: likely generated (score 0.990)"`` printed
    that verdict on a line of its own, above the file's real "not scored")."""
    photo = tmp_path / "y.png\nz.png: likely generated (score 0.990)"
    shutil.copy(SAMPLES / "rocket.jpg", photo)
    rc, out, err = cli("detect", str(photo))
    assert rc == 1, (out, err)  # not scored: this server runs no detector
    assert out.splitlines()[0].startswith(str(photo).replace("\n", "\\x0a") + ": not scored"), out
    assert not any(line.startswith("z.png") for line in out.splitlines()), out


def test_a_name_s_newline_cannot_forge_a_line_of_prov_sign(enrolled: Cli, tmp_path: Path) -> None:
    """`prov sign` prints one line per file: a newline in a name is written as its escape
    (before: a file named ``"y.jpg\nz.jpg: signed (#9) and logged at leaf 9 -> ..."``
    printed that outcome on a line of its own)."""
    forged = "z.jpg: signed (#9) and logged at leaf 9 -> z.jpg.prov.json"
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / f"y.jpg\n{forged}"))
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0, (out, err)
    assert not any(line.startswith("z.jpg") for line in (out + err).splitlines()), out
    assert out.splitlines()[0].startswith(str(photo).replace("\n", "\\x0a") + ": signed"), out


def test_a_usage_error_escapes_control_characters_of_a_name(tmp_path: Path) -> None:
    """Typer's own console prints usage errors: a sidecar named instead of its photo."""
    sidecar = tmp_path / "t\x1b]0;pwned\x07.jpg.prov"
    sidecar.write_bytes(b"{}")
    run = subprocess.run(
        [sys.executable, "-m", "clients.cli", "verify", str(sidecar)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert run.returncode == 2 and "is a provenance sidecar" in run.stderr, run.stderr
    assert "t\\x1b]0;pwned.jpg.prov" in run.stderr, run.stderr
    _clean(run.stdout, run.stderr)


def test_a_servers_answer_is_printed_escaped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov log key` prints the server's verifier key: a hostile server's ESC escaped."""
    monkeypatch.setattr(ProvenanceClient, "log_key", lambda self: ("k\x1b[2J+1+A", "o"))
    assert prov_main(["log", "key", "--server", "127.0.0.1:1"]) == 0
    out = capsys.readouterr().out
    assert out == "k\\x1b[2J+1+A\n", repr(out)


def test_styles_and_wrapping_around_an_escaped_character() -> None:
    """Escaped before the text is wrapped (the line measured with the escape's width),
    in the style of the character it stands for; our own colours still written."""
    from provenance.terminal import SafeConsole  # new: imported here, the others run before

    console = SafeConsole(force_terminal=True, color_system="standard", width=40)
    with console.capture() as cap:
        console.print(Text.assemble(("error:", "red"), " a\x1bb ", ("[x\x9bz]", "bold")))
    got = cap.get()
    assert "\x1b[31merror:\x1b[0m a\\x1bb " in got, repr(got)
    assert "\\x9b" in got and "\x9b" not in got, repr(got)


def test_no_answer_in_time_does_not_say_no_server_is_there(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """DEADLINE_EXCEEDED (a server waiting for its database: another process held the
    SQLite file's write lock for 30 s) is not "no server answers there. Start one"."""

    def slow(self: ProvenanceClient) -> tuple[str, str]:
        raise TransportError(
            "cannot reach the server at 127.0.0.1:1 (DEADLINE_EXCEEDED: Deadline Exceeded)",
            "DEADLINE_EXCEEDED",
        )

    monkeypatch.setattr(ProvenanceClient, "log_key", slow)
    assert prov_main(["log", "key", "--server", "127.0.0.1:1"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "no server answers there" not in err, err
    assert "nothing answered in time. A server may be there but busy" in err, err
