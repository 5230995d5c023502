"""Honest answers through h-hostsrv58's witness and receipt checks: a real `prov serve`
whose checkpoints a real `prov witness serve` cosigns (quorum 1), a signed photo and a
resized copy of it, a signed video and a trimmed copy of it, each verified with
`--witness` and `--log-key` together; and a capture with its claim embedded in Content
Credentials (`prov sign --c2pa`) with `--log-key`, by `prov verify` and `prov scan`.
Nothing edited on the way: every one must pass (exit 0 or 10), never SERVER EVIDENCE
REFUSED."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from clients.api import ProvenanceClient
from provenance.media.video.transcode import transcode
from tests.conftest import SAMPLES, Cli, ServerProc, sign_sample, wait_cosigned
from tests.test_cited_binding import _scan_here, _verify, server, witness

__all__ = ["server", "witness"]  # the witnessed server replaces conftest's here

FAST = {"preset": "ultrafast"}


def _log_key(address: str) -> str:
    with ProvenanceClient(address) as c:
        return c.log_key()[0]


def test_honest_photo_video_and_copies_pass_witness_and_log_key(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    photo, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    video, _ = sign_sample(enrolled, tmp_path, "fabric_pattern.mp4")
    small = tmp_path / "small.jpg"
    with Image.open(photo) as im:
        im.resize((im.width // 2, im.height // 2)).save(small, quality=85)
    trim = tmp_path / "fabric_trim.mp4"
    transcode(video, trim, 180, 320, start_s=2.1, end_s=5.0, crf=30, encoder_options=FAST)
    wait_cosigned(server.address, 3)  # enrollment, photo, video
    pins = (
        "--server",
        server.address,
        "--witness",
        witness[1],
        "--log-key",
        _log_key(server.address),
    )
    for path, status, code in (
        (photo, "SIGNED_ORIGINAL", 0),
        (small, "DERIVED", 10),
        (video, "SIGNED_ORIGINAL", 0),
        (trim, "DERIVED", 10),
    ):
        rc, out, err = _verify(capsys, str(path), *pins, "--json")
        assert rc == code, (path.name, rc, out, err)
        doc = json.loads(out)
        assert doc["status"] == status and doc["evidence_checked"] == "log-key", (path.name, doc)
        assert doc["witnesses"]["met"] is True, (path.name, doc["witnesses"])
        rc, out, err = _verify(capsys, str(path), *pins[:4])  # --witness alone
        assert rc == code and "cosigned by 1 of 1 witnesses" in out, (path.name, rc, out, err)


def test_an_honest_c2pa_capture_passes_verify_and_scan_with_the_log_key(
    ca_server: ServerProc, cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", folder / "photo.jpg"))
    rc, out, err = cli("sign", "--c2pa", str(photo))
    assert rc == 0, (out, err)
    Path(f"{photo}.prov").unlink(missing_ok=True)  # the embedded claim alone
    key = _log_key(ca_server.address)
    rc, out, err = _verify(
        capsys, str(photo), "--server", ca_server.address, "--log-key", key, "--json"
    )
    doc = json.loads(out)
    assert (rc, doc["status"], doc["evidence_checked"]) == (0, "SIGNED_ORIGINAL", "log-key"), err
    report = tmp_path / "scan.jsonl"
    rc, out, err = _scan_here(capsys, folder, report, ca_server.address, "--log-key", key)
    rows = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    [row] = [r for r in rows if r.get("path", "").endswith("photo.jpg")]
    assert rc == 0, (out, err, row)
    assert (row["status"], row["evidence_checked"]) == ("SIGNED_ORIGINAL", "log-key"), row
