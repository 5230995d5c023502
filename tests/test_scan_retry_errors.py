"""`prov scan --resume --retry-errors`: the files whose rows are errors are scanned again
(a server that answered no result for a file, a read that failed on a share), each file
still one row. A real `prov serve`, stopped and started again between the runs."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from clients.scan import worker
from tests.conftest import SAMPLES, ServerProc, start_server


def _rows(report: Path) -> dict[str, dict[str, object]]:
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    by_path = {str(r["path"]): r for r in rows}
    assert len(by_path) == len(rows), "a file with two rows"
    return by_path


def test_resume_with_retry_errors_scans_the_error_rows_again(
    server: ServerProc,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A row that ended in an error from a passing cause was never scanned again by
    --resume (a reviewer's finding: an archivist resuming an overnight scan expects the
    file the server did not answer for to be tried again). With --retry-errors the error
    rows are taken out of the report and their files scanned again; without it they are
    kept, as before. A server stopped meanwhile loses none of them."""
    monkeypatch.setattr(worker, "RETRY_DELAYS_S", (0.01,))
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLES / "rocket.jpg", photos / "rocket.jpg")
    shutil.copy(SAMPLES / "chelsea.png", photos / "chelsea.png")
    report = tmp_path / "night.jsonl"
    args = ["scan", str(photos), "--report", str(report), "--workers", "0", "--resume"]
    assert prov_main([*args, "--server", server.address]) == 0
    rows = _rows(report)
    rocket = str(photos / "rocket.jpg")
    good = dict(rows[rocket])
    assert good["status"] is not None and good.get("error") is None
    # the row a batch gets for a file the server left out of its answer
    failed = {
        **good,
        "status": None,
        "error": f"the server at {server.address} answered no result for this file; scan it again",
    }
    report.write_text(
        "".join(json.dumps(failed if p == rocket else r) + "\n" for p, r in rows.items())
    )
    assert prov_main([*args, "--server", server.address]) == 0  # kept without the flag
    assert _rows(report)[rocket]["error"] == failed["error"]
    server.stop()  # the server down while retrying: the scan stops, nothing is lost
    capsys.readouterr()
    assert prov_main([*args, "--retry-errors", "--server", server.address]) == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "--retry-errors: 1 error row taken out of the report" in said, said
    assert "cannot reach the server" in said, said
    # its row is out of the report, so the next --resume scans the file, with or without
    # the flag: nothing is lost
    assert rocket not in _rows(report) and len(_rows(report)) == 1
    again = start_server(server.db)
    try:
        assert prov_main([*args, "--retry-errors", "--server", again.address]) == 0
    finally:
        again.stop()
    after = _rows(report)
    assert set(after) == set(rows)
    assert after[rocket].get("error") is None and after[rocket]["status"] == good["status"]
    assert after[str(photos / "chelsea.png")] == rows[str(photos / "chelsea.png")]


def test_retry_errors_needs_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--retry-errors without --resume is a usage error (exit 2): there are no rows to
    retry in a new report."""
    rc = prov_main(["scan", str(SAMPLES), "--report", str(tmp_path / "r.jsonl"), "--retry-errors"])
    assert rc == 2
    assert "--retry-errors goes with --resume" in " ".join(capsys.readouterr().err.split())


def test_a_copy_left_by_a_killed_retry_is_removed(tmp_path: Path) -> None:
    """--retry-errors copies the rows it keeps to ``.REPORT.PID.retry.tmp`` beside the
    report; a scan killed before the rename left that copy, which a later scan of the
    folder would have read as a file. The next --resume removes it."""
    from clients.scan.resume import Journal

    report = tmp_path / "night.jsonl"
    photo = tmp_path / "photos" / "a.jpg"  # there: its error row is retried, not kept
    photo.parent.mkdir()
    photo.write_bytes(b"abc")
    row = {"path": str(photo), "status": None, "error": "cannot read: I/O error", "size": 3}
    report.write_text(json.dumps(row) + "\n")
    left = tmp_path / ".night.jsonl.12345.retry.tmp"
    left.write_text("")
    other = tmp_path / ".other.jsonl.12345.retry.tmp"  # another report's: kept
    other.write_text("")
    with Journal(report, resume=True) as journal:
        assert str(photo) in journal.done
    assert not left.exists() and other.exists()
    with Journal(report, resume=True, retry_errors=True) as journal:
        assert journal.retried == 1 and str(photo) not in journal.done
    assert report.read_text() == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, report.name, "photos"]


def test_retry_errors_keeps_the_error_rows_of_paths_not_given(
    server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--retry-errors took every error row out of the report, also those of files under
    PATHs this run was not given (a scan of two folders resumed with one): no walk
    scanned them again, so their rows were lost for good (a review). Only the error rows
    that could be of a file under the PATHs given are taken out now."""
    monkeypatch.setattr(worker, "RETRY_DELAYS_S", (0.01,))
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        shutil.copy(SAMPLES / "rocket.jpg", folder / "rocket.jpg")
    report = tmp_path / "night.jsonl"
    args = ["scan", "--report", str(report), "--workers", "0", "--server", server.address]
    assert prov_main([*args, str(first), str(second)]) == 0
    rows = _rows(report)
    failed = {p: {**r, "status": None, "error": "cannot read: I/O error"} for p, r in rows.items()}
    report.write_text("".join(json.dumps(r) + "\n" for r in failed.values()))
    assert prov_main([*args, str(first), "--resume", "--retry-errors"]) == 0
    after = _rows(report)
    theirs = str(second / "rocket.jpg")
    assert after[theirs] == failed[theirs]  # kept, not scanned
    mine = str(first / "rocket.jpg")
    assert after[mine].get("error") is None and after[mine]["status"] == rows[mine]["status"]


