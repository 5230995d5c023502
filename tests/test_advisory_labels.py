"""Every output that shows a detector score says it is advisory (DESIGN.md: the
detector's output is "a calibrated score with an uncertainty band, the model's
identity, and the word *advisory*"), asked of a real `prov serve --detector`: the text
and JSON of `prov detect` (image and video) and the text of `prov verify`, and the
JSON Lines, CSV and HTML reports of `prov scan --detect`. Before, only the JSON of `prov
verify` and the web page were checked against a real server; the text reports were
checked only as functions, and the footer of `prov detect` only for being absent."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from clients.scan.report import csv_path, html_path
from tests.conftest import SAMPLES, Cli, ServerProc


def test_every_detector_output_says_advisory(
    detecting: ServerProc, cli: Cli, tmp_path: Path
) -> None:
    photo = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "cat.png"))
    clip = Path(shutil.copy(SAMPLES / "fabric_pattern.mp4", tmp_path / "clip.mp4"))

    rc, out, err = cli("detect", str(photo), str(clip), "--json")
    assert rc == 0, err
    results = json.loads(out)["results"]
    assert len(results) == 2 and "timeline" in results[1]
    for r in results:
        assert "score" in r and "advisory" in r["advisory"].lower(), r

    rc, out, err = cli("detect", str(photo))
    assert rc == 0, err
    lines = out.splitlines()
    scored = next(i for i, line in enumerate(lines) if "score " in line)
    assert any(line.startswith("advisory only") for line in lines[scored + 1 :]), out

    rc, out, err = cli("verify", str(photo))
    assert rc == 11, err  # UNSIGNED: the detector's score never changes it
    lines = out.splitlines()
    block = next(i for i, line in enumerate(lines) if line.lstrip().startswith("detector "))
    assert "score" in "\n".join(lines[block:]), out
    assert any("advisory" in line for line in lines[block:]), out

    folder = tmp_path / "archive"
    folder.mkdir()
    shutil.copy(photo, folder / "cat.png")
    report = tmp_path / "scan.jsonl"
    rc, out, err = cli(
        "scan", str(folder), "--report", str(report), "--detect", "--server", detecting.address
    )
    assert rc == 0, err
    (row,) = [json.loads(line) for line in report.read_text().splitlines()]
    assert row["status"] == "UNSIGNED" and "score" in row["detector"], row
    assert "advisory" in row["detector"]["advisory"].lower(), row
    page = html_path(report).read_text()
    ranked = page.index("by detector score")
    assert "score is advisory" in page[ranked:], page
    with csv_path(report).open(newline="", encoding="utf-8") as f:
        (cells,) = list(csv.DictReader(f))  # before: a score and a band, no model, no word
    assert cells["detector_score"] and cells["detector_band"], cells
    d = row["detector"]
    assert cells["detector_model"] == f"{d['model_id']} {d['model_version']}", cells
    assert "advisory" in cells["detector_advisory"].lower(), cells
