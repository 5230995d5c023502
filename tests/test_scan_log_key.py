"""`prov scan --log-key KEY` (or PROV_LOG_KEY) checks each verdict's evidence as `prov
verify --log-key` does: the receipt of the claim a verdict cites must carry a checkpoint
signed by the pinned key and an inclusion proof of the claim's leaf in its tree. A file
whose evidence does not verify gets an error row (no status, ``evidence_checked``
"refused"), counted as SERVER EVIDENCE REFUSED, and the scan exits 3; a row proven with
the key says ``evidence_checked`` "log-key", in the JSON Lines report and the CSV.

Before (cited53), `prov scan` took no --log-key (exit 2), and a hostile server's
checkpoint signed by its own key read SIGNED_ORIGINAL rows, exit 0. A real `prov serve`,
a real enrolled device, a real hostile gRPC server on a real port relaying the rest to
the real server, the real CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from clients.scan.report import csv_path
from provenance.log.checkpoint import generate_log_key
from tests.conftest import SAMPLES, Cli, ServerProc, sign_sample, start_server
from tests.test_cited_binding import _forger, _genuine_answer, _scan_here
from tests.test_verify_log_key import _own_key_checkpoint, _wrong_proof


def _scan(
    capsys: pytest.CaptureFixture[str], folder: Path, report: Path, server: str, *extra: str
) -> tuple[int, str, str, dict[str, dict[str, Any]]]:
    """`prov scan FOLDER` in this process, its report new: (exit code, stdout, stderr,
    rows by file name)."""
    report.unlink(missing_ok=True)
    rc, out, err = _scan_here(capsys, folder, report, server, *extra)
    rows = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    return rc, out, err, {Path(r["path"]).name: r for r in rows}


def _photos(enrolled: Cli, tmp_path: Path) -> Path:
    """A new folder ``tmp_path``/photos holding rocket.jpg signed by ``enrolled``'s device
    (its claim logged)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    sign_sample(enrolled, folder, "rocket.jpg")
    return folder


def _log_key(server: str) -> str:
    """The log key of the server at ``server``, as `prov log key` prints it."""
    with ProvenanceClient(server) as c:
        return c.log_key()[0]


