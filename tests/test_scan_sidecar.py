"""`prov scan` checks a sidecar beside a file as `prov verify` does: the whole sidecar
(its claim, the public key it carries, its receipt, a video's chunk hashes) goes to the
server, so a row gives `prov verify`'s reasons. Real servers, a real device key."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clients.cli import main as prov_main
from clients.scan.engines import LocalEngine
from clients.scan.pipeline import run_scan
from clients.scan.worker import ScanConfig
from tests.conftest import ADMIN_TOKEN, PASSPHRASE, SAMPLES, ServerProc, start_server


def _prov(*args: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = prov_main(list(args))
    return rc, buf.getvalue()


@pytest.fixture
def two_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """rocket.jpg and fabric.mp4 signed with a device enrolled on one server
    ($PROV_SERVER), and the address of another server (its own log) that has never seen
    that device."""
    first = start_server(tmp_path / "first.db")
    other: ServerProc | None = None
    try:
        for k, v in {
            "PROV_HOME": str(tmp_path / "device"),
            "PROV_PASSPHRASE": PASSPHRASE,
            "PROV_ADMIN_TOKEN": ADMIN_TOKEN,
            "PROV_SERVER": first.address,
        }.items():
            monkeypatch.setenv(k, v)
        assert _prov("device", "init")[0] == 0
        rc, token = _prov("admin", "enroll-token", "--label", "cam")
        assert rc == 0
        assert _prov("device", "enroll", "--token", token.strip())[0] == 0
        photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
        video = Path(shutil.copy(SAMPLES / "fabric_pattern.mp4", tmp_path / "fabric.mp4"))
        assert _prov("sign", str(photo), str(video))[0] == 0
        other = start_server(tmp_path / "other.db")
        yield photo, other.address
    finally:
        first.stop()
        if other is not None:
            other.stop()


def test_a_sidecar_from_another_log_reads_as_prov_verify_says(
    two_logs: tuple[Path, str], tmp_path: Path
) -> None:
    photo, other = two_logs
    out = tmp_path / "scan.jsonl"
    run_scan([str(photo)], out, ScanConfig(server=other), LocalEngine(0))
    rows: list[dict[str, Any]] = [json.loads(line) for line in out.read_text().splitlines()]
    [row] = [r for r in rows if r["path"].endswith("rocket.jpg")]
    rc, text = _prov("verify", str(photo), "--server", other, "--json", "--no-detect")
    verified = json.loads(text)
    assert rc == 11 and verified["status"] == "UNSIGNED"
    [said] = [r for r in verified["reasons"] if "a sidecar came with the file" in r]
    assert "its signature verifies under the public key it carries" in said
    # before: the scan sent the claim alone, and said no public key came with it
    assert row["status"] == "UNSIGNED"
    assert said in row["reasons"], row["reasons"]
    assert not any("carrying no public key" in r for r in row["reasons"])


def test_a_damaged_video_row_names_its_damaged_ranges_as_prov_verify_does(
    two_logs: tuple[Path, str], tmp_path: Path
) -> None:
    photo, _ = two_logs
    video = photo.with_name("fabric.mp4")
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte of the signed video changed
    desk = tmp_path / "desk"
    desk.mkdir()
    damaged = desk / "fabric.mp4"
    damaged.write_bytes(bytes(data))
    shutil.copy(f"{video}.prov", f"{damaged}.prov")
    out = tmp_path / "scan.jsonl"
    run_scan([str(desk)], out, ScanConfig(server=os.environ["PROV_SERVER"]), LocalEngine(0))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    [row] = [r for r in rows if r["path"].endswith("fabric.mp4")]
    rc, text = _prov("verify", str(damaged), "--json", "--no-detect")
    verified = json.loads(text)
    [said] = [r for r in verified["reasons"] if "differ from the signed file (" in r]
    # before: the scan sent no chunk hashes, and its row could not name the range
    assert row["status"] == verified["status"] == "TAMPERED", (row, verified)
    assert said in row["reasons"], row["reasons"]
