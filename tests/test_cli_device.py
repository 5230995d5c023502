"""`prov device ...` on a folder that holds no device (a mistyped --home or $PROV_HOME)
says so instead of answering as if the device had nothing to do. The real CLI."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from clients.device import DeviceHome
from provenance.c2pa.authority import init_authority
from tests.conftest import PASSPHRASE, certified_device, closed_port, start_server


def test_sync_in_a_folder_without_a_device_says_there_is_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """(before: "nothing queued", exit 0, and the mistyped folder was created)"""
    home = tmp_path / "typo"
    for extra in ((), ("--retry-set-aside",)):
        capsys.readouterr()
        rc = prov_main(["device", "sync", "--home", str(home), "--server", closed_port(), *extra])
        got = capsys.readouterr()
        err = " ".join(got.err.split())
        assert rc == 1 and f"no device at {home}: run `prov device init` first" in err, err
        assert "nothing queued" not in got.out and not home.exists()


def test_init_and_enroll_wait_for_a_command_using_the_device(tmp_path: Path) -> None:
    """`prov device init --force` and `prov device enroll` rewrite the device's state
    (its sequence) as `prov sign` does: they wait for the device folder's lock like it
    (before: the key was replaced, or the state written back, under a running sign)."""
    home = DeviceHome(tmp_path / "dev")
    home.init(PASSPHRASE.encode())
    key = home.key_path.read_bytes()
    env = {**os.environ, "PROV_HOME": str(home.root), "PROV_PASSPHRASE": PASSPHRASE}
    with (home.root / ".lock").open("ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running `prov sign` holds it
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "clients.cli", "device", *args],
                # pipes: each writes one line, read here, while it waits for the lock
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for args in (
                ("init", "--force"),
                ("enroll", "--token", "t", "--server", closed_port()),
            )
        ]
        for p in procs:
            assert p.stderr is not None
            line = p.stderr.readline()
            assert line.startswith("waiting for another prov command"), line + p.stderr.read()
        assert home.key_path.read_bytes() == key and all(p.poll() is None for p in procs)
        fcntl.flock(held, fcntl.LOCK_UN)
    init, enroll = (p.communicate(timeout=60) for p in procs)
    assert procs[0].returncode == 0 and home.key_path.read_bytes() != key, init
    assert procs[1].returncode == 1 and "cannot reach the server" in enroll[1], enroll


def test_enroll_with_a_certificate_file_from_the_authority(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov device enroll --certificate FILE` (read bounded, as PEM text) enrolls a key
    the server's authority certified, over a real `prov serve --ca`."""
    init_authority(tmp_path / "ca", now=datetime.now(UTC))
    srv = start_server(tmp_path / "p.db", "--ca", str(tmp_path / "ca"))
    try:
        home, state, chain = certified_device(tmp_path, tmp_path / "ca")
        monkeypatch.setenv("PROV_PASSPHRASE", PASSPHRASE)
        args = ["--certificate", str(tmp_path / "chain.pem"), "--server", srv.address]
        rc = prov_main(["device", "enroll", "--home", str(home.root), *args])
        out = capsys.readouterr().out
        assert rc == 0 and f"device {state.device_id} enrolled" in out, out
        assert home.cert_path.read_bytes() == chain
    finally:
        srv.stop()


def test_sign_c2pa_without_a_certificate_says_how_to_get_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device enrolled before its server ran an authority has no certificate, and its key
    enrolls once: the error said to "enroll with a server that runs an enrollment authority"
    (a newcomer restarted the server with --ca and tried again); it says to make a new key.
    A device never enrolled is told to enroll."""
    import shutil
    from dataclasses import replace

    from tests.conftest import ROOT

    photo = tmp_path / "p.jpg"
    shutil.copyfile(ROOT / "clients" / "samples" / "rocket.jpg", photo)
    home = DeviceHome(tmp_path / "dev")
    home.init(PASSPHRASE.encode())
    monkeypatch.setenv("PROV_PASSPHRASE", PASSPHRASE)
    said = {}
    for enrolled in (False, True):
        if enrolled:
            home.save_state(replace(home.state(), server="127.0.0.1:50051"))
        capsys.readouterr()
        argv = ["sign", "--c2pa", str(photo), "--home", str(home.root), "--server", closed_port()]
        rc = prov_main(argv)
        said[enrolled] = " ".join(capsys.readouterr().err.split())
        assert rc == 1 and "this device has no certificate" in said[enrolled], said
    assert "a key enrolls once" in said[True] and "prov device init --home" in said[True], said
    assert "a key enrolls once" not in said[False], said
    assert not (tmp_path / "p.jpg.prov").exists()  # nothing signed


def test_sync_with_nothing_queued_names_the_claims_set_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A device whose claims were all refused (a revoked key, say) had `prov device sync`
    answer "nothing queued", exit 0, and nothing more: an engineer syncing a camera after
    a day offline read that all was well, though its claims sat in set_aside/ unlogged
    (found by walking through the README as a camera maker: revoke, sign, sync)."""
    home = DeviceHome(tmp_path / "dev")
    home.init(PASSPHRASE.encode())
    home.set_aside_dir.mkdir(parents=True, exist_ok=True)
    (home.set_aside_dir / "000000000001.json").write_text("{not json")
    capsys.readouterr()
    rc = prov_main(["device", "sync", "--home", str(home.root), "--server", closed_port()])
    got = capsys.readouterr()
    out = " ".join(got.out.split())
    assert rc == 0, got
    assert "nothing queued" in out, out
    assert "1 claim set aside" in out and "prov device show" in out, out
    assert "--retry-set-aside" in out, out


def test_sync_with_nothing_queued_or_set_aside_says_only_that(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = DeviceHome(tmp_path / "dev")
    home.init(PASSPHRASE.encode())
    capsys.readouterr()
    rc = prov_main(["device", "sync", "--home", str(home.root), "--server", closed_port()])
    got = capsys.readouterr()
    assert rc == 0 and got.out.strip() == "nothing queued", got
