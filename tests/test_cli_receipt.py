"""`prov receipt export|verify|refresh --home DIR`: the device folder the receipt commands
ask why a sidecar holds no receipt (queued there, set aside, or unknown), as every other
command's --home ($PROV_HOME, else ~/.prov). The real CLI, a real key and queue; the
server is a closed loopback port, so the signed claim stays queued."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import PASSPHRASE, SAMPLES, closed_port

from clients.cli import main as prov_main
from provenance.log.checkpoint import generate_log_key


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = prov_main(list(args))
    got = capsys.readouterr()
    return rc, " ".join((got.out + got.err).split())


def test_receipt_commands_read_the_device_folder_given_by_home(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROV_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("PROV_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # ~/.prov: another, empty folder
    home = tmp_path / "camera"
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    server = closed_port()
    assert _run(capsys, "device", "init", "--home", str(home))[0] == 0
    rc, text = _run(capsys, "sign", str(photo), "--home", str(home), "--server", server)
    assert rc == 0 and "queued" in text, text
    sidecar = f"{photo}.prov"
    log_key = generate_log_key(tmp_path / "log.pem", "example.org/log").verifier_key()
    commands = (
        ("receipt", "verify", sidecar, "--log-key", log_key),
        ("receipt", "export", sidecar),
        ("receipt", "refresh", sidecar, "--server", server),
    )
    for args in commands:
        rc, text = _run(capsys, *args, "--home", str(home))
        assert rc == 1 and "the claim is queued on this device" in text, (args, text)
        rc, text = _run(capsys, *args)  # ~/.prov does not hold the claim
        assert rc == 1 and "does not hold it" in text, (args, text)
        monkeypatch.setenv("PROV_HOME", str(home))  # the same folder from the environment
        rc, text = _run(capsys, *args)
        assert rc == 1 and "the claim is queued on this device" in text, (args, text)
        monkeypatch.delenv("PROV_HOME")
