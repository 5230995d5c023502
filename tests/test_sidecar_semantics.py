"""What a sidecar that cannot vouch for the file does to the verdict, end to end: a sidecar
signed by a device of ANOTHER log (its key not enrolled here) beside a near copy of a
capture logged here, and unreadable sidecars found beside the file or given explicitly.
Real `prov serve` processes on real ports (two logs), real keys, the real sample photo,
the real CLI and the real web front-end (`prov web`).
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import SAMPLES, Cli, ServerProc, start_server, start_web


@pytest.fixture
def foreign(tmp_path: Path, enrolled: Cli, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """grace_hopper.jpg signed and logged on the test server, a re-encoded copy of it
    (a near copy: DERIVED), and beside the copy, as copy.jpg.prov, the sidecar a device
    enrolled with ANOTHER log wrote when it signed the original. Yields the copy."""
    here = tmp_path / "here"
    here.mkdir()
    original = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", here / "grace_hopper.jpg"))
    rc, _, err = enrolled("sign", str(original))
    assert rc == 0, err
    copy = here / "copy.jpg"
    with Image.open(original) as im:
        im.convert("RGB").save(copy, quality=70)
    other = start_server(tmp_path / "other.db")
    try:
        with monkeypatch.context() as m:
            m.setenv("PROV_HOME", str(tmp_path / "other-device"))
            m.setenv("PROV_SERVER", other.address)
            there = tmp_path / "there"
            there.mkdir()
            theirs = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", there / "grace_hopper.jpg"))
            for args in (
                ("device", "init"),
                ("admin", "enroll-token", "--label", "other-camera"),
            ):
                rc, out, err = enrolled(*args)
                assert rc == 0, err
            rc, _, err = enrolled("device", "enroll", "--token", out.strip())
            assert rc == 0, err
            rc, _, err = enrolled("sign", str(theirs))
            assert rc == 0, err
        shutil.copy(f"{theirs}.prov", f"{copy}.prov")
        yield copy
    finally:
        other.stop()


def _json(cli: Cli, *args: str) -> tuple[int, dict[str, Any]]:
    rc, out, err = cli("verify", *args, "--json", "--no-detect")
    return rc, json.loads(out)


def _forge(sidecar: Path) -> None:
    """Replace the sidecar's signature with 64 zero bytes (its key stays)."""
    doc = json.loads(sidecar.read_text())
    doc["signatures"][0]["sig"] = base64.b64encode(bytes(64)).decode()
    sidecar.write_text(json.dumps(doc))


def test_another_logs_sidecar_does_not_turn_a_near_copy_tampered(
    foreign: Path, enrolled: Cli
) -> None:
    """Before: 13 TAMPERED, "signature INVALID"; the same file with --no-sidecar: 10."""
    rc, bare = _json(enrolled, str(foreign), "--no-sidecar")
    assert rc == 10 and bare["status"] == "DERIVED", bare
    rc, doc = _json(enrolled, str(foreign))
    assert rc == 10 and doc["status"] == "DERIVED", doc
    assert doc["reasons"][: len(bare["reasons"])] == bare["reasons"]
    assert doc["evidence"]["claim"] == bare["evidence"]["claim"]  # the logged capture's
    note = doc["reasons"][-1]
    assert "signed by a key this log does not know" in note, note
    assert "verifies under the public key it carries" in note and "not used" in note
    rc, text, _ = enrolled("verify", str(foreign), "--no-detect")
    assert rc == 10 and "INVALID" not in text and "does not know" in text, text


def test_a_bad_signature_under_the_sidecars_own_key_is_named_but_not_tampered(
    foreign: Path, enrolled: Cli
) -> None:
    _forge(Path(f"{foreign}.prov"))
    rc, doc = _json(enrolled, str(foreign))
    assert rc == 10 and doc["status"] == "DERIVED", doc
    note = doc["reasons"][-1]
    assert "bad signature" in note and "does not verify even under the public key" in note


def test_the_web_api_gives_the_same_verdict_and_reason(
    foreign: Path, enrolled: Cli, server: ServerProc
) -> None:
    web = start_web(server.address)
    try:
        files = {
            "sidecar": ("copy.jpg.prov", Path(f"{foreign}.prov").read_bytes()),
            "file": ("copy.jpg", foreign.read_bytes()),
        }
        r = httpx.post(f"{web.address}/api/v1/verify", files=files, timeout=120)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["status"] == "DERIVED" and "key this log does not know" in doc["reasons"][-1]
        files["sidecar"] = ("copy.jpg.prov", b"{not json")
        r = httpx.post(f"{web.address}/api/v1/verify", files=files, timeout=120)
        assert r.status_code == 400, r.text
        assert "the `sidecar` field is not a usable sidecar" in r.text, r.text
    finally:
        web.stop()


def test_a_broken_sidecar_found_beside_the_file_is_a_reason_in_the_report(
    foreign: Path, enrolled: Cli
) -> None:
    """Before: a stderr warning only; the --json reasons said nothing."""
    Path(f"{foreign}.prov").write_text("{not json")
    rc, doc = _json(enrolled, str(foreign))
    assert rc == 10 and doc["status"] == "DERIVED", doc
    note = doc["reasons"][-1]
    assert "copy.jpg.prov" in note and "not usable" in note and "not used" in note, note
    rc, text, err = enrolled("verify", str(foreign), "--no-detect")
    assert rc == 10 and "copy.jpg.prov" in text and "not used" in text, text
    assert "warning" not in err, err


def test_a_broken_sidecar_given_with_dash_dash_sidecar_is_a_usage_error(
    foreign: Path, enrolled: Cli
) -> None:
    """Before: exit 1 ("error: sidecar is not valid JSON ...")."""
    broken = foreign.with_name("broken.prov")
    broken.write_text("{not json")
    rc, out, err = enrolled("verify", str(foreign), "--sidecar", str(broken), "--no-detect")
    assert rc == 2 and "--sidecar" in err and "not a usable sidecar" in err, err
    assert out == ""
