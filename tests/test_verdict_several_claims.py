"""Several logged claims of the same exact bytes (found by a new-user walk): device A
signs a photo, its key is later revoked with --since in the past, device B signs a copy
of the same bytes. `prov verify` must rest on the best-standing claim (B's:
SIGNED_ORIGINAL), report A's as evidence with its revocation, and use B's sidecar rather
than call it "another claim". Real `prov serve` on a real port, real device keys made by
`prov device init`, the real sample photo, the real CLI, and the web front-end."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients.device import DeviceHome
from provenance.wire.sidecar import decode_sidecar
from tests.conftest import SAMPLES, Cli, ServerProc, start_web


def _device(cli: Cli, mp: pytest.MonkeyPatch, tmp_path: Path, name: str) -> Path:
    """A new device home, initialised and enrolled with the server under label ``name``."""
    home = tmp_path / name
    mp.setenv("PROV_HOME", str(home))
    assert cli("device", "init")[0] == 0
    rc, token, err = cli("admin", "enroll-token", "--label", name)
    assert rc == 0, err
    rc, _, err = cli("device", "enroll", "--token", token.strip())
    assert rc == 0, err
    return home


def _sign_copy(cli: Cli, mp: pytest.MonkeyPatch, home: Path, folder: Path) -> tuple[Path, int]:
    """A copy of the sample photo in ``folder``, signed by the device at ``home``: the
    copy (its sidecar beside it) and the claim's log index."""
    folder.mkdir()
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", folder / "rocket.jpg"))
    mp.setenv("PROV_HOME", str(home))
    rc, _, err = cli("sign", str(photo))
    assert rc == 0, err
    receipt = decode_sidecar(Path(f"{photo}.prov").read_bytes()).receipt
    assert receipt is not None
    return photo, receipt.leaf_index


def _revoke(cli: Cli, home: Path) -> None:
    """Revoke the device at ``home`` as from an hour ago (before its claims were logged)."""
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    device_id = DeviceHome(home).state().device_id
    rc, _, err = cli("admin", "revoke", device_id, "--reason", "phone stolen", "--since", since)
    assert rc == 0, err


def _two_signers(
    cli: Cli, mp: pytest.MonkeyPatch, tmp_path: Path, revoked: str
) -> dict[str, tuple[Path, int]]:
    """Devices "a" then "b" each sign a copy of the same photo; then the key of
    ``revoked`` is revoked from before both claims. Each device's copy and log index."""
    homes = {n: _device(cli, mp, tmp_path, f"cam-{n}") for n in "ab"}
    copies = {n: _sign_copy(cli, mp, home, tmp_path / n) for n, home in homes.items()}
    _revoke(cli, homes[revoked])
    return copies


