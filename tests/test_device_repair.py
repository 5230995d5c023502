"""A damaged ``device.json`` (truncated, not JSON, wrong types) jammed the queue: `prov
device sync` refused with "device.json is damaged" although every queued claim is signed
and complete, and nothing said what to do. Now the error names `prov device repair`,
which rebuilds the state from what is still trustworthy (the key file, the claims the
folder holds, the log's record of the key) and keeps the damaged file aside; the queue
is then logged. Real keys, a real `prov serve`, the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clients.device import DeviceHome
from tests.conftest import Cli, closed_port
from tests.photos import noise_photo, sidecar_sequence


def test_a_truncated_state_is_repaired_and_the_queue_logged(enrolled: Cli, tmp_path: Path) -> None:
    photos = [noise_photo(tmp_path, f"p{i}.png", i) for i in range(4)]
    rc, out, err = enrolled("sign", str(photos[0]))  # logged as #1
    assert rc == 0 and "logged" in out, err
    offline = closed_port()
    rc, out, err = enrolled("sign", "--server", offline, str(photos[1]), str(photos[2]))
    assert rc == 4 and out.count("queued") == 2, (out, err)  # #2 and #3
    state_path = enrolled.home / "device.json"
    good = json.loads(state_path.read_text())
    damaged = state_path.read_bytes()[:40]  # a crash of the file system mid-write
    state_path.write_bytes(damaged)

    rc, out, err = enrolled("device", "sync")
    assert rc == 1, (out, err)
    assert f"{state_path} is damaged" in err and "`prov device repair`" in err, err
    assert "Traceback" not in err

    rc, out, err = enrolled("device", "repair")  # the server address is not in what is left
    assert rc == 2, (out, err)
    assert "--server" in err and "could not be recovered" in " ".join(err.split()), err
    assert state_path.read_bytes() == damaged  # nothing changed

    rc, out, err = enrolled("device", "repair", "--server", enrolled.server)
    assert rc == 0, (out, err)
    assert "last sequence 3" in out and "never reused" in out, out
    kept = sorted(enrolled.home.glob("device.json.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged, kept
    repaired = json.loads(state_path.read_text())
    # the pinned log key was in the bytes lost: the next sync pins it again
    pinned = good.pop("log_key")
    assert repaired == {**good, "server": enrolled.server}, (repaired, good)

    rc, out, err = enrolled("device", "sync")
    assert rc == 0 and "submitted 2 of 2" in out, (out, err)
    assert "pinned the log key" in " ".join(err.split()), err
    assert json.loads(state_path.read_text())["log_key"] == pinned
    rc, out, err = enrolled("sign", str(photos[3]))
    assert rc == 0 and "signed (#4) and logged" in out, (out, err)
    assert [sidecar_sequence(p) for p in photos] == [1, 2, 3, 4]


def test_the_server_and_the_logged_sequence_are_recovered(enrolled: Cli, tmp_path: Path) -> None:
    """Nothing queued, the sidecars beside their files (not in the device folder): the
    last sequence comes from the log's record of the key, the server from what is left
    of the damaged file."""
    photos = [noise_photo(tmp_path, f"p{i}.png", i) for i in range(3)]
    rc, out, err = enrolled("sign", str(photos[0]), str(photos[1]))  # logged #1, #2
    assert rc == 0 and out.count("and logged at leaf") == 2, (out, err)
    state_path = enrolled.home / "device.json"
    good = json.loads(state_path.read_text())
    state_path.write_text(json.dumps({**good, "last_sequence": "2"}))  # a wrong type
    rc, out, err = enrolled("sign", str(photos[2]))
    assert rc == 1 and "`prov device repair`" in err, (out, err)

    rc, out, err = enrolled("device", "repair")
    assert rc == 0, (out, err)
    assert f"server {enrolled.server}" in out and "last sequence 2" in out, out
    assert "the log" in out, out
    assert json.loads(state_path.read_text()) == good

    rc, out, err = enrolled("sign", str(photos[2]))
    assert rc == 0 and "signed (#3) and logged" in out, (out, err)


def test_a_state_that_is_not_json_is_repaired_offline(enrolled: Cli, tmp_path: Path) -> None:
    """Zeros in place of the file (what some file systems leave after a crash), the
    server not running: the sequence from the queue, said as not checked with the log."""
    photos = [noise_photo(tmp_path, f"p{i}.png", i) for i in range(2)]
    offline = closed_port()
    rc, out, err = enrolled("sign", "--server", offline, *map(str, photos))  # queued 1, 2
    assert rc == 4, (out, err)
    state_path = enrolled.home / "device.json"
    size = len(state_path.read_bytes())
    state_path.write_bytes(bytes(size))

    rc, out, err = enrolled("device", "repair", "--server", offline)
    assert rc == 0, (out, err)
    assert "last sequence 2" in out and "could not be asked" in " ".join(out.split()), out
    state = DeviceHome(enrolled.home).state()
    assert state.last_sequence == 2 and state.server == offline
    (kept,) = enrolled.home.glob("device.json.damaged-*")
    assert kept.read_bytes() == bytes(size)


def test_repair_of_a_sound_state_changes_nothing(enrolled: Cli) -> None:
    state_path = enrolled.home / "device.json"
    before = state_path.read_bytes()
    rc, out, err = enrolled("device", "repair")
    assert rc == 0 and "not damaged" in out and "nothing to repair" in out, (out, err)
    assert state_path.read_bytes() == before
    assert not any(enrolled.home.glob("device.json.damaged-*"))


def test_a_missing_state_beside_a_key_names_repair(enrolled: Cli, tmp_path: Path) -> None:
    state_path = enrolled.home / "device.json"
    good = json.loads(state_path.read_text())
    state_path.unlink()
    rc, out, err = enrolled("device", "show")
    assert rc == 1 and "`prov device repair`" in err, (out, err)
    rc, out, err = enrolled("device", "repair", "--server", enrolled.server)
    assert rc == 0, (out, err)
    good.pop("log_key")  # nothing left to read it from: the next sync pins it again
    assert json.loads(state_path.read_text()) == good


def test_repair_with_a_wrong_passphrase_changes_nothing(
    enrolled: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_path = enrolled.home / "device.json"
    state_path.write_bytes(b"{")
    monkeypatch.setenv("PROV_PASSPHRASE", "not the passphrase")
    rc, out, err = enrolled("device", "repair", "--server", enrolled.server)
    assert rc == 1 and "Traceback" not in err, (out, err)
    assert state_path.read_bytes() == b"{"
    assert not any(enrolled.home.glob("device.json.damaged-*"))


def test_a_sound_state_of_another_key_is_not_guessed_at(enrolled: Cli, tmp_path: Path) -> None:
    """The key file put back from another device: the state reads, but is not this
    key's; repair says so and changes nothing."""
    other = tmp_path / "other"
    rc, out, err = enrolled("device", "init", "--home", str(other))
    assert rc == 0, err
    state_path = enrolled.home / "device.json"
    before = state_path.read_bytes()
    (enrolled.home / "device_key.pem").write_bytes((other / "device_key.pem").read_bytes())
    rc, out, err = enrolled("device", "repair")
    assert rc == 1 and "repair does not choose between them" in " ".join(err.split()), (
        out,
        err,
    )
    assert state_path.read_bytes() == before
    assert not any(enrolled.home.glob("device.json.damaged-*"))


def test_a_repair_that_recovers_no_log_key_says_so_and_the_pin_after_it_says_why(
    enrolled: Cli, tmp_path: Path
) -> None:
    """A device.json of garbage holds no pinned log key to recover: the repair says the
    next sign or sync pins the key the server answers, and that sign's note says the
    pinned key was lost in the repair's terms. Before, the repair said nothing of it and
    the note read "this device enrolled before log keys were pinned", false for a device
    that had pinned one (a newcomer's finding)."""
    state_path = enrolled.home / "device.json"
    state_path.write_text("garbage{\n")
    rc, out, err = enrolled("device", "repair", "--server", enrolled.server)
    flat = " ".join(out.split())
    assert rc == 0, (out, err)
    assert "no pinned log key could be recovered" in flat, flat
    assert "the next `prov sign` or `prov device sync` pins the one" in flat, flat
    assert DeviceHome(enrolled.home).state().log_key == ""
    photo = noise_photo(tmp_path, "p.png", 7)
    rc, out, err = enrolled("sign", str(photo))
    flat = " ".join((out + err).split())
    assert rc == 0 and "pinned the log key" in flat, flat
    assert "enrolled before log keys were pinned" not in flat, flat
    assert "this device had no log key pinned" in flat, flat
