"""`prov sign` never destroys a sidecar that holds a receipt; signing an unchanged file
again signs nothing; `prov receipt refresh` on a refused claim says it was set aside.
Through the real CLI against a real `prov serve`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clients.device import DeviceHome
from tests.conftest import SAMPLES, Cli, ServerProc, sign_sample, start_server

pytestmark = pytest.mark.slow  # each test starts a `prov serve` process


def _sign_logged(cli: Cli, tmp_path: Path) -> tuple[Path, Path, bytes]:
    """Sign a copy of a sample photo (logged at leaf 1): the photo, its sidecar and the
    sidecar's bytes."""
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "IMG_0005.jpg"))
    rc, out, err = cli("sign", str(photo))
    assert rc == 0 and "logged at leaf 1" in out, err
    side = Path(f"{photo}.prov")
    return photo, side, side.read_bytes()


def test_sign_refuses_to_replace_a_logged_sidecar(enrolled: Cli, tmp_path: Path) -> None:
    photo, side, logged = _sign_logged(enrolled, tmp_path)
    shutil.copy(SAMPLES / "grace_hopper.jpg", photo)  # the file now holds other content

    rc, out, err = enrolled("sign", str(photo))
    assert rc == 2, (out, err)
    assert "already holds the log receipt (leaf 1)" in err and "other content" in err
    assert "--force" in err and "IMG_0005.jpg.prov.bak" in err
    assert side.read_bytes() == logged  # untouched
    home = DeviceHome(enrolled.home)
    assert home.state().last_sequence == 1 and home.pending() == []  # nothing signed

    rc, out, err = enrolled("sign", "--force", str(photo))
    assert rc == 0 and "signed (#2) and logged at leaf 2" in out, err
    backup = Path(f"{side}.bak")
    assert backup.read_bytes() == logged and "kept as" in err
    assert json.loads(side.read_text())["receipt"]
    # a second forced re-sign never overwrites the first backup
    shutil.copy(SAMPLES / "chelsea.png", photo)
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 2 and "copies the old sidecar to IMG_0005.jpg.prov.bak2" in err, err
    rc, out, err = enrolled("sign", "--force", str(photo))
    assert rc == 0 and "signed (#3)" in out, err
    assert backup.read_bytes() == logged and Path(f"{side}.bak2").exists()


def test_sign_refusal_of_another_files_sidecar_does_not_only_blame_a_change(
    enrolled: Cli, tmp_path: Path
) -> None:
    # A newsroom copies a signed photo's sidecar beside another photo: the refusal said
    # only "(the file changed since)", which this file never did.
    _, side, logged = _sign_logged(enrolled, tmp_path)
    other = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "IMG_0007.jpg"))
    shutil.copy(side, f"{other}.prov")
    rc, out, err = enrolled("sign", str(other))
    assert rc == 2, (out, err)
    flat = " ".join(err.split())
    assert "for other content (the file changed since, or the sidecar is another file's)" in flat
    assert Path(f"{other}.prov").read_bytes() == logged  # untouched


