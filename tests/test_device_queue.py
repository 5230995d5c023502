"""The offline queue never jams (issue 11): deleted media, long names, refused and
unreadable entries; through the real CLI against real `prov serve` processes."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from clients.device import MAX_QUEUE_ENTRY_BYTES, DeviceHome
from provenance.wire.sidecar import decode_sidecar
from tests.conftest import SAMPLES, Cli, ServerProc, start_server

pytestmark = pytest.mark.slow  # each test starts one or two `prov serve` processes


def _verify(cli: Cli, path: Path) -> str:
    rc, out, err = cli("verify", str(path), "--json", "--no-detect", "--no-sidecar")
    assert out, err
    return str(json.loads(out)["status"])


def _show(cli: Cli) -> dict[str, Any]:
    rc, out, err = cli("device", "show")
    assert rc == 0, err
    shown: dict[str, Any] = json.loads(out)
    return shown


def _queue_three(cli: Cli, server: ServerProc, folder: Path) -> list[Path]:
    """Three samples copied into ``folder`` and signed with ``server`` stopped: queued
    as claims 1, 2 and 3."""
    files = [
        Path(shutil.copy(SAMPLES / n, folder / n))
        for n in ("rocket.jpg", "chelsea.png", "grace_hopper.jpg")
    ]
    server.stop()
    rc, out, err = cli("sign", *map(str, files))
    assert rc == 4 and out.count("queued") == 3, err
    return files


def test_queue_survives_deleted_media(
    enrolled: Cli, server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    x = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "a" / "x.jpg"))
    y = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "b" / "y.png"))
    kept_x = tmp_path / "x-copy.jpg"
    shutil.copy(x, kept_x)
    server.stop()
    rc, out, err = enrolled("sign", str(x), str(y))
    assert rc == 4 and out.count("queued") == 2, err
    shutil.rmtree(tmp_path / "a")  # the media, its sidecar and its folder are gone

    srv = start_server(server.db)
    try:
        monkeypatch.setenv("PROV_SERVER", srv.address)
        rc, out, err = enrolled("device", "sync")
        assert rc == 0 and "submitted 2 of 2" in out, err
        assert "kept at" in err  # the receipt of the deleted capture went to the device folder
        home = DeviceHome(enrolled.home)
        assert home.pending() == [] and home.set_aside() == []
        kept = json.loads((home.sidecar_dir / "000000000001.prov").read_text())
        assert kept["receipt"]
        assert not (tmp_path / "a").exists()  # a deleted folder is never re-created
        assert json.loads(Path(f"{y}.prov").read_text())["receipt"]
        assert _verify(enrolled, kept_x) == "SIGNED_ORIGINAL"
        assert _verify(enrolled, y) == "SIGNED_ORIGINAL"
        later = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "b" / "later.jpg"))
        rc, out, err = enrolled("sign", str(later))  # later work is never refused
        assert rc == 0 and "logged at leaf 3" in out, err  # after the enrollment and 2
    finally:
        srv.stop()


def test_queue_survives_long_file_name(
    enrolled: Cli, server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_name = tmp_path / ("n" * 247 + ".jpg")  # 251 bytes: FILE.prov would be 256
    shutil.copy(SAMPLES / "rocket.jpg", long_name)
    near = tmp_path / ("m" * 246 + ".png")  # 250: FILE.prov fits, a longer temp name not
    shutil.copy(SAMPLES / "chelsea.png", near)
    server.stop()
    rc, out, err = enrolled("sign", str(long_name), str(near))
    assert rc == 4 and out.count("queued") == 2, err
    assert "too long" in err and "kept at" in err
    assert Path(f"{near}.prov").exists()
    home = DeviceHome(enrolled.home)
    assert [e.sequence for e in home.pending()] == [1, 2]
    assert all(len(e.file.name) < 32 for e in home.pending())

    srv = start_server(server.db)
    try:
        monkeypatch.setenv("PROV_SERVER", srv.address)
        rc, out, err = enrolled("device", "sync")
        assert rc == 0 and "submitted 2 of 2" in out, err
        assert home.pending() == []
        assert json.loads((home.sidecar_dir / "000000000001.prov").read_text())["receipt"]
        assert json.loads(Path(f"{near}.prov").read_text())["receipt"]
        assert _verify(enrolled, long_name) == "SIGNED_ORIGINAL"
        assert _verify(enrolled, near) == "SIGNED_ORIGINAL"
    finally:
        srv.stop()


def test_queue_sets_aside_refused_and_unreadable_entries(
    enrolled: Cli, server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _queue_three(enrolled, server, tmp_path)
    home = DeviceHome(enrolled.home)
    first = home.queue_dir / "000000000001.json"
    doc = json.loads(first.read_text())
    side = json.loads(doc["sidecar"])
    sig = bytearray(base64.b64decode(side["signatures"][0]["sig"]))
    sig[0] ^= 1  # a claim the server refuses for good (UNAUTHENTICATED)
    side["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    doc["sidecar"] = json.dumps(side)
    first.write_text(json.dumps(doc))
    (home.queue_dir / "000000000002.json").write_text("{not json")  # damaged on disk

    srv = start_server(server.db)
    try:
        monkeypatch.setenv("PROV_SERVER", srv.address)
        rc, out, err = enrolled("device", "sync")
        assert rc == 1 and "submitted 1 of 3" in out, err
        assert "UNAUTHENTICATED" in err and "cannot be read" in err
        shown = _show(enrolled)
        assert shown["queued"] == 0 and shown["queue"] == []
        reasons = {e["sequence"]: e["last_error"] for e in shown["set_aside"]}
        assert set(reasons) == {1, 2}
        assert "UNAUTHENTICATED" in reasons[1] and "rocket.jpg" in reasons[1]
        assert "cannot be read" in reasons[2]
        assert _verify(enrolled, files[2]) == "SIGNED_ORIGINAL"  # #3 went on
        rc, out, err = enrolled("device", "sync")  # nothing left to jam on
        assert rc == 0 and "nothing queued" in out, err
        rc, out, err = enrolled("device", "sync", "--retry-set-aside")
        assert rc == 1 and "2 set-aside claim(s) queued again" in out, err
        assert len(home.set_aside()) == 2 and home.pending() == []
        assert "{not json" in (home.set_aside_dir / "000000000002.json").read_text()
    finally:
        srv.stop()


def test_queue_records_why_an_entry_is_still_queued(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    server.stop()
    assert enrolled("sign", str(photo))[0] == 4
    rc, _, err = enrolled("device", "sync")
    assert rc == 1 and "stays queued" in err
    (entry,) = _show(enrolled)["queue"]
    assert entry["sequence"] == 1 and entry["file"] == str(photo)
    # one try by `sign`, one by `sync`
    assert entry["attempts"] == 2 and "cannot reach the server" in entry["last_error"]


def test_queue_retries_claims_signed_before_enrollment(cli: Cli, tmp_path: Path) -> None:
    """A transient refusal (NOT_FOUND: this device is not enrolled yet) keeps the claim
    queued, in order, with the reason; it is logged once the device is enrolled."""
    assert cli("device", "init")[0] == 0
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "early.jpg"))
    rc, out, err = cli("sign", str(photo))
    assert rc == 4 and "queued: this device is not enrolled with the server" in out, out
    # what happened and what to do, in words (before: "queued: the server deferred
    # early.jpg: device ... is not enrolled [NOT_FOUND]; run `prov device sync` later")
    advice = f"is not enrolled with the server at {cli.server}; its claims stay queued"
    enroll = f"`prov device enroll --server {cli.server} --token TOKEN`"
    assert advice in err and enroll in err and "`prov admin enroll-token`" in err, err
    assert "NOT_FOUND" not in out + err and "prov device sync` later" not in out
    (entry,) = _show(cli)["queue"]
    assert entry["attempts"] == 1 and "NOT_FOUND" in entry["last_error"]
    rc, _, err = cli("device", "sync")  # the same words from a sync
    assert rc == 1 and advice in err and enroll in err, err
    rc, token, err = cli("admin", "enroll-token")
    assert rc == 0, err
    assert cli("device", "enroll", "--token", token.strip())[0] == 0
    rc, out, err = cli("device", "sync")
    assert rc == 0 and "submitted 1 of 1" in out, err
    assert _show(cli)["queue"] == [] and _verify(cli, photo) == "SIGNED_ORIGINAL"


def test_a_device_enrolled_elsewhere_is_told_where(
    enrolled: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signing against a server the device never enrolled with names the server it did
    enroll with and how to submit there, instead of a NOT_FOUND. That server answers
    another log key than the one pinned at enrollment: no claim is sent to it."""
    other = start_server(tmp_path / "other.db")
    try:
        photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "elsewhere.jpg"))
        rc, out, err = enrolled("sign", str(photo), "--server", other.address)
        assert rc == 4 and "queued" in out, err
        flat = " ".join(err.split())
        assert f"this device enrolled with {enrolled.server}, whose log key" in flat, err
        assert f"the server at {other.address} answers another log key" in flat, err
        assert "no claim was sent to it" in flat, err
        assert f"`prov device sync --server {enrolled.server}`" in flat, err
    finally:
        other.stop()
    rc, out, err = enrolled("device", "sync")  # its own server logs it
    assert rc == 0 and "submitted 1 of 1" in out, err


