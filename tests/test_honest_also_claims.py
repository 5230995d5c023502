"""An honest server's answers must pass the checks of a hostile one's (h-hostsrv58): the
same bytes signed by two devices (both claims listed, one later revoked), a re-encoded
and resized copy of a signed photo (DERIVED), and an unsigned photo, checked with the
server's real log key by `prov verify --log-key`, `prov scan --log-key` and `prov web
--log-key`. Real `prov serve` on a real port, real device keys, the real sample photo,
the real CLI and web front-end; nothing edited on the way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from tests.conftest import SAMPLES, Cli, ServerProc, start_web
from tests.test_verdict_several_claims import _device, _leaves, _revoke, _sign_copy


def _verify(cli: Cli, photo: Path, key: str) -> tuple[int, dict[str, Any]]:
    rc, out, err = cli("verify", str(photo), "--json", "--no-detect", "--log-key", key)
    assert out, err
    return rc, json.loads(out)


def _scan_rows(
    capsys: pytest.CaptureFixture[str], folder: Path, report: Path, server: str, key: str
) -> tuple[int, str, dict[str, dict[str, Any]]]:
    """`prov scan FOLDER --log-key KEY` in this process, its report new: (exit code,
    stderr, rows by file name)."""
    report.unlink(missing_ok=True)
    capsys.readouterr()
    args = ["scan", str(folder), "--report", str(report), "--server", server, "--workers", "0"]
    rc = prov_main([*args, "--log-key", key])
    _, err = capsys.readouterr()
    rows = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    return rc, err, {Path(r["path"]).name: r for r in rows}


def test_honest_answers_with_several_claims_pass_every_client_with_the_log_key(
    cli: Cli,
    server: ServerProc,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    homes = {n: _device(cli, monkeypatch, tmp_path, f"cam-{n}") for n in "ab"}
    (photo_a, leaf_a), (photo_b, leaf_b) = (
        _sign_copy(cli, monkeypatch, home, tmp_path / n) for n, home in homes.items()
    )
    with ProvenanceClient(server.address) as c:
        key = c.log_key()[0]
    for photo in (photo_a, photo_b):  # both valid: the earlier rests, the later listed
        rc, report = _verify(cli, photo, key)
        assert (rc, report["status"], _leaves(report)) == (0, "SIGNED_ORIGINAL", (leaf_a, [leaf_b]))
        assert report["evidence_checked"] == "log-key", report
    rc, text, err = cli("verify", str(photo_a), "--no-detect", "--log-key", key)
    assert rc == 0 and f"also       leaf {leaf_b}: device" in text and "(cam-b)" in text, err

    _revoke(cli, homes["a"])  # A revoked from before its claim: B rests, A listed revoked
    rc, report = _verify(cli, photo_a, key)
    assert (rc, report["status"], _leaves(report)) == (0, "SIGNED_ORIGINAL", (leaf_b, [leaf_a]))
    assert report["evidence"]["other_claims"][0]["device"]["revoked_at"], report

    # a folder of: the two signed copies, a re-encoded half-size copy, an unsigned photo
    folder = tmp_path / "folder"
    folder.mkdir()
    for n, photo in (("a", photo_a), ("b", photo_b)):
        shutil.copy(photo, folder / f"{n}.jpg")
    with Image.open(photo_a) as im:
        im.resize((im.width // 2, im.height // 2)).save(folder / "derived.jpg", quality=85)
    shutil.copy(SAMPLES / "grace_hopper.jpg", folder / "unsigned.jpg")
    rc, report = _verify(cli, folder / "derived.jpg", key)
    assert (rc, report["status"], report["evidence_checked"]) == (10, "DERIVED", "log-key"), report
    rc, err, rows = _scan_rows(capsys, folder, tmp_path / "scan.jsonl", server.address, key)
    assert rc == 0, (err, rows)
    got = {n: (r["status"], r["evidence_checked"]) for n, r in rows.items()}
    assert got == {
        "a.jpg": ("SIGNED_ORIGINAL", "log-key"),
        "b.jpg": ("SIGNED_ORIGINAL", "log-key"),
        "derived.jpg": ("DERIVED", "log-key"),
        "unsigned.jpg": ("UNSIGNED", None),
    }, rows
    assert [c["log"]["leaf_index"] for c in rows["a.jpg"]["evidence"]["other_claims"]] == [leaf_a]

    web = start_web(server.address, "--log-key", key)
    try:
        with httpx.Client(base_url=web.address, timeout=120) as http:
            for name in ("a.jpg", "derived.jpg", "unsigned.jpg"):
                files = {"file": (name, (folder / name).read_bytes())}
                r = http.post("/api/v1/verify", files=files, params={"detect": "0"})
                assert r.status_code == 200, (name, r.text)
                assert r.json()["status"] == rows[name]["status"], (name, r.text)
                page = http.post("/verify", files=files, data={"detect": "0"})
                assert page.status_code == 200, (name, page.text)
                assert ("Also signed" in page.text) == (name == "a.jpg"), (name, page.text)
            body = http.post(
                "/api/v1/verify",
                files={"file": ("a.jpg", (folder / "a.jpg").read_bytes())},
                params={"detect": "0"},
            ).json()
            assert body["evidence_checked"] == "log-key" and _leaves(body) == (leaf_b, [leaf_a])
    finally:
        web.stop()
