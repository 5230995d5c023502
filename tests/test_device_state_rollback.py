"""A device.json put back to an older copy (a backup copied over the device folder, which
leaves the newer queue entries there) numbered the next capture with a sequence a queued
claim already held, and wrote its queue entry over that claim's: a signed capture was
lost without a word, its sidecar naming a claim no longer kept anywhere. Now a new
claim is numbered past every claim the folder holds (queue, set_aside/, sidecars/), and
no entry is ever written over another. Real `prov serve`, the real CLI, keys and files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from clients.device import DeviceHome
from provenance.wire.sidecar import decode_sidecar
from tests.conftest import Cli, closed_port
from tests.photos import noise_photo


def test_a_state_put_back_never_overwrites_a_queued_claim(enrolled: Cli, tmp_path: Path) -> None:
    photos = [noise_photo(tmp_path, f"p{i}.png", i) for i in range(4)]
    offline = closed_port()
    rc, _, err = enrolled("sign", "--server", offline, str(photos[0]))  # queued as #1
    assert rc == 4, err
    old_state = (enrolled.home / "device.json").read_bytes()
    rc, _, err = enrolled("sign", "--server", offline, str(photos[1]), str(photos[2]))  # 2, 3
    assert rc == 4, err
    (enrolled.home / "device.json").write_bytes(old_state)  # a backup copied back over it

    rc, out, err = enrolled("sign", "--server", offline, str(photos[3]))
    assert rc == 4, (out, err)
    fourth = decode_sidecar(photos[3].with_name("p3.png.prov").read_bytes())
    assert fourth.claim.sequence == 4, (out, err)
    assert "behind the claims this device folder holds (up to #3" in err, err

    rc, out, err = enrolled("device", "sync")
    assert rc == 0, (out, err)
    assert "submitted 4 of 4" in out, (out, err)
    for photo in photos:  # each capture's own claim logged, none lost
        sidecar = decode_sidecar(photo.with_name(photo.name + ".prov").read_bytes())
        assert sidecar.receipt is not None, photo
    assert DeviceHome(enrolled.home).state().last_sequence == 4


def test_set_aside_and_queued_claims_of_one_number_are_both_kept(
    enrolled: Cli, tmp_path: Path
) -> None:
    photos = [noise_photo(tmp_path, f"p{i}.png", i) for i in range(3)]
    offline = closed_port()
    rc, _, err = enrolled("sign", "--server", offline, *map(str, photos))  # queued 1, 2, 3
    assert rc == 4, err
    home = DeviceHome(enrolled.home)
    queue = enrolled.home / "queue"
    aside = enrolled.home / "set_aside"
    aside.mkdir()
    # an entry set aside under the same name as one queued (a folder restored over); a
    # byte-for-byte copy of a claim still queued would be dropped as a leftover of a
    # killed command (tests/test_device_queue_leftovers.py), so another claim's entry
    shutil.move(queue / "000000000003.json", aside / "000000000001.json")

    rc, out, err = enrolled("device", "sync", "--retry-set-aside", "--server", offline)
    assert rc == 1, (out, err)
    kept = sorted(e.sidecar.claim.sequence for e in home.pending() if e.sidecar)
    assert kept == [1, 2, 3], (kept, out, err)
    assert (queue / "000000000001-2.json").exists()


def test_a_sequence_past_the_last_is_said_in_words(enrolled: Cli, tmp_path: Path) -> None:
    photo = noise_photo(tmp_path, "p.png", 0)
    state_path = enrolled.home / "device.json"
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps({**state, "last_sequence": 2**64 - 1}))
    rc, out, err = enrolled("sign", "--server", closed_port(), str(photo))
    assert rc == 1, (out, err)  # before: a traceback ending "ValueError: Value out of range"
    assert "used its last sequence number (18446744073709551615)" in err, err
    assert "Traceback" not in err and "ValueError" not in err, err

    # an entry named for the last number a claim can have, unreadable, reserves it when
    # the device's numbering is near (far from it, it is set aside instead:
    # tests/test_device_queue_far_names.py)
    state_path.write_text(json.dumps({**state, "last_sequence": 2**64 - 2}))
    queue = enrolled.home / "queue"
    queue.mkdir(exist_ok=True)
    (queue / f"{2**64 - 1}.json").write_bytes(b"")
    rc, out, err = enrolled("sign", "--server", closed_port(), str(photo))
    assert rc == 1 and "used its last sequence number" in err, (out, err)
    state_path.write_text(json.dumps(state))
    (queue / f"{2**64 - 1}.json").rename(queue / f"{2**64}.json")  # no claim's number
    rc, out, err = enrolled("sign", "--server", closed_port(), str(photo))
    assert rc == 4 and "signed (#1)" in out, (out, err)