def test_sign_of_a_file_signed_for_a_replaced_log_says_to_sign_it_again(
    enrolled: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each `make web` starts a new log. A file signed for the old one, signed again once
    the device enrolled with the new one (and signed there), gets its old claim queued
    again and refused for good (its sequence is behind the log's): exit 1, set aside.
    Seen failing first: the refusal gave the server's words and the set-aside folder, no
    word of what to do; the same command run again signs it anew (exit 0)."""
    photo, side, _ = _sign_logged(enrolled, tmp_path)  # claim #1, logged by the old log
    old_side = side.read_bytes()
    other = start_server(tmp_path / "new-log.db")
    try:
        monkeypatch.setenv("PROV_SERVER", other.address)
        rc, token, err = enrolled("admin", "enroll-token", "--label", "again")
        assert rc == 0, err
        rc, out, err = enrolled("device", "enroll", "--token", token.strip())
        assert rc == 0, err
        sign_sample(enrolled, tmp_path, "grace_hopper.jpg")  # claim #2, the new log's
        side.write_bytes(old_side)
        rc, out, err = enrolled("sign", str(photo))
        flat = " ".join(err.split())
        assert rc == 1 and "refused by the server" in flat, (out, err)
        assert (
            "the log holds later claims of this key (up to sequence 2), so this one can"
            " never be logged; sign the file again for a new claim (`prov sign FILE`)"
        ) in flat, flat
        rc, out, err = enrolled("sign", str(photo))  # as it says
        assert rc == 0 and "signed (#3) and logged" in out, (out, err)
    finally:
        other.stop()


def test_a_copy_of_the_folder_whose_number_the_log_took_is_told_so(
    enrolled: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two copies of one device folder sign with the same numbers: one logs claim #1, the
    other's own #1 (another photo) is refused for good, the log's last sequence equal to
    the claim's, not past it. Seen failing first: the refusal said "the log holds later
    claims of this key (up to sequence 1)", which it does not (it holds another claim
    numbered 1), and did not name the copy signing elsewhere; signing again, as it says,
    numbers the file #2, which the log takes."""
    copy = tmp_path / "copy-home"
    shutil.copytree(enrolled.home, copy)  # taken before either signs
    _sign_logged(enrolled, tmp_path)  # claim #1 of this key, logged
    monkeypatch.setenv("PROV_HOME", str(copy))
    photo = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "IMG_0006.jpg"))
    rc, out, err = enrolled("sign", str(photo))
    flat = " ".join(err.split())
    assert rc == 1 and "refused by the server" in flat, (out, err)
    assert "later claims" not in flat, flat
    assert (
        "the log already holds another claim of this key numbered 1 (a copy of this device"
        " folder signing too, or this folder restored from a backup?), so this one can never"
        " be logged;"
        " sign the file again for a new claim (`prov sign FILE`)"
    ) in flat, flat
    rc, out, err = enrolled("sign", str(photo))  # as it says
    assert rc == 0 and "signed (#2) and logged" in out, (out, err)


def test_sign_unchanged_file_again_signs_nothing(enrolled: Cli, tmp_path: Path) -> None:
    photo, side, logged = _sign_logged(enrolled, tmp_path)
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0, err
    assert "already signed (#1) and logged at leaf 1" in out and "not signed again" in out
    assert side.read_bytes() == logged
    assert DeviceHome(enrolled.home).state().last_sequence == 1


def test_sign_queued_file_again_signs_nothing(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "IMG_0006.jpg"))
    server.stop()
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 4 and "signed (#1), queued" in out, err
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 4 and "already signed (#1), queued" in out, err
    home = DeviceHome(enrolled.home)
    assert home.state().last_sequence == 1 and len(home.pending()) == 1


def test_revoked_device_keeps_receipt_and_refresh_names_set_aside(
    enrolled: Cli, tmp_path: Path
) -> None:
    photo, side, logged = _sign_logged(enrolled, tmp_path)
    home = DeviceHome(enrolled.home)
    rc, out, err = enrolled("admin", "revoke", home.state().device_id, "--reason", "lost")
    assert rc == 0, err

    rc, out, err = enrolled("sign", str(photo))  # unchanged: the receipt stays
    assert rc == 0 and "already signed (#1)" in out, err
    assert side.read_bytes() == logged

    other = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "IMG_0007.png"))
    rc, out, err = enrolled("sign", str(other))
    assert rc == 1 and "refused by the server" in err, (out, err)
    assert len(home.set_aside()) == 1
    rc, out, err = enrolled("receipt", "refresh", f"{other}.prov")
    assert rc == 1, (out, err)
    assert "refused the claim and it was set aside" in err and "revoked" in err.lower()
    assert "run `prov device sync`" not in err
