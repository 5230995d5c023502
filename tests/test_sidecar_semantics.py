"""What a sidecar that cannot vouch for the file does to the verdict, end to end: a sidecar
signed by a device of ANOTHER log (its key not enrolled here) beside a near copy of a
capture logged here, and unreadable sidecars found beside the file or given explicitly.
Real `prov serve` processes on real ports (two logs), real keys, the real sample photo,
the real CLI and the real web front-end (`prov web`).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from clients.cli import main as prov_main
from tests.conftest import SAMPLES, Cli, ServerProc, device_env, start_server, start_web


@dataclass
class Logs:
    """The module's two logs, built once (`logs`): ``server``, where grace_hopper.jpg was
    signed and logged by the device in ``home``; and ``copy``, a re-encoded copy of it (a
    near copy: DERIVED) with, as copy.jpg.prov, the sidecar a device enrolled with
    ANOTHER log (a server since stopped) wrote when it signed the original."""

    server: ServerProc
    home: Path
    copy: Path


def _prov(*args: str) -> str:
    """``prov ARGS`` in this process, in the environment set now; its stdout (exit 0)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = prov_main(list(args))
    assert rc == 0, (args, out.getvalue(), err.getvalue())
    return out.getvalue()


def _signed_on(server: ServerProc, home: Path, folder: Path, label: str) -> Path:
    """grace_hopper.jpg copied into ``folder`` and signed (its sidecar beside it) by a
    device initialised in ``home`` and enrolled with ``server`` as ``label``."""
    with pytest.MonkeyPatch.context() as m:
        device_env(m, home, server.address)
        _prov("device", "init")
        token = _prov("admin", "enroll-token", "--label", label)
        _prov("device", "enroll", "--token", token.strip())
        folder.mkdir()
        photo = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", folder / "grace_hopper.jpg"))
        _prov("sign", str(photo))
    return photo


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logs]:
    """The two logs, their devices and the signed files, made once for the module's
    tests (none of them writes to a log or a device: each works on its own copy of the
    copy and its sidecar, `foreign`). Before, each test made them again: two servers,
    two devices, two signatures, 16-22 s of each test's setup under a full run's load."""
    root = tmp_path_factory.mktemp("sidecar-logs")
    server = start_server(root / "prov.db")
    try:
        original = _signed_on(server, root / "device", root / "here", "test-camera")
        copy = root / "here" / "copy.jpg"
        with Image.open(original) as im:
            im.convert("RGB").save(copy, quality=70)
        other = start_server(root / "other.db")
        try:
            theirs = _signed_on(other, root / "other-device", root / "there", "other-camera")
        finally:
            other.stop()
        shutil.copy(f"{theirs}.prov", f"{copy}.prov")
        yield Logs(server, root / "device", copy)
    finally:
        server.stop()


@pytest.fixture
def server(logs: Logs) -> ServerProc:
    """The module's log (`logs`), not one of the test's own."""
    return logs.server


@pytest.fixture
def enrolled(
    logs: Logs, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    """`prov` as the device enrolled with the module's log (`logs`)."""
    device_env(monkeypatch, logs.home, logs.server.address)
    return Cli(logs.home, logs.server.address, capsys)


@pytest.fixture
def foreign(tmp_path: Path, logs: Logs) -> Path:
    """This test's own copy of the near copy of the logged capture, with the other log's
    device's sidecar beside it as copy.jpg.prov (`Logs`)."""
    copy = Path(shutil.copy(logs.copy, tmp_path / "copy.jpg"))
    shutil.copy(f"{logs.copy}.prov", f"{copy}.prov")
    return copy


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