def test_an_entry_named_with_other_scripts_digits_is_read_as_unnumbered(tmp_path: Path) -> None:
    """A queue file whose name `str.isdigit` takes but `int` refuses ("²") or reads as
    another script's digits ("٣" is 3 to `int`) jammed the queue listing with a
    ValueError, or took that sequence number; it is an unreadable entry (sequence 0)."""
    home = DeviceHome(tmp_path)
    home.queue_dir.mkdir()
    for name in ("².json", "٣.json"):
        (home.queue_dir / name).write_text("{not json")
    entries = home.pending()
    assert [(e.file.name, e.sequence) for e in entries] == [("².json", 0), ("٣.json", 0)]
    assert all("not valid JSON" in e.problem for e in entries)


def test_an_entry_that_cannot_be_read_is_set_aside_whole_and_never_jams(
    enrolled: Cli, server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue entry that could not be read at all (over the size limit, a folder, a
    FIFO) is moved to set_aside/ as it is: an oversized one kept its 417-byte note and
    lost its bytes, and a folder made every sync fail with "Is a directory" before the
    captures after it, for ever."""
    files = _queue_three(enrolled, server, tmp_path)
    home = DeviceHome(enrolled.home)
    big = home.queue_dir / "000000000001.json"
    damaged = b"\x00garbage" * (MAX_QUEUE_ENTRY_BYTES // 8 + 1)  # over the limit
    big.write_bytes(damaged)
    folder = home.queue_dir / "000000000002.json"
    folder.unlink()
    folder.mkdir()
    (folder / "inside").write_text("kept")
    os.mkfifo(home.queue_dir / "000000000000.json")

    srv = start_server(server.db)
    try:
        monkeypatch.setenv("PROV_SERVER", srv.address)
        rc, out, err = enrolled("device", "sync")
        assert rc == 1 and "submitted 1 of 4" in out, (out, err)
        assert err.count("cannot be read") == 3, err
        assert _verify(enrolled, files[2]) == "SIGNED_ORIGINAL"  # #3 went on
        assert home.pending() == []
        assert (home.set_aside_dir / big.name).read_bytes() == damaged
        assert (home.set_aside_dir / folder.name / "inside").read_text() == "kept"
        assert (home.set_aside_dir / "000000000000.json").is_fifo()
        shown = {e["sequence"]: e["last_error"] for e in _show(enrolled)["set_aside"]}
        assert "over the" in shown[1] and "folder" in shown[2] and "FIFO" in shown[0], shown
        rc, out, err = enrolled("device", "sync")
        assert rc == 0 and "nothing queued" in out, err
    finally:
        srv.stop()


def test_a_key_replaced_with_force_keeps_the_old_devices_claims_and_certificate(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov device init --force` numbers the new key's claims from 1 again: the old
    key's queued claim #1 was overwritten by the new key's #1 (a signed capture lost),
    and the old key's certificate stayed, taken for the new key's. The old device's
    files move to replaced/DEVICE_ID/, whence `prov device sync --home` submits them."""
    assert cli("admin", "ca", "init", "--dir", str(tmp_path / "ca"), "--no-passphrase")[0] == 0
    srv = start_server(tmp_path / "ca.db", "--ca", str(tmp_path / "ca"))
    monkeypatch.setenv("PROV_SERVER", srv.address)
    try:
        assert cli("device", "init")[0] == 0
        rc, token, err = cli("admin", "enroll-token")
        assert rc == 0, err
        assert cli("device", "enroll", "--token", token.strip())[0] == 0
        home = DeviceHome(cli.home)
        old_id = home.state().device_id
        assert home.cert_path.exists()
        first = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "first.jpg"))
        srv.stop()
        rc, out, err = cli("sign", str(first))
        assert rc == 4 and "queued" in out, err
        rc, out, said = cli("device", "init", "--force")
        assert rc == 0, said
        second = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "second.png"))
        rc, out, err = cli("sign", str(second))  # the new key's claim #1
        assert rc == 4 and "(#1), queued" in out, err
        queued = [
            e.sidecar.signed_claim
            for h in (home, *map(DeviceHome, cli.home.glob("replaced/*")))
            for e in h.pending()
            if e.sidecar
        ]
        old_claim = decode_sidecar(Path(f"{first}.prov").read_bytes()).signed_claim
        assert old_claim in queued  # (before: overwritten by the new key's #1)
        kept = cli.home / "replaced" / old_id
        assert f"kept in {kept}" in " ".join(said.split()) and "1 still queued" in said, said
        assert not home.cert_path.exists()  # the new key has no certificate yet
        assert [e.sidecar.signed_claim.key_id.hex() for e in home.pending() if e.sidecar] == [
            home.state().device_id
        ]

        again = start_server(srv.db, "--ca", str(tmp_path / "ca"))
        try:
            monkeypatch.setenv("PROV_SERVER", again.address)
            rc, out, err = cli("device", "sync", "--home", str(kept))
            assert rc == 0 and "submitted 1 of 1" in out, err
            assert _verify(cli, first) == "SIGNED_ORIGINAL"
        finally:
            again.stop()
    finally:
        srv.stop()


