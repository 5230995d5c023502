"""A `prov sign` killed after it queued a claim and before it wrote the sidecar leaves a
queued claim and no FILE.prov (the device writes the state, then the queue entry, then
the sidecar). Signing the same file again used to sign and queue a second claim for the
same bytes, and the next sync logged both. Now the second `prov sign` finds the queued
claim of the same bytes for the same sidecar path, writes its sidecar, and signs nothing
new: one claim logged. Real CLI, real server; the kill's leftover state is made by
removing the sidecar an offline `prov sign` wrote (exactly what the kill leaves)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import clients.device.sidecars
import clients.files
from clients.device import DeviceHome
from provenance.wire.sidecar import decode_sidecar
from tests.conftest import PASSPHRASE, SAMPLES, Cli, closed_port


def test_signing_again_reuses_the_queued_claim_of_the_same_bytes(
    enrolled: Cli, tmp_path: Path
) -> None:
    home = DeviceHome(enrolled.home)
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    side = photo.with_name(photo.name + ".prov")
    rc, out, err = enrolled("sign", str(photo), "--server", closed_port())
    assert rc == 4 and "queued" in out, (out, err)
    queued = decode_sidecar(side.read_bytes())
    side.unlink()  # the kill: the claim queued, its sidecar never written

    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0, (out, err)
    assert "already signed (#1) and logged" in out, out
    assert home.state().last_sequence == 1  # was 2: a second claim signed
    assert home.pending() == []
    logged = decode_sidecar(side.read_bytes())
    assert logged.signed_claim == queued.signed_claim and logged.receipt is not None

    # a file whose bytes changed since is signed anew, as before
    photo.write_bytes((SAMPLES / "grace_hopper.jpg").read_bytes())
    side.unlink()
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0 and "signed (#2) and logged" in out, (out, err)


def test_a_queued_claim_for_another_path_is_not_reused(enrolled: Cli, tmp_path: Path) -> None:
    """The same bytes under another name: a claim of its own (its sidecar belongs there)."""
    first = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "a.jpg"))
    second = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "b.jpg"))
    rc, out, _ = enrolled("sign", str(first), "--server", closed_port())
    assert rc == 4 and "queued" in out
    first.with_name("a.jpg.prov").unlink()
    rc, out, err = enrolled("sign", str(second))
    assert rc == 0 and "b.jpg: signed (#2)" in out, (out, err)


def test_signing_again_writes_the_logged_sidecar_kept_in_the_device_folder(
    enrolled: Cli, tmp_path: Path
) -> None:
    """A sidecar that could not be written beside its file (a folder in its place here; a
    full disk) is kept in PROV_HOME/sidecars/ with its receipt once logged. Signing the
    unchanged file again, once FILE.prov can be written, signed and logged a second
    claim for the same bytes (``signed (#2) and logged``), the first left in the device
    folder. Now it writes the kept sidecar beside the file and signs nothing new."""
    home = DeviceHome(enrolled.home)
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    side = photo.with_name(photo.name + ".prov")
    side.mkdir()  # FILE.prov cannot be written
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0 and "signed (#1) and logged" in out, (out, err)
    kept = home.sidecar_dir / "000000000001.prov"
    assert decode_sidecar(kept.read_bytes()).receipt is not None, err
    side.rmdir()

    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0 and "already signed (#1) and logged at leaf" in out, (out, err)
    assert f"written from the sidecar kept at {kept}" in " ".join(err.split()), err
    assert home.state().last_sequence == 1  # was 2: a second claim signed and logged
    assert side.read_bytes() == kept.read_bytes()
    rc, out, err = enrolled("verify", str(photo), "--no-detect")
    assert rc == 0 and "SIGNED_ORIGINAL" in out, (out, err)

    side.unlink()  # with --force, the file is signed anew, as before
    rc, out, err = enrolled("sign", "--force", str(photo))
    assert rc == 0 and "signed (#2) and logged" in out, (out, err)


def test_a_sidecar_put_back_without_its_receipt_is_queued_again_not_signed_anew(
    enrolled: Cli, tmp_path: Path
) -> None:
    """FILE.prov of this device's claim for these bytes, with no receipt, and its claim
    neither queued nor set aside here: an older copy put back (the photos restored from a
    backup made while the claim was queued), or its queue entry lost. Before, `prov sign`
    refused it (exit 2, ``not queued here``) and `--force` signed and logged a second
    claim for the same bytes. Now the claim is queued again from the sidecar and
    submitted: the log answers its own receipt, one claim logged."""
    home = DeviceHome(enrolled.home)
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    side = photo.with_name(photo.name + ".prov")
    rc, out, err = enrolled("sign", str(photo), "--server", closed_port())
    assert rc == 4 and "queued" in out, (out, err)
    backup = side.read_bytes()  # the photos' backup, made while the claim was queued
    rc, out, err = enrolled("device", "sync")
    assert rc == 0 and home.pending() == [], (out, err)
    side.write_bytes(backup)  # put back: no receipt

    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0 and "already signed (#1) and logged at leaf" in out, (out, err)
    assert "queued again" in err, err
    assert home.state().last_sequence == 1 and home.pending() == []
    assert decode_sidecar(side.read_bytes()).receipt is not None


def test_the_kept_sidecars_are_compared_with_one_read_of_the_image(
    enrolled: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signing an image looks for a logged claim of its bytes among the sidecars kept in
    PROV_HOME/sidecars/; one of another image (an export with Content Credentials
    could still bind it) read the whole image again for each kept sidecar: 10,000 kept
    took `prov sign` from 0.27 s to 5.2 s a file. Now the image is read once for all."""
    home = DeviceHome(enrolled.home)
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    side = photo.with_name(photo.name + ".prov")
    side.mkdir()  # FILE.prov cannot be written: the logged sidecar is kept
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0 and "signed (#1) and logged" in out, (out, err)
    kept = (home.sidecar_dir / "000000000001.prov").read_bytes()
    for seq in range(2, 22):  # more kept sidecars, all of other bytes
        (home.sidecar_dir / f"{seq:012d}.prov").write_bytes(kept)
    other = tmp_path / "other.jpg"
    other.write_bytes(photo.read_bytes() + b"other bytes")
    reads: list[Path] = []
    real = clients.files.read_bounded

    def counted(path: Path, limit: int, what: str) -> bytes:
        reads.append(Path(path))
        return real(path, limit, what)

    monkeypatch.setattr(clients.device.sidecars, "read_bounded", counted)
    rc, out, err = enrolled("sign", str(other))
    assert rc == 0 and "signed (#22) and logged" in out, (out, err)
    assert reads.count(other) <= 1, reads.count(other)


def test_a_put_back_sidecar_of_a_claim_never_logged_is_set_aside_then_signed_anew(
    enrolled: Cli, tmp_path: Path
) -> None:
    """FILE.prov of this device's claim #1, never logged, its queue entry lost, while
    claim #2 was logged since: queued again from the sidecar, the log refuses it (below
    the device's last sequence), it is set aside saying so, and the next `prov sign`
    signs the file anew."""
    home = DeviceHome(enrolled.home)
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    rc, out, err = enrolled("sign", str(photo), "--server", closed_port())
    assert rc == 4 and "queued" in out, (out, err)
    for entry in home.pending():
        entry.file.unlink()  # its queue entry lost
    other = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "grace.jpg"))
    rc, out, err = enrolled("sign", str(other))
    assert rc == 0 and "signed (#2) and logged" in out, (out, err)

    rc, out, err = enrolled("sign", str(photo))
    said = " ".join(err.split())
    assert rc == 1 and "already signed (#1) but refused by the server" in said, (out, err)
    assert "can never be logged; sign the file again" in said, (out, err)
    assert "queued again" in said and "set aside in" in said, (out, err)
    assert home.pending() == [], (out, err)
    assert home.state().last_sequence == 2
    rc2, out2, err2 = enrolled("sign", str(photo))
    assert rc2 == 0 and "signed (#3) and logged" in out2, (out2, err2)


def test_another_devices_unlogged_sidecar_is_not_queued_under_this_device(
    enrolled: Cli, tmp_path: Path
) -> None:
    """FILE.prov of ANOTHER device's claim for these bytes, with no receipt, placed next
    to the file: it is no claim of this device to queue again. `prov sign` refuses it as
    before (exit 2), nothing queued or signed here."""
    home = DeviceHome(enrolled.home)
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    other = DeviceHome(tmp_path / "other-device")
    other.init(PASSPHRASE.encode())
    other.sign_file(other.load_key(PASSPHRASE.encode()), photo)  # queued there, no receipt
    side = photo.with_name(photo.name + ".prov")
    placed = side.read_bytes()

    rc, out, err = enrolled("sign", str(photo))
    assert rc == 2 and "queued again" not in err, (out, err)
    assert home.pending() == [] and home.state().last_sequence == 0
    assert side.read_bytes() == placed