def _verify(cli: Cli, photo: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    rc, out, err = cli("verify", str(photo), "--json", "--no-detect", *extra)
    assert out, err
    return rc, json.loads(out)


def _leaves(report: dict[str, Any]) -> tuple[int, list[int]]:
    """The log index the verdict rests on, and those of the other claims, in order."""
    ev = report["evidence"]
    return ev["claim"]["log"]["leaf_index"], [c["log"]["leaf_index"] for c in ev["other_claims"]]


def _revoked(report: dict[str, Any]) -> list[bool]:
    return [c["device"]["revoked_at"] is not None for c in report["evidence"]["other_claims"]]


def test_a_valid_claim_beats_a_revoked_one_of_the_same_bytes(
    cli: Cli, server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copies = _two_signers(cli, monkeypatch, tmp_path, revoked="a")
    (photo_a, leaf_a), (photo_b, leaf_b) = copies["a"], copies["b"]

    rc, report = _verify(cli, photo_b)  # B's copy, B's sidecar beside it
    assert (rc, report["status"]) == (0, "SIGNED_ORIGINAL"), report["reasons"]
    assert _leaves(report) == (leaf_b, [leaf_a]) and _revoked(report) == [True]
    assert report["evidence"]["claim"]["device"]["label"] == "cam-b"
    assert report["evidence"]["other_claims"][0]["device"]["revocation_reason"] == "phone stolen"
    assert not any("another claim" in r for r in report["reasons"])
    assert any(f"log index {leaf_a}" in r and "phone stolen" in r for r in report["reasons"])

    rc, alone = _verify(cli, photo_b, "--no-sidecar")  # the same verdict on the bytes alone
    assert (rc, alone["status"], _leaves(alone)) == (0, "SIGNED_ORIGINAL", (leaf_b, [leaf_a]))

    rc, report = _verify(cli, photo_a)  # A's copy with A's (revoked) sidecar: same bytes
    assert (rc, report["status"], _leaves(report)) == (0, "SIGNED_ORIGINAL", (leaf_b, [leaf_a]))
    assert not any("another claim" in r for r in report["reasons"])
    assert any(f"the sidecar holds the claim at log index {leaf_a}" in r for r in report["reasons"])

    rc, text, _ = cli("verify", str(photo_b), "--no-detect")
    assert rc == 0 and f"also       leaf {leaf_a}: device" in text and "revoked" in text

    web = start_web(server.address)
    try:
        with httpx.Client(base_url=web.address, timeout=120) as http:
            files = {
                "sidecar": ("rocket.jpg.prov", Path(f"{photo_b}.prov").read_bytes()),
                "file": ("rocket.jpg", photo_b.read_bytes()),
            }
            r = http.post("/api/v1/verify", files=files, params={"detect": "0"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["status"] == "SIGNED_ORIGINAL" and _leaves(body) == (leaf_b, [leaf_a])
            assert not any("another claim" in x for x in body["reasons"])
            page = http.post("/verify", files=files, data={"detect": "0"})
            assert page.status_code == 200, page.text
            assert 'data-status="SIGNED_ORIGINAL"' in page.text
            assert "Also signed" in page.text and f'href="/log/entries/{leaf_a}"' in page.text
            assert "phone stolen" in page.text
    finally:
        web.stop()


def test_the_mirror_case_rests_on_the_earlier_valid_claim(
    cli: Cli, server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid, B revoked: B's copy with B's sidecar is still A's signed original."""
    copies = _two_signers(cli, monkeypatch, tmp_path, revoked="b")
    (_, leaf_a), (photo_b, leaf_b) = copies["a"], copies["b"]
    rc, report = _verify(cli, photo_b)
    assert (rc, report["status"], _leaves(report)) == (0, "SIGNED_ORIGINAL", (leaf_a, [leaf_b]))
    assert report["evidence"]["claim"]["device"]["label"] == "cam-a" and _revoked(report) == [True]
    assert any(f"the sidecar holds the claim at log index {leaf_b}" in r for r in report["reasons"])
    assert not any("another claim" in r for r in report["reasons"])


def test_three_claims_rank_valid_before_revoked_then_by_log_index(
    cli: Cli, server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    homes = [_device(cli, monkeypatch, tmp_path, f"cam-{n}") for n in "abc"]
    signed = [_sign_copy(cli, monkeypatch, h, tmp_path / f"copy-{i}") for i, h in enumerate(homes)]
    (photo_a, a), (_, b), (photo_c, c) = signed
    assert a < b < c
    _revoke(cli, homes[0])
    rc, report = _verify(cli, photo_c)  # C's copy: rests on B (valid, earlier than C)
    assert (rc, report["status"], _leaves(report)) == (0, "SIGNED_ORIGINAL", (b, [c, a]))
    assert _revoked(report) == [False, True]
    assert any(f"the sidecar holds the claim at log index {c}" in r for r in report["reasons"])
    _revoke(cli, homes[1])
    _revoke(cli, homes[2])
    rc, report = _verify(cli, photo_a)  # all revoked: the earliest claim, the others listed
    assert (rc, report["status"], _leaves(report)) == (12, "REVOKED_KEY", (a, [b, c]))
    assert _revoked(report) == [True, True] and report["evidence"]["claim"]["device"]["revoked_at"]
    assert not any("another claim" in r or "sidecar holds" in r for r in report["reasons"])
