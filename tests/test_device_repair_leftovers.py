"""What `prov device repair` leaves behind, and what it says, once the device changes:
`prov device init --force` moved the old device's files to replaced/ID/ but left the
``device.json.damaged-*`` copies a repair had set aside, so a later repair with no
device.json read the OLD device's server and sequence from them; and a repair of a
device never enrolled (``--server ''``) said that `prov device sync` submits its queued
claims, though there is no server to submit them to. Real keys, a real `prov serve`,
the real CLI."""

from __future__ import annotations

from pathlib import Path

from clients.device import DeviceHome
from tests.conftest import Cli
from tests.photos import noise_photo


def test_init_force_moves_the_copies_a_repair_set_aside(enrolled: Cli) -> None:
    state_path = enrolled.home / "device.json"
    old_id = DeviceHome(enrolled.home).state().device_id
    state_path.write_bytes(b"{")
    rc, out, err = enrolled("device", "repair", "--server", enrolled.server)
    assert rc == 0, (out, err)
    (copy,) = enrolled.home.glob("device.json.damaged-*")

    rc, out, err = enrolled("device", "init", "--force")
    assert rc == 0, (out, err)
    assert not any(enrolled.home.glob("device.json.damaged-*")), sorted(enrolled.home.iterdir())
    assert (enrolled.home / "replaced" / old_id / copy.name).read_bytes() == b"{"

    state_path.unlink()  # the new device's state lost: nothing of the old one is read
    rc, out, err = enrolled("device", "repair")
    assert rc == 2 and "could not be recovered" in " ".join(err.split()), (out, err)


def test_init_force_with_only_copies_left_moves_them(enrolled: Cli) -> None:
    """A repair killed after setting device.json aside, then `init --force`: no state,
    the copies are the old device's all the same."""
    state_path = enrolled.home / "device.json"
    copy = enrolled.home / "device.json.damaged-20261205T000000Z"
    copy.write_bytes(state_path.read_bytes())
    state_path.unlink()
    rc, out, err = enrolled("device", "init", "--force")
    assert rc == 0, (out, err)
    assert not copy.exists()
    (moved,) = (enrolled.home / "replaced").glob("*/" + copy.name)
    assert moved.read_bytes() != b""


def test_repair_of_a_device_never_enrolled_does_not_promise_a_sync(
    cli: Cli, tmp_path: Path
) -> None:
    rc, out, err = cli("device", "init")
    assert rc == 0, err
    rc, out, err = cli("sign", str(noise_photo(tmp_path, "p.png", 0)))  # not enrolled: queued
    assert rc == 4 and "queued" in out, (out, err)
    (cli.home / "device.json").write_bytes(b"{")
    rc, out, err = cli("device", "repair", "--server", "")
    said = " ".join(out.split())
    assert rc == 0 and "server (none)" in said, (out, err)
    assert "`prov device sync` submits the 1 queued" not in said, said
    assert "1 queued claim(s) stay queued" in said and "enroll it first" in said, said