def test_scan_checks_honest_evidence_with_the_log_key(
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real server's answers, checked with its real key (given as --log-key and as
    PROV_LOG_KEY): exit 0, the signed rows ``evidence_checked`` "log-key" (CSV too), the
    unsigned one null; without the key, every row null. Another log's key: the signed
    rows are refused, exit 3."""
    folder = _photos(enrolled, tmp_path)
    sign_sample(enrolled, folder, "chelsea.png")
    shutil.copy(SAMPLES / "grace_hopper.jpg", folder / "grace_hopper.jpg")
    log_key = _log_key(server.address)
    report = tmp_path / "scan.jsonl"
    rc, out, err, rows = _scan(capsys, folder, report, server.address)
    assert rc == 0, (out, err)
    assert {r["evidence_checked"] for r in rows.values()} == {None}, rows
    for pin in (("--log-key", log_key), ()):
        if not pin:
            monkeypatch.setenv("PROV_LOG_KEY", log_key)
        rc, out, err, rows = _scan(capsys, folder, report, server.address, *pin)
        assert rc == 0, (pin, out, err)
        for name in ("rocket.jpg", "chelsea.png"):
            row = rows[name]
            assert (row["status"], row["evidence_checked"]) == ("SIGNED_ORIGINAL", "log-key"), row
        assert rows["grace_hopper.jpg"]["status"] == "UNSIGNED", rows
        assert rows["grace_hopper.jpg"]["evidence_checked"] is None, rows
        with csv_path(report).open(newline="") as f:
            cells = {Path(r["path"]).name: r for r in csv.DictReader(f)}
        assert cells["rocket.jpg"]["evidence_checked"] == "log-key", cells
        assert cells["grace_hopper.jpg"]["evidence_checked"] == "", cells
    monkeypatch.delenv("PROV_LOG_KEY")
    # another log's key: the real evidence is not of that log
    other_key = generate_log_key(tmp_path / "other.pem", "other.example/log").verifier_key()
    rc, out, err, rows = _scan(capsys, folder, report, server.address, "--log-key", other_key)
    assert rc == 3, (out, err)
    assert rows["rocket.jpg"]["status"] is None, rows
    assert "not signed by the log key" in rows["rocket.jpg"]["error"], rows
    assert rows["rocket.jpg"]["log_key"] == other_key, rows  # the key that refused it
    assert rows["grace_hopper.jpg"]["status"] == "UNSIGNED", rows


@pytest.mark.parametrize("forgery", ["own_key_checkpoint", "wrong_proof"])
def test_scan_refuses_forged_evidence_with_the_log_key(
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    forgery: str,
) -> None:
    """A hostile server's Lookup answer for A: A's genuine claim, its receipt's checkpoint
    signed by the server's own key, or a wrong inclusion proof. With --log-key: A's row
    has no status, the error and ``evidence_checked`` "refused"; the summary counts it
    as SERVER EVIDENCE REFUSED; exit 3, stderr saying so. Without it: SIGNED_ORIGINAL,
    exit 0 (the gap --log-key closes)."""
    sign_sample(enrolled, tmp_path, "chelsea.png")  # a second leaf: proofs are not empty
    folder = _photos(enrolled, tmp_path)
    a = folder / "rocket.jpg"
    log_key = _log_key(server.address)
    forged = _genuine_answer(server.address, a)
    (_own_key_checkpoint if forgery == "own_key_checkpoint" else _wrong_proof)(forged, tmp_path)
    why = "not signed by the log key" if forgery == "own_key_checkpoint" else "inclusion proof"
    report = tmp_path / "scan.jsonl"
    for address in _forger(server.address, forged.SerializeToString()):
        rc, out, err, rows = _scan(capsys, folder, report, address)
        assert rc == 0 and rows["rocket.jpg"]["status"] == "SIGNED_ORIGINAL", (out, err)
        rc, out, err, rows = _scan(capsys, folder, report, address, "--log-key", log_key)
        assert rc == 3, (rc, out, err)
        row = rows["rocket.jpg"]
        assert row["status"] is None and row["evidence_checked"] == "refused", row
        assert why in row["error"] and "--log-key" in row["error"], row
        assert "SERVER EVIDENCE REFUSED" in out, out  # the summary's count
        assert "SERVER EVIDENCE REFUSED:" in err and "Traceback" not in err, err
        with csv_path(report).open(newline="") as f:
            [cell] = [r for r in csv.DictReader(f) if r["path"].endswith("rocket.jpg")]
        assert (cell["status"], cell["evidence_checked"]) == ("", "refused"), cell


def test_scan_refuses_a_log_key_that_is_no_key(tmp_path: Path) -> None:
    """A --log-key that is no verifier key: a usage error (exit 2) before any scan."""
    rc = prov_main(
        ["scan", str(tmp_path), "--report", str(tmp_path / "s.jsonl"), "--log-key", "nokey"]
    )
    assert rc == 2
    assert not (tmp_path / "s.jsonl").exists()


def test_a_resumed_scan_with_the_log_key_says_which_rows_it_did_not_check(
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Rows written before --log-key was given (a first run without it) are not scanned
    again by ``--resume --log-key KEY``: the resumed scan says how many rows citing a
    logged claim were not checked with the key, and does not exit 0 as if they were.
    Before (revcited53): exit 0, nothing said, the signed row's ``evidence_checked``
    null."""
    folder = _photos(enrolled, tmp_path)
    log_key = _log_key(server.address)
    report = tmp_path / "scan.jsonl"
    rc, out, err, rows = _scan(capsys, folder, report, server.address)
    assert rc == 0 and rows["rocket.jpg"]["evidence_checked"] is None, (out, err)
    sign_sample(enrolled, folder, "chelsea.png")  # new to the resumed run: checked
    rc, out, err = _scan_here(
        capsys, folder, report, server.address, "--resume", "--log-key", log_key
    )
    rows = {Path(r["path"]).name: r for r in map(json.loads, report.read_text().splitlines())}
    assert rows["chelsea.png"]["evidence_checked"] == "log-key", rows
    assert rows["rocket.jpg"]["evidence_checked"] is None, rows  # not scanned again
    assert rc == 3, (rc, out, err)
    assert "1 row" in err and "not checked with --log-key" in err, err
    assert "Traceback" not in err, err