@pytest.mark.parametrize("device_id", ["../../escaped", "/ESCAPED", 5, ""])
def test_init_force_names_the_replaced_folder_only_by_a_real_device_id(
    tmp_path: Path, device_id: object
) -> None:
    """`prov device init --force` named the old device's folder replaced/DEVICE_ID after
    the state file's device_id as it stood: a damaged or edited one ("../../escaped",
    "/ESCAPED") moved the state, queue and certificate outside PROV_HOME, a number
    ended in a TypeError traceback, "" put them in replaced/ itself. Now an id that is not
    64 hexadecimal digits names the folder replaced/unknown-TIME, as a missing state
    does."""
    escaped = tmp_path / "ESCAPED"
    home = DeviceHome(tmp_path / "a" / "b" / "dev")
    home.init(b"pw")
    state = json.loads(home.state_path.read_text())
    state["device_id"] = device_id if device_id != "/ESCAPED" else str(escaped)
    home.state_path.write_text(json.dumps(state))
    (home.queue_dir / "000000000001.claim").write_bytes(b"a queued claim")
    _, old = home.init(b"pw", force=True)
    assert old is not None and old.parent == home.root / "replaced", old
    assert old.name.startswith("unknown-"), old
    assert (old / "queue" / "000000000001.claim").read_bytes() == b"a queued claim"
    assert not (tmp_path / "a" / "escaped").exists() and not escaped.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_init_force_steps_over_a_dangling_link_named_like_the_old_device(tmp_path: Path) -> None:
    """replaced/DEVICE_ID a dangling symbolic link: exists() said no, and the mkdir then
    failed (FileExistsError, the new key not made). Now the next name is taken, .2."""
    home = DeviceHome(tmp_path / "dev")
    state, _ = home.init(b"pw")
    (home.root / "replaced").mkdir()
    (home.root / "replaced" / state.device_id).symlink_to(tmp_path / "nowhere")
    _, old = home.init(b"pw", force=True)
    assert old == home.root / "replaced" / f"{state.device_id}.2"
    assert json.loads((old / home.state_path.name).read_text())["device_id"] == state.device_id
    assert not (tmp_path / "nowhere").exists()
