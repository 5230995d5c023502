"""The scan's CSV says why each row has its verdict: a `reason` column after the others,
the same text as the HTML page's, through the same formula guard as every cell."""

from __future__ import annotations

import csv
import html
import shutil
from pathlib import Path

import pytest

from clients.scan.report import CSV_FIELDS, csv_path, html_path
from tests.conftest import SAMPLES, Cli, sign_sample

#: The CSV's columns before the reason column was added (5 December): scripts that read by
#: position keep reading them where they were.
OLD_FIELDS = tuple(
    "path,archive,kind,size,media_type,sha256,pdq,pdq_quality,status,pdq_distance,device_id,"
    "captured_at,leaf_index,detector_score,detector_band,note,error".split(",")
)


def test_the_csv_gives_the_reason_of_each_verdict(
    enrolled: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signed, an edited (tampered), an unsigned and a corrupt photo and a link not
    followed, scanned by `prov scan` against a real `prov serve`: each CSV line carries
    the reason the JSON Lines row and the HTML page give. Before, the CSV had no reason
    column: opened in a spreadsheet, an UNSIGNED or TAMPERED line said nothing of why.
    Names starting with ``-`` and ``=`` (given as ``prov scan -- *``) stay text."""
    folder = tmp_path / "desk"
    folder.mkdir()
    sign_sample(enrolled, folder, "rocket.jpg")
    edited, _ = sign_sample(enrolled, folder, "grace_hopper.jpg")
    edited.write_bytes(edited.read_bytes()[:-200] + bytes(200))  # after signing: TAMPERED
    shutil.copy(SAMPLES / "chelsea.png", folder / "-chelsea.png")  # never signed
    (folder / "=broken.jpg").write_bytes((SAMPLES / "rocket.jpg").read_bytes()[:3000])
    (folder / "sub").mkdir()
    (folder / "sub" / "link.jpg").symlink_to("/etc/passwd")
    report = tmp_path / "scan.jsonl"
    monkeypatch.chdir(folder)
    rc, out, err = enrolled(
        "scan", "--report", str(report), "--server", enrolled.server, "--workers", "0",
        "--", *sorted(p.name for p in folder.iterdir()),
    )  # fmt: skip
    assert rc == 0, (out, err)
    with csv_path(report).open(newline="", encoding="utf-8") as f:
        lines = list(csv.reader(f))
    assert tuple(lines[0]) == CSV_FIELDS
    assert CSV_FIELDS[: len(OLD_FIELDS) + 1] == (*OLD_FIELDS, "reason"), lines[0]
    by_name = {Path(r[0].lstrip("'")).name: dict(zip(lines[0], r, strict=True)) for r in lines[1:]}
    assert set(by_name) == {
        "rocket.jpg",
        "rocket.jpg.prov",
        "grace_hopper.jpg",
        "grace_hopper.jpg.prov",
        "-chelsea.png",
        "=broken.jpg",
        "link.jpg",
    }, by_name
    page = html_path(report).read_text(encoding="utf-8")
    sidecar = by_name["rocket.jpg.prov"]
    assert sidecar["kind"] == "sidecar" and sidecar["reason"] == "", sidecar

    signed = by_name["rocket.jpg"]
    assert signed["status"] == "SIGNED_ORIGINAL" and signed["reason"], signed
    tampered = by_name["grace_hopper.jpg"]
    assert tampered["status"] == "TAMPERED" and tampered["reason"], tampered
    assert f"<td>TAMPERED</td><td>{html.escape(tampered['reason'], quote=True)}</td>" in page
    unsigned = by_name["-chelsea.png"]
    assert unsigned["status"] == "UNSIGNED" and unsigned["path"].startswith("'"), unsigned
    assert "no signed" in unsigned["reason"], unsigned
    corrupt = by_name["=broken.jpg"]
    assert corrupt["status"] == "UNSIGNED" and corrupt["path"].startswith("'="), corrupt
    assert "only their SHA-256 was looked up" in corrupt["reason"], corrupt
    assert "truncated or corrupt" in corrupt["reason"], corrupt
    link = by_name["link.jpg"]
    assert link["status"] == "" and link["reason"] == link["error"] != "", link
    assert f"<td>{html.escape(link['reason'], quote=True)}</td>" in page
    # scripts that read the CSV by position find the old columns where they were
    assert [r[OLD_FIELDS.index("status")] for r in lines[1:]] == [
        by_name[Path(r[0].lstrip("'")).name]["status"] for r in lines[1:]
    ]
    for r in lines[1:]:
        for cell in r:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), r
