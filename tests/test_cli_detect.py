"""`prov detect` through a real server: a file that could not be scored gets its error
and no "advisory only" footer (the footer qualifies a score; before, it followed the
error as if one had been given)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Cli

FOOTER = "advisory only"


def test_an_error_alone_gets_no_advisory_footer(cli: Cli, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("caption: launch\n")
    rc, out, err = cli("detect", str(notes))
    assert rc == 1 and f"{notes}:" in err, (out, err)
    assert FOOTER not in out + err, out