def test_a_resumed_scan_with_another_log_key_does_not_take_rows_checked_with_the_first(
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two real logs' keys: A, the key of the server the files are signed in, and B, the
    key of a second real `prov serve`. A scan with ``--log-key A`` records A in each
    checked row (``log_key``, the verifier key as `prov log key` prints it; the CSV's
    last column); ``--resume --log-key B`` counts those rows as not checked with B
    (stderr says so) and exits 3; ``--resume --log-key A`` again exits 0. A row of an
    older report, without ``log_key``, reads as before: checked. Before (scankey54) the
    report did not say which key checked a row: the resume with B exited 0, every row
    still reading ``evidence_checked`` "log-key"."""
    folder = _photos(enrolled, tmp_path)
    shutil.copy(SAMPLES / "grace_hopper.jpg", folder / "grace_hopper.jpg")
    other = start_server(tmp_path / "other.db")  # a second real log, with its own key
    try:
        key_a = _log_key(server.address)
        key_b = _log_key(other.address)
    finally:
        other.stop()
    assert key_a != key_b
    report = tmp_path / "scan.jsonl"
    rc, out, err, rows = _scan(capsys, folder, report, server.address, "--log-key", key_a)
    assert rc == 0, (out, err)
    signed, unsigned = rows["rocket.jpg"], rows["grace_hopper.jpg"]
    assert (signed["evidence_checked"], signed["log_key"]) == ("log-key", key_a), signed
    assert (unsigned["evidence_checked"], unsigned["log_key"]) == (None, None), unsigned
    with csv_path(report).open(newline="") as f:
        cells = {Path(r["path"]).name: r for r in csv.DictReader(f)}
        # pixels_checked came after them (scanpix55)
        assert list(cells["rocket.jpg"])[-3:-1] == ["evidence_checked", "log_key"], cells
    assert cells["rocket.jpg"]["log_key"] == key_a, cells
    assert cells["grace_hopper.jpg"]["log_key"] == "", cells

    def resume(key: str) -> tuple[int, str]:
        rc, _, err = _scan_here(
            capsys, folder, report, server.address, "--resume", "--log-key", key
        )
        return rc, err

    shutil.copy(SAMPLES / "chelsea.png", folder / "chelsea.png")  # new, unsigned
    rc, err = resume(key_b)
    assert rc == 3, err
    assert "1 row" in err and "not checked with --log-key" in err, err
    assert "Traceback" not in err, err
    rc, err = resume(key_a)
    assert rc == 0 and "not checked with --log-key" not in err, err
    # a report written before the key was recorded: its checked rows read as before
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    report.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "log_key"}) + "\n" for r in lines)
    )
    rc, err = resume(key_b)
    assert rc == 0 and "not checked with --log-key" not in err, err


def test_a_resumed_scan_takes_the_same_key_however_it_is_given(
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The key that checked a row is recorded as the key's text (``log_key``), not as the
    option was written: a scan with ``--log-key KEY`` resumed with a key file holding
    KEY between blanks and a CRLF, or with PROV_LOG_KEY padded with blanks, takes the
    rows checked before as checked with it (exit 0, nothing said), and the row it checks
    records KEY itself, not the file's path (revscan54: held, a guard for the record)."""
    folder = _photos(enrolled, tmp_path)
    key = _log_key(server.address)
    report = tmp_path / "scan.jsonl"
    rc, out, err, rows = _scan(capsys, folder, report, server.address, "--log-key", key)
    assert rc == 0 and rows["rocket.jpg"]["log_key"] == key, (out, err, rows)
    key_file = tmp_path / "log.key"
    key_file.write_text(f"  {key} \r\n")
    for step, given in enumerate((["--log-key", str(key_file)], [])):
        if not given:
            monkeypatch.setenv("PROV_LOG_KEY", f" {key}\t")
        signed = f"new{step}.png"
        sign_sample(enrolled, folder, "chelsea.png")
        (folder / "chelsea.png").rename(folder / signed)  # new to this resumed run: checked
        rc, _, err = _scan_here(capsys, folder, report, server.address, "--resume", *given)
        assert rc == 0 and "not checked with --log-key" not in err, (given, err)
        rows = {Path(r["path"]).name: r for r in map(json.loads, report.read_text().splitlines())}
        assert rows[signed]["evidence_checked"] == "log-key", rows[signed]
        assert rows[signed]["log_key"] == key, rows[signed]
