"""Honest Lookup answers after a device's revocation pass the checks of lookupcite60
(`clients.cited.check_lookup_verdict`) and findsha60 (the explorer's search by file
hash): a real `prov serve`, a real device whose key is revoked over its captures, a
file signed twice, a signed video, a resized copy and an unsigned photo, scanned with
`prov scan` (with and without --log-key) and looked up through a real `prov web`; no
refused row, no 502. No mocks."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import SAMPLES, Cli, ServerProc, device_env, enroll, sign_sample
from tests.test_derived_binding import _resized
from tests.test_scan_log_key import _log_key, _scan
from tests.test_web_cited import _web


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_revoked_device_lookups_scans_and_searches_are_not_refused(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before and after the device's key is revoked since before its captures (every
    claim then covered: REVOKED_KEY, exact and near): `prov scan` of a folder mixing the
    signed photo (signed twice: two claims of the same bytes), the signed video, a
    resized copy and an unsigned photo has no refused row (exit not 3), with and
    without --log-key; `POST /api/v1/lookup` answers 200; the explorer's search by each
    signed file's hash shows the entry of its first claim (200, the page redirects), a
    device id goes to its device page."""
    first, device_id = sign_sample(enrolled, tmp_path, "rocket.jpg")
    twice = tmp_path / "again"
    twice.mkdir()
    second, _ = sign_sample(enrolled, twice, "rocket.jpg")
    assert _sha(first) == _sha(second)
    video, _ = sign_sample(enrolled, tmp_path, "fabric_pattern.mp4")
    cat, _ = sign_sample(enrolled, tmp_path, "chelsea.png")
    folder = tmp_path / "scan"
    folder.mkdir()
    for p in (first, video):
        shutil.copy(p, folder / p.name)
    _resized(cat, folder / "cat_small.jpg")
    shutil.copy(SAMPLES / "generated_controlnet.png", folder / "unsigned.png")
    # signed in the folder (its sidecar beside it), then edited: VerifyFile with the
    # sidecar, an honest TAMPERED (not a lookup's answer: not held to its rules)
    edited, _ = sign_sample(enrolled, folder, "grace_hopper.jpg")
    img = Image.open(edited).convert("RGB")
    img.paste((255, 0, 0), (0, 0, img.width // 2, img.height // 2))
    img.save(edited, "JPEG", quality=90)
    log_key = _log_key(server.address)
    report = tmp_path / "scan.jsonl"
    shown: list[list[int]] = []
    for revoked in (False, True):
        if revoked:
            rc, _, err = enrolled(
                "admin",
                "revoke",
                device_id,
                "--reason",
                "lost",
                "--since",
                "2026-01-01T00:00:00Z",
            )
            assert rc == 0, err
        for pin in ((), ("--log-key", log_key)):
            rc, out, err, rows = _scan(capsys, folder, report, server.address, *pin)
            assert rc != 3 and "REFUSED" not in err, (revoked, pin, rc, out, err)
            got = {n: (r["status"], r["evidence_checked"]) for n, r in rows.items()}
            want = "REVOKED_KEY" if revoked else None
            for n in ("rocket.jpg", "fabric_pattern.mp4", "cat_small.jpg"):
                assert got[n][1] != "refused", (n, rows[n])
                if want:
                    assert got[n][0] == want, (n, rows[n])
            assert got["unsigned.png"][0] == "UNSIGNED", rows
            assert got["grace_hopper.jpg"][0] == "TAMPERED", rows
        pinned = ("--log-key", log_key) if revoked else ()
        with _web(server.address, *pinned) as http:
            queries = [
                {"ref": p.name, "sha256": _sha(p)} for p in (first, video, folder / "cat_small.jpg")
            ]
            r = http.post("/api/v1/lookup", json={"queries": queries})
            assert r.status_code == 200, r.text
            statuses = [x["status"] for x in r.json()["results"]]
            assert statuses == (["REVOKED_KEY"] * 2 if revoked else ["SIGNED_ORIGINAL"] * 2) + [
                "UNSIGNED"
            ], statuses
            indexes = []
            for p in (first, video):
                r = http.get("/api/v1/entries", params={"sha256": _sha(p)})
                assert r.status_code == 200, (revoked, p.name, r.text)
                [entry] = r.json()["entries"]
                indexes.append(entry["index"])
                page = http.get("/log/find", params={"q": _sha(p)})
                assert page.status_code == 200, (revoked, page.text)
                assert f"Log entry #{entry['index']}" in page.text, (revoked, page.text)
            # the first of the photo's two claims (the second lies between it and the video's)
            assert indexes[0] == indexes[1] - 2, indexes
            shown.append(indexes)
            r = http.get("/log/find", params={"q": device_id})
            assert r.status_code == 303 and device_id in r.headers["location"], r.text
    assert shown[0] == shown[1], shown  # the same entries after the revocation


def test_bytes_signed_by_a_revoked_and_a_valid_device_find_the_valid_claim(
    enrolled: Cli,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same bytes signed by a device whose revocation covers its claim, then by a
    second device: the lookup answers SIGNED_ORIGINAL citing the second claim and listing
    the first (`rank_exact`); `prov scan --log-key` checks it (no refused row, exit 0),
    `POST /api/v1/lookup` answers 200 and the explorer's search shows the second claim's
    entry."""
    first, device_a = sign_sample(enrolled, tmp_path, "rocket.jpg")
    rc, _, err = enrolled(
        "admin", "revoke", device_a, "--reason", "lost", "--since", "2026-01-01T00:00:00Z"
    )
    assert rc == 0, err
    other = Cli(tmp_path / "device_b", enrolled.server, capsys)
    device_env(monkeypatch, other.home, enrolled.server)
    enroll(other, "second-camera")
    folder = tmp_path / "b"
    folder.mkdir()
    second, device_b = sign_sample(other, folder, "rocket.jpg")
    assert _sha(first) == _sha(second) and device_a != device_b
    scan = tmp_path / "scan"
    scan.mkdir()
    shutil.copy(first, scan / first.name)
    log_key = _log_key(enrolled.server)
    rc, out, err, rows = _scan(
        capsys, scan, tmp_path / "scan.jsonl", enrolled.server, "--log-key", log_key
    )
    assert rc == 0 and "REFUSED" not in err, (rc, out, err)
    row = rows["rocket.jpg"]
    assert (row["status"], row["evidence_checked"]) == ("SIGNED_ORIGINAL", "log-key"), row
    with _web(enrolled.server, "--log-key", log_key) as http:
        r = http.post("/api/v1/lookup", json={"queries": [{"ref": "x", "sha256": _sha(first)}]})
        assert r.status_code == 200, r.text
        [result] = r.json()["results"]
        assert result["status"] == "SIGNED_ORIGINAL", result
        r = http.get("/api/v1/entries", params={"sha256": _sha(first)})
        assert r.status_code == 200, r.text
        [entry] = r.json()["entries"]
        assert entry["claim"]["device_id"] == device_b, entry
