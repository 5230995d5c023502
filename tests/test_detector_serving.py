"""The shipped detector served by a real `prov serve`: the advisory block in
`prov verify --json` for images and videos, and `prov detect` through the RPC."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLES, Cli, ServerProc, start_server


@pytest.fixture
def detecting(tmp_path: Path, cli: Cli, server: ServerProc, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    server.stop()
    srv = start_server(tmp_path / "det.db", "--detector", "--detector-device", "cpu")
    monkeypatch.setenv("PROV_SERVER", srv.address)
    yield srv
    srv.stop()


def test_verify_reports_the_advisory_block(detecting: ServerProc, cli: Cli, tmp_path: Path) -> None:
    gen = Path(shutil.copy(SAMPLES / "generated_controlnet.png", tmp_path / "g.png"))
    rc, out, err = cli("verify", str(gen), "--json")
    assert rc == 11, err
    report = json.loads(out)
    det = report["detector"]
    assert report["status"] == "UNSIGNED"  # the detector never changes the verdict
    assert (
        det["model_id"] == "default"
        and 0.0 <= det["band_low"] <= det["score"] <= det["band_high"] <= 1.0
    )
    assert det["band"] in {"likely generated", "uncertain", "no generator traces found"}
    assert len(det["crops"]) >= 8 and "advisory" in det["advisory"].lower()

    clip = Path(shutil.copy(SAMPLES / "fabric_pattern.mp4", tmp_path / "clip.mp4"))
    rc, out, err = cli("verify", str(clip), "--json")
    det = json.loads(out)["detector"]
    assert [f["timestamp_seconds"] for f in det["timeline"]] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert all(0.0 <= f["score"] <= 1.0 for f in det["timeline"])

    rc, out, err = cli("detect", str(gen), str(clip), "--json")
    assert rc == 0, err
    results = json.loads(out)["results"]
    assert [r["model_id"] for r in results] == ["default", "default"]
    assert "timeline" in results[1] and "timeline" not in results[0]
