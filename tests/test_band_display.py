"""The detector's band thresholds where a person reads the score: `prov detect --local`
and its --json, and, through a real `prov serve --detector --http`, `prov verify`, `prov
detect`, the web API and the web page, whose crop overlay is marked by the image's own
thresholds (not by 0.5). The thresholds are compared with the shipped weights'
calibration, read here from the weights file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from detector.bands import crop_tone, score_words, threshold_words
from provenance.web.present import crop_marks
from tests.conftest import ADMIN_TOKEN, ROOT, SAMPLES, ServerProc, read_line, start_server

CAT = SAMPLES / "chelsea.png"
#: How every reader prints a score and its range over other crop draws (before: "score
#: 0.298, band 0.23-0.37", where "band" read as the band label of the same line).
SCORE_WORDS = r"score 0\.\d{3} \(0\.\d\d-[01]\.\d\d with other crops\)"


@pytest.fixture(scope="module")
def calibration() -> Any:
    from detector.registry import load_model

    return load_model("default").meta.calibration


def _prov(*args: str, server: str | None = None) -> tuple[int, str, str]:
    """The real CLI in a child process (wide terminal: one line per printed line)."""
    env = {**os.environ, "COLUMNS": "400", "PROV_ADMIN_TOKEN": ADMIN_TOKEN}
    if server is not None:
        env["PROV_SERVER"] = server
    done = subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    return done.returncode, done.stdout, done.stderr


def _words(cal: Any) -> str:
    return (
        f"likely generated from {cal.threshold_high:.3f}"
        + (" (clean, low-noise pictures need a higher score)" if cal.noise_coef else "")
        + f"; no generator traces below {cal.threshold_low:.3f}; in between: uncertain"
    )


def _thresholds_match(block: dict[str, Any], cal: Any) -> None:
    assert block["threshold_low"] == pytest.approx(cal.threshold_low, abs=1e-6)
    assert block["threshold_high"] == pytest.approx(cal.threshold_high, abs=1e-6)
    assert block["threshold_high_noise_aware"] is (cal.noise_coef != 0)


def test_local_detect_prints_the_thresholds(calibration: Any) -> None:
    assert calibration.noise_coef != 0  # version 7: the phrase on the noise rule shows
    args = ("detect", "--local", "--seed", "7", "--device", "cpu", str(CAT))
    rc, out, err = _prov(*args)
    assert rc == 0, err
    line = rf"chelsea\.png: \S.*, {SCORE_WORDS}, model default \d+, \d+ crops\n"
    assert re.search(line, out), out
    assert f"  {_words(calibration)}\n" in out
    rc, out, err = _prov(*args, "--json")
    assert rc == 0, err
    (block,) = json.loads(out)["results"]
    _thresholds_match(block, calibration)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProc, str]]:
    """`prov serve` with the shipped detector on the CPU and its web app (`--http`)."""
    db = tmp_path_factory.mktemp("bands") / "prov.db"
    srv = start_server(db, "--detector", "--detector-device", "cpu", "--http", "127.0.0.1:0")
    try:
        yield srv, read_line(srv.proc, "web on ")
    finally:
        srv.stop()


def test_verify_and_detect_through_the_server(
    served: tuple[ServerProc, str], calibration: Any
) -> None:
    srv, _ = served
    rc, out, err = _prov("verify", str(CAT), server=srv.address)
    assert rc == 11, err  # unsigned
    assert re.search(rf"  detector   \S.*: {SCORE_WORDS}, model default \d+, ", out), out
    assert f"             {_words(calibration)}\n" in out
    rc, out, err = _prov("verify", str(CAT), "--json", server=srv.address)
    _thresholds_match(json.loads(out)["detector"], calibration)
    rc, out, err = _prov("detect", str(CAT), server=srv.address)
    assert rc == 0 and f"  {_words(calibration)}\n" in out, out + err
    assert re.search(rf"chelsea\.png: \S.*, {SCORE_WORDS}, model default \d+\n", out), out
    assert out.rstrip().endswith("only `prov verify` checks signatures"), out  # under a score
    rc, out, err = _prov("detect", str(CAT), "--json", server=srv.address)
    (block,) = json.loads(out)["results"]
    _thresholds_match(block, calibration)


def test_web_api_and_page_show_thresholds_and_band_the_crops(
    served: tuple[ServerProc, str], calibration: Any
) -> None:
    _, web = served
    with httpx.Client(base_url=web, timeout=300) as http:
        api = http.post("/api/v1/verify", files={"file": ("cat.png", CAT.read_bytes())})
        page = http.post("/verify", files={"file": ("cat.png", CAT.read_bytes())})
    assert api.status_code == 200 and page.status_code == 200, api.text + page.text
    block = api.json()["detector"]
    _thresholds_match(block, calibration)
    html = page.text
    assert f'<dd id="detector-thresholds">{_words(calibration)}</dd>' in html
    crops = block["crops"]
    high = sum(c["score"] >= calibration.threshold_high for c in crops)
    low = sum(c["score"] < calibration.threshold_low for c in crops)
    overlay = html[html.index('<svg class="overlay"') :]
    overlay = overlay[: overlay.index("</svg>")]
    drawn = {t: overlay.count(f'<rect class="crop crop-{t}"') for t in ("high", "mid", "low")}
    assert drawn == {"high": high, "mid": len(crops) - high - low, "low": low}, drawn
    # The old overlay drew every crop at 0.5 or more in red: a large share of this real
    # photo's crops, against few (if any) at the image's own threshold.
    at_half = sum(c["score"] >= 0.5 for c in crops)
    assert at_half >= 10 and high < at_half / 2, (at_half, high)
    assert f"red, solid: {high} scored {calibration.threshold_high:.3f} or more" in html
    assert f"green, dotted: {low} below {calibration.threshold_low:.3f}" in html
    assert "Each box is one 64 px sample" in html
    assert f"{high} in the likely generated range" in html  # the overlay's text alternative


def test_blocks_without_thresholds_say_so_instead_of_guessing() -> None:
    """A block from a server older than the threshold fields (the wire leaves them out)."""
    from provenance.v1 import provenance_pb2 as pb
    from provenance.wire.convert import detector_from_pb, detector_to_pb

    old = {
        "score": 0.9,
        "band_low": 0.85,
        "band_high": 0.95,
        "band": "uncertain",
        "model_id": "default",
        "model_version": "6",
        "crops": [{"x": 0, "y": 0, "width": 64, "height": 64, "score": 0.99}],
    }
    wire = detector_from_pb(pb.DetectorResult.FromString(detector_to_pb(old).SerializeToString()))
    assert "threshold_high" not in wire
    assert "did not say" in threshold_words(wire)
    marks = crop_marks(wire)
    assert marks is not None and [m.tone for m in marks.marks] == ["unknown"]
    new = {**old, "threshold_low": 0.3, "threshold_high": 0.99}
    assert [crop_tone(s, new) for s in (0.99, 0.98, 0.3, 0.29)] == ["high", "mid", "mid", "low"]


def test_score_words_do_not_call_the_range_a_band() -> None:
    """The range over crop draws is named for what it is: "band" is the label's word."""
    block = {"score": 0.2984, "band_low": 0.231, "band_high": 0.374, "band": "uncertain"}
    assert score_words(block) == "score 0.298 (0.23-0.37 with other crops)"
    assert re.fullmatch(SCORE_WORDS, score_words(block))
