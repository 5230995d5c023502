"""`prov log export-tiles` of a store with no signed checkpoint (a database made but
never served) printed "exported 0 entries to DIR: 0 tiles and 0 entry bundles written",
exit 0, though no `checkpoint` file was written: the folder holds no tiled log, and
`prov log audit --tiles DIR` then finds none. Now it says there is no signed checkpoint
yet and nothing was exported, exit 1 (README: "1 it could not be done"); with --follow
it says so once and waits for one. Its --help names SIGTERM beside Ctrl-C. A real
SQLite store, the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.cli import main as prov_main
from provenance.log import tiles
from provenance.store import open_store


def _export_unsigned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, Path]:
    """Export a store with no entry and no checkpoint (a current schema, never served):
    the exit code, what was said (whitespace folded), the export's folder."""
    db = tmp_path / "a.db"
    open_store(db).close()
    out = tmp_path / "tiles"
    capsys.readouterr()
    rc = prov_main(["log", "export-tiles", str(out), "--db", str(db), *extra])
    got = capsys.readouterr()
    return rc, " ".join((got.out + got.err).split()), out


def test_an_export_with_no_signed_checkpoint_says_nothing_was_exported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, said, out = _export_unsigned(tmp_path, capsys)
    assert rc == 1, said
    assert "no signed checkpoint yet" in said and "nothing exported" in said, said
    assert "exported 0 entries" not in said and "Traceback" not in said, said
    assert not (out / tiles.CHECKPOINT_PATH).exists()


def test_a_follow_with_no_signed_checkpoint_says_so_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, said, _ = _export_unsigned(
        tmp_path, capsys, "--follow", "--interval", "0.1", "--max-polls", "3"
    )
    assert rc == 1, said
    assert said.count("no signed checkpoint yet") == 2, said  # the wait, then the end
    assert "waiting for one" in said and "exported 0 entries" not in said, said


def test_follow_help_names_sigterm(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert prov_main(["log", "export-tiles", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Ctrl-C" in text and "SIGTERM" in text, text


def test_max_polls_help_says_what_a_poll_is_and_what_stops_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-polls said "(0: until interrupted)": SIGTERM stops it too, and nothing said
    that the first export is a poll (`--max-polls 1` exports once and never waits)."""
    capsys.readouterr()
    assert prov_main(["log", "export-tiles", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "until interrupted" not in text, text
    assert "the first included" in text and "0 (the default): no limit" in text, text
    assert "until stopped (Ctrl-C or SIGTERM)" in text, text
    # as it says: one poll is the first export, and no wait follows the last
    rc, said, _ = _export_unsigned(
        tmp_path, capsys, "--follow", "--interval", "3600", "--max-polls", "1"
    )
    assert rc == 1 and said.count("no signed checkpoint yet") == 1, said


def test_max_polls_without_follow_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--max-polls 3` without --follow was silently one export (a forgotten --follow):
    exit 2 naming both, before anything is read or written. 0, the default, goes on."""
    rc, said, out = _export_unsigned(tmp_path, capsys, "--max-polls", "3")
    assert rc == 2 and "--max-polls" in said and "--follow" in said, said
    assert not out.exists(), said
    rc, said, _ = _export_unsigned(tmp_path, capsys, "--max-polls", "0")
    assert rc == 1 and "no signed checkpoint yet" in said, said


@pytest.mark.parametrize("seconds", ["0.5", "5"])
def test_interval_without_follow_is_a_usage_error(
    seconds: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--interval N` without --follow was silently ignored (one export, no poll): exit 2
    naming both options, before anything is read or written; also with the value --follow
    takes when none is given (5)."""
    rc, said, out = _export_unsigned(tmp_path, capsys, "--interval", seconds)
    assert rc == 2 and "--interval" in said and "--follow" in said, said
    assert not out.exists(), said