def test_retry_errors_keeps_the_error_row_of_a_file_gone_since(
    server: ServerProc,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A file whose row is an error, deleted (or moved) before --resume --retry-errors:
    its row was taken out of the report and, the walk no longer finding the file, never
    written again, so the report no longer said the file had been there and failed (a
    review). Its row is kept now, and the scan says how many were kept so."""
    monkeypatch.setattr(worker, "RETRY_DELAYS_S", (0.01,))
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLES / "rocket.jpg", photos / "rocket.jpg")
    shutil.copy(SAMPLES / "chelsea.png", photos / "chel!sea.png")  # a name its ref escapes
    report = tmp_path / "night.jsonl"
    args = ["scan", str(photos), "--report", str(report), "--workers", "0", "--resume"]
    assert prov_main([*args, "--server", server.address]) == 0
    rows = _rows(report)
    failed = {p: {**r, "status": None, "error": "cannot read: I/O error"} for p, r in rows.items()}
    report.write_text("".join(json.dumps(r) + "\n" for r in failed.values()))
    (photos / "chel!sea.png").unlink()
    capsys.readouterr()
    assert prov_main([*args, "--retry-errors", "--server", server.address]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "--retry-errors: 1 error row taken out of the report" in said, said
    assert "1 error row kept: its file is gone" in said, said
    after = _rows(report)
    assert set(after) == set(rows)
    gone = str(photos / "chel\\!sea.png")
    assert after[gone] == failed[gone]
    rocket = str(photos / "rocket.jpg")
    assert after[rocket].get("error") is None and after[rocket]["status"] == rows[rocket]["status"]


def test_retry_errors_keeps_the_error_row_of_an_archive_entry_gone_since(
    server: ServerProc,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same for an archive's entry: the archive is still there, but written again
    without the entry. Its row was taken out (the archive being on disk) and the walk of
    the archive, not finding the entry, never wrote it again (a review: 2 rows taken out,
    1 scanned, the report one row shorter without a word). Kept now, and said."""
    monkeypatch.setattr(worker, "RETRY_DELAYS_S", (0.01,))
    photos = tmp_path / "photos"
    photos.mkdir()
    archive = photos / "set.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(SAMPLES / "rocket.jpg", "rocket.jpg")
        z.write(SAMPLES / "chelsea.png", "chelsea.png")
    report = tmp_path / "night.jsonl"
    args = ["scan", str(photos), "--report", str(report), "--workers", "0", "--resume"]
    assert prov_main([*args, "--server", server.address]) == 0
    rows = _rows(report)
    assert len(rows) == 2, rows
    failed = {p: {**r, "status": None, "error": "cannot read: I/O error"} for p, r in rows.items()}
    report.write_text("".join(json.dumps(r) + "\n" for r in failed.values()))
    with zipfile.ZipFile(archive, "w") as z:  # chelsea.png no longer in it
        z.write(SAMPLES / "rocket.jpg", "rocket.jpg")
    capsys.readouterr()
    assert prov_main([*args, "--retry-errors", "--server", server.address]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "1 error row kept: its archive entry is gone" in said, said
    after = _rows(report)
    assert set(after) == set(rows)
    (gone,) = (p for p in rows if p.endswith("chelsea.png"))
    assert after[gone] == failed[gone]
    (rocket,) = (p for p in rows if p.endswith("rocket.jpg"))
    assert after[rocket].get("error") is None and after[rocket]["status"] == rows[rocket]["status"]
    # the CSV the scan writes beside it has the kept row too
    assert "chelsea.png" in report.with_suffix(".csv").read_text()


def test_retry_errors_rewrites_a_linked_report_where_the_link_leads(tmp_path: Path) -> None:
    """A report that is a symbolic link to a file in another folder (`--report` is
    appended to through it): --retry-errors takes the error rows out of that file, the
    copy made beside it and renamed over it, and the link stays. Before, the copy was
    renamed over the link: the report became a new file beside the link, and the file it
    had led to kept the error rows, no longer the report."""
    from clients.scan.resume import Journal

    elsewhere = tmp_path / "reports"
    elsewhere.mkdir()
    real = elsewhere / "night.jsonl"
    photo = tmp_path / "photos" / "a.jpg"  # there: its error row is retried, not kept
    photo.parent.mkdir()
    photo.write_bytes(b"abc")
    kept = {"path": str(tmp_path / "photos" / "b.jpg"), "status": "UNSIGNED", "size": 3}
    row = {"path": str(photo), "status": None, "error": "cannot read: I/O error", "size": 3}
    real.write_text(json.dumps(kept) + "\n" + json.dumps(row) + "\n")
    link = tmp_path / "night.jsonl"
    link.symlink_to(Path("reports") / "night.jsonl")
    with Journal(link, resume=True, retry_errors=True) as journal:
        assert journal.retried == 1 and str(photo) not in journal.done
        journal.write([{**row, "error": None, "status": "UNSIGNED"}])
    assert link.is_symlink() and link.readlink() == Path("reports") / "night.jsonl"
    assert [json.loads(line)["path"] for line in real.read_text().splitlines()] == [
        kept["path"],
        str(photo),
    ]
    assert sorted(p.name for p in elsewhere.iterdir()) == ["night.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["night.jsonl", "photos", "reports"]
